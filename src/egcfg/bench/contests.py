"""CodeContests problems (stdin/stdout, Codeforces): ``codecontests``.

Reads the file format of ``../shared/data/codecontests_train/`` as it is (``codecontests_train250.jsonl.gz``:
250 problems of CodeContests' *train* split, 10 tests each, public tests first, a Python 3
reference solution and its verdict on every test; see that folder's README). Not the 165-problem
test split: its numbers are not comparable with the paper's CodeContests column.

* **Visible** tests are the public ones, the statement's examples: the first k tests, k the number
  of "Input" blocks under the statement's "Example(s)" heading (their inputs equal those examples
  in all 250 problems). The statement is shown without that section, since the prompt shows the
  visible tests (inputs and expected outputs as the tests hold them) right after it.
* **Hidden** tests are the rest, the private and generated tests; each runs alone in the sandbox
  with stdin a regular file, for at most 10 s (the limit the data's own verification used).
* **Judging** (``Task.checker``, execution/checks.py): token by token, as Codeforces' default
  checker; problems whose statement allows an error ("absolute or relative error does not exceed
  10^{-k}", "... inaccuracy ...", "differs from the correct one by at most 10^{-k}") are judged as
  testlib's real-number checkers do: tokens equal, or numbers within absolute or relative error
  10^-k (k from the statement). One more (2_C, "five digits after the decimal point") states no
  tolerance but its reference matched the tests only within 10^-6 in the data's verification: 10^-6.
  A program may end with exit(0) / sys.exit() (a judge's exit code 0).
* **Excluded**: problems whose reference solution fails one of its own tests in the data's
  verification (``reference_passes_all`` false: answers a strict comparison cannot judge, interactive
  problems, tests the reference cannot read, too slow in Python), and problems flagged
  ``multiple_answers_or_float_suspected`` that state no error tolerance: "print any of them"
  answers need a problem-specific checker, and CodeContests ships none. The flag is a regular
  expression over the statement and also catches some one-answer problems (counting "any such
  triples"); they are excluded too, since a wrongly judged task costs more than a missing one.

On the 250-problem file: **168 problems kept** (145 judged by tokens, 23 with a float tolerance:
15 at 10^-6, 6 at 10^-9, 2 at 10^-4), **82 excluded** (41 whose reference fails its tests, 41
flagged multiple-answer); ``classify`` gives each problem's verdict and reason, and each task's
``metadata`` its checker. In egcfg's sandbox the reference solutions pass the visible and hidden
tests of 167 of the 168 (1278_F's takes 5-8 s per test here and passes alone, but goes over 10 s
when two tests run at once on 2 cores).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

from ..errors import EgcfgError
from ..task import IOTest, Task
from .datasets import _locate

log = logging.getLogger(__name__)

FILES = ("codecontests_train250.jsonl.gz", "codecontests_train250.jsonl", "codecontests_train_graph300.jsonl.gz",
         "codecontests_train/codecontests_train250.jsonl.gz")
TEST_TIMEOUT = 10.0
DEFAULT_EPS = 1e-6
_TOLERANCE = re.compile(r"(absolute|relative)\s+(or\s+(absolute|relative)\s+)?(error|inaccuracy)"
                        r"|differs? from the correct (one|answer|value) by at most", re.I)
# "10^{-6}", "10 - 6" (a superscript flattened), "10^-6", "1e-6", within the sentence that states it.
_EXPONENT = re.compile(r"10\s*\^?\s*\{?\s*-\s*(\d{1,2})\s*\}?|1e-(\d{1,2})")
_EXAMPLES = re.compile(r"^Examples?[ \t]*$", re.M)
_BLOCK = re.compile(r"^(Input|Output|Note)[ \t]*$", re.M)


def _norm(text: str) -> str:
    return " ".join(text.split())


def split_statement(description: str) -> tuple[str, list[str]]:
    """(statement without its examples section, the examples' inputs)."""
    m = _EXAMPLES.search(description)
    if not m:
        return description.strip(), []
    rest = description[m.end():]
    parts = _BLOCK.split(rest)  # ['', 'Input', text, 'Output', text, ..., 'Note', text]
    inputs = [parts[i + 1] for i in range(1, len(parts) - 1, 2) if parts[i] == "Input"]
    note = next((i for i in range(1, len(parts) - 1, 2) if parts[i] == "Note"), None)
    statement = description[: m.start()].rstrip()
    if note is not None:
        statement += "\n\nNote\n\n" + parts[note + 1].strip()
    return statement.strip(), inputs


def tolerance(description: str) -> float | None:
    """The error a statement allows for real-number answers, or None when it names none."""
    m = _TOLERANCE.search(description)
    if not m:
        return None
    e = _EXPONENT.search(description[m.end(): m.end() + 120])
    return 10.0 ** -int(e.group(1) or e.group(2)) if e else DEFAULT_EPS


def classify(row: dict) -> dict:
    """{"kept": bool, "checker": str | None, "reason": str} for one problem of the file."""
    if not row.get("reference_passes_all", False):
        bad = sorted({v for v in row.get("reference_verdicts", []) if v in ("WA", "RE", "TLE")})
        return {"kept": False, "checker": None,
                "reason": f"reference solution fails its tests ({', '.join(bad) or 'verdicts missing'})"}
    eps = tolerance(row["description"])
    if eps is not None:
        return {"kept": True, "checker": f"float:{eps:g}", "reason": f"the statement allows an error of {eps:g}"}
    if "float" in row.get("reference_verdicts", []):
        # The data's verification accepted the reference only within 1e-6: real-number answers.
        return {"kept": True, "checker": f"float:{DEFAULT_EPS:g}", "reason": "real-number answers (the reference "
                f"matches within {DEFAULT_EPS:g}), no tolerance stated"}
    if row.get("multiple_answers_or_float_suspected"):
        return {"kept": False, "checker": None, "reason": "flagged multiple-answer, no error tolerance stated"}
    return {"kept": True, "checker": "tokens", "reason": ""}


def _task(row: dict, checker: str) -> Task:
    tests = row["tests"]
    statement, examples = split_statement(row["description"])
    k = len(examples)
    if not k or sorted(_norm(t["input"]) for t in tests[:k]) != sorted(_norm(x) for x in examples):
        # (never on the shared file) the leading tests the data marks as the statement's examples
        k = next((i for i, t in enumerate(tests) if not t.get("in_statement_examples")), len(tests)) or 1
    # Inputs were stripped when the tests were written: a judge feeds them with their last newline.
    io = [IOTest(t["input"] + "\n", t["output"] + "\n") for t in tests]
    return Task(
        task_id=row["task_id"], prompt=statement, io_tests=tuple(io[:k]), hidden_io_tests=tuple(io[k:]),
        checker=checker, hidden_timeout=TEST_TIMEOUT,
        metadata={"benchmark": "codecontests", "name": row.get("name", ""), "checker": checker,
                  "difficulty": row.get("cf_difficulty_code"), "tags": row.get("tags", [])},
    ).validate()


def read_rows(data) -> tuple[Path, list[dict]]:
    if data is None:
        raise EgcfgError("codecontests: give --data with codecontests_train250.jsonl.gz or its folder")
    path = _locate(data, FILES)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise EgcfgError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise EgcfgError(f"{path}: not JSON lines ({exc.msg})") from None
    if not rows:
        raise EgcfgError(f"{path}: no problems in the file")
    return path, rows


def load_codecontests(data=None, include_excluded: bool = False) -> list[Task]:
    """The kept problems as stdin/stdout tasks, in file order (``include_excluded``: all of them,
    the excluded judged by tokens; for studying the data, not for scoring)."""
    path, rows = read_rows(data)
    tasks, excluded = [], {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("tests"), list) or not row["tests"]:
            raise EgcfgError(f"{path}: not the codecontests_train format (a problem without 'tests')")
        verdict = classify(row)
        if not verdict["kept"]:
            excluded[verdict["reason"].split(" (")[0]] = excluded.get(verdict["reason"].split(" (")[0], 0) + 1
            if not include_excluded:
                continue
        task = _task(row, verdict["checker"] or "tokens")
        task.metadata["excluded"] = "" if verdict["kept"] else verdict["reason"]
        tasks.append(task)
    if excluded and not include_excluded:
        floats = sum(t.checker.startswith("float:") for t in tasks)
        log.warning("codecontests: %d of %d problems kept (%d judged with a float tolerance); excluded: %s",
                    len(tasks), len(rows), floats, "; ".join(f"{n} {why}" for why, n in excluded.items()))
    return tasks
