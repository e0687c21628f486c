"""HumanEval+ and MBPP+ (EvalPlus): ``humaneval-plus`` and ``mbpp-plus``.

The release files are read by evalplus itself (``get_human_eval_plus`` / ``get_mbpp_plus`` through
their override paths, so it never downloads; MBPP+'s inputs deserialized by its
``mbpp_deserialize_inputs``: tuples, sets and complex numbers that JSON cannot hold). Scoring stays
egcfg's: evalplus's own executor is not a sandbox, so each task's hidden test is a program,
``evalplus_harness.py`` plus the task's inputs, that runs after the final program in egcfg's
sandbox, computes the expected outputs there with the canonical solution, and judges with
evalplus's rules (tolerance, special oracles, per-input time limits; that module says how it
matches evalplus 0.3.1 and where it departs).

| benchmark      | visible (shown in the prompt, run while generating)  | hidden (scoring)                          |
|----------------|------------------------------------------------------|-------------------------------------------|
| humaneval-plus | docstring examples, as asserts (as for `humaneval`)  | base + plus inputs vs the canonical solution's outputs |
| mbpp-plus      | the task's base asserts (its ``assertion`` field)    | base + plus inputs vs the canonical solution's outputs |

evalplus is installed without its declared dependencies (``scripts/setup.sh``: ``pip install
--no-deps``): they serve its code-generation front ends (transformers, openai, anthropic,
google-generativeai, Hugging Face datasets, tree-sitter, ...). The modules used here need only
appdirs, tempdir and wget (imported at the top of ``evalplus/data/utils.py``, never called), which
egcfg depends on. ``evalplus/data/__init__.py`` imports ``datasets`` for EvalPerf, which egcfg does
not use, so that package's submodules are loaded without running it.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import os
import pickle
import sys
import types
import zlib
from functools import lru_cache
from pathlib import Path

from ..errors import EgcfgError
from ..task import Task
from .datasets import _humaneval_task, _locate

EVALPLUS_VERSION = "0.3.1"  # the version whose checker evalplus_harness.py mirrors
INSTALL = f"pip install --no-deps evalplus=={EVALPLUS_VERSION} appdirs tempdir wget"
HUMANEVAL_FILES = ("HumanEvalPlus-v0.1.10.jsonl.gz", "HumanEvalPlus.jsonl.gz", "HumanEvalPlus-v0.1.10.jsonl",
                   "HumanEvalPlus.jsonl", "evalplus/HumanEvalPlus-v0.1.10.jsonl.gz")
MBPP_FILES = ("MbppPlus-v0.2.0.jsonl.gz", "MbppPlus.jsonl.gz", "MbppPlus-v0.2.0.jsonl", "MbppPlus.jsonl",
              "evalplus/MbppPlus-v0.2.0.jsonl.gz")
# A phase's calls together: evalplus's untrusted_check gives its process min(60, sum of limits) + 1
# seconds (EVALPLUS_TIMEOUT_PER_TASK's default 60) and joins it one second later.
PHASE_LIMIT = 60.0 + 2.0
# The sandbox run's own limit, a backstop: both phases (2 x 62 s of the program's calls at most,
# enforced by the harness) plus the canonical solution's runs (MBPP+'s slowest task takes ~18 s).
HIDDEN_TIMEOUT = 200.0
# evalplus's reliability_guard: 4 GB of address space (EVALPLUS_MAX_MEMORY_BYTES), at most the
# machine's memory. Mbpp/255's largest input makes a 1.1 GB list, and the program's answer is a second.
HIDDEN_MEMORY_MB = 4096
HARNESS = Path(__file__).with_name("evalplus_harness.py")


@lru_cache(maxsize=1)
def _evalplus():
    """(evalplus.data.humaneval, evalplus.data.mbpp, oracle source, min time limit, limit factor)."""
    spec = importlib.util.find_spec("evalplus")
    if spec is None or not spec.submodule_search_locations:
        raise EgcfgError(f"humaneval-plus and mbpp-plus need the evalplus package: {INSTALL} "
                         "(scripts/setup.sh installs it)")
    version = importlib.metadata.version("evalplus")
    if version != EVALPLUS_VERSION:
        raise EgcfgError(f"evalplus {version} is installed; egcfg's hidden-test harness mirrors evalplus "
                         f"{EVALPLUS_VERSION}'s checker: {INSTALL}")
    root = Path(list(spec.submodule_search_locations)[0])
    if "evalplus.data" not in sys.modules:
        # The package without its __init__ (which imports Hugging Face datasets, for EvalPerf only).
        package = types.ModuleType("evalplus.data")
        package.__path__ = [str(root / "data")]
        package.__package__ = "evalplus.data"
        sys.modules["evalplus.data"] = package
    try:
        humaneval = importlib.import_module("evalplus.data.humaneval")
        mbpp = importlib.import_module("evalplus.data.mbpp")
        config = importlib.import_module("evalplus.config")
    except ImportError as exc:
        raise EgcfgError(f"evalplus's data modules cannot be imported ({exc}): {INSTALL}") from None
    oracle = (root / "eval" / "_special_oracle.py").read_text(encoding="utf-8")
    return humaneval, mbpp, oracle, float(config.DEFAULT_MIN_TIME_LIMIT), float(config.DEFAULT_GT_TIME_LIMIT_FACTOR)


@lru_cache(maxsize=1)
def _harness() -> str:
    return HARNESS.read_text(encoding="utf-8")


def _memory_mb() -> int:
    """evalplus's limit: 4 GB, or the machine's memory where that is less."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError):
        return HIDDEN_MEMORY_MB
    return max(1024, min(HIDDEN_MEMORY_MB, total))


def _read(loader, module, attr: str, path: Path, name: str, prefix: str) -> dict:
    """Problems read by evalplus from ``path`` through its override path (so it never downloads)."""
    old = getattr(module, attr)
    setattr(module, attr, str(path))
    try:
        problems = loader(err_incomplete=True)
        other = next((k for k in problems if not str(k).startswith(prefix)), None)
        if other is not None or not problems:
            raise EgcfgError(f"{path}: not {name} (task id {other!r}; {name}'s are {prefix}N)")
        return problems
    except AssertionError as exc:  # completeness_check: e.g. an OriginFmt file, which has no inputs
        raise EgcfgError(f"{path}: not an EvalPlus {name} file in its main format ({exc})") from None
    except (OSError, EOFError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise EgcfgError(f"{path}: cannot be read as {name} ({type(exc).__name__}: {str(exc)[:120]})") from None
    finally:
        setattr(module, attr, old)


def hidden_program(dataset: str, problem: dict, oracle: str, min_time_limit: float, factor: float) -> str:
    """The hidden test of one task: the harness, then its call with the task's spec (see the harness)."""
    plus = problem["plus_input"]
    plus = list(plus) if isinstance(plus, list) else []  # (MbppPlus v0.2.0's Mbpp/793 holds {} there)
    spec = {
        "dataset": dataset, "task_id": problem["task_id"], "entry_point": problem["entry_point"],
        "reference": problem["prompt"] + problem["canonical_solution"], "oracle": oracle,
        "atol": problem["atol"], "phases": [("base", list(problem["base_input"])), ("plus", plus)],
        "min_time_limit": min_time_limit, "time_limit_factor": factor, "phase_limit": PHASE_LIMIT,
    }
    blob = base64.b64encode(zlib.compress(pickle.dumps(spec, protocol=4), 6)).decode("ascii")
    return (f"{_harness()}\n\n# {problem['task_id']}: {len(spec['phases'][0][1])} base + {len(plus)} plus inputs, "
            f"atol {problem['atol']}; expected outputs from the canonical solution, evalplus {EVALPLUS_VERSION}'s rules\n"
            f"_egcfg_evalplus_check({blob!r})\n")


def _plus_fields(task: Task, benchmark: str, path: Path, problem: dict, hidden: str) -> Task:
    plus = problem["plus_input"] if isinstance(problem["plus_input"], list) else []
    return dataclasses.replace(
        task, hidden_tests=(hidden,), hidden_timeout=HIDDEN_TIMEOUT, hidden_memory_mb=_memory_mb(),
        metadata={**task.metadata, "benchmark": benchmark, "data_file": path.name, "atol": problem["atol"],
                  "base_inputs": len(problem["base_input"]), "plus_inputs": len(plus)},
    ).validate()


def load_humaneval_plus(data=None) -> list[Task]:
    if data is None:
        raise EgcfgError("humaneval-plus: give --data with HumanEvalPlus-v0.1.10.jsonl.gz or its folder")
    path = _locate(data, HUMANEVAL_FILES)
    humaneval, _, oracle, min_limit, factor = _evalplus()
    problems = _read(humaneval.get_human_eval_plus, humaneval, "HUMANEVAL_OVERRIDE_PATH", path, "HumanEval+", "HumanEval/")
    tasks = []
    for problem in problems.values():
        task = _humaneval_task(problem, ())
        tasks.append(_plus_fields(task, "humaneval-plus", path, problem,
                                  hidden_program("humaneval", problem, oracle, min_limit, factor)))
    return tasks


def mbpp_statement(prompt: str) -> str:
    """MBPP+'s prompt is a docstring with the statement and one of its asserts; the statement alone
    (the asserts are the visible tests, shown after it)."""
    text = prompt.strip().strip('"').strip()
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("assert ")).strip()


def mbpp_asserts(assertion: str) -> tuple[str, tuple[str, ...]]:
    """(test setup, asserts) of MBPP+'s ``assertion`` field: its imports are the setup. Mbpp/120's
    asserts call math.isclose without importing math (evalplus never runs them), so a test that
    names ``math.`` gets the import."""
    tree = ast.parse(assertion)
    setup = [ast.get_source_segment(assertion, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    tests = tuple(ast.get_source_segment(assertion, n) for n in tree.body if isinstance(n, ast.Assert))
    if any("math." in t for t in tests) and not any(s.split() == ["import", "math"] for s in setup):
        setup.append("import math")
    return "\n".join(setup), tests


def load_mbpp_plus(data=None) -> list[Task]:
    if data is None:
        raise EgcfgError("mbpp-plus: give --data with MbppPlus-v0.2.0.jsonl.gz or its folder")
    path = _locate(data, MBPP_FILES)
    _, mbpp, oracle, min_limit, factor = _evalplus()
    problems = _read(mbpp.get_mbpp_plus, mbpp, "MBPP_OVERRIDE_PATH", path, "MBPP+", "Mbpp/")
    tasks = []
    for task_id, problem in sorted(problems.items(), key=lambda kv: int(kv[0].split("/")[-1])):
        setup, tests = mbpp_asserts(problem["assertion"])
        task = Task(task_id=task_id, prompt=mbpp_statement(problem["prompt"]), entry_point=problem["entry_point"],
                    tests=tests, test_setup=setup, metadata={"number": int(task_id.split("/")[-1])})
        tasks.append(_plus_fields(task, "mbpp-plus", path, problem,
                                  hidden_program("mbpp", problem, oracle, min_limit, factor)))
    return tasks
