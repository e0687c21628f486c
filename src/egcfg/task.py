"""Task: what the engine is asked to solve, and how it is read from JSON.

A task is either function-style (``entry_point`` + visible ``tests``, each an ``assert`` statement)
or stdin/stdout-style (``io_tests``, each ``{"input": ..., "output": ...}``). Hidden tests are kept
on the object for scoring but the engine never executes them.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import EgcfgError


@dataclass(frozen=True)
class IOTest:
    input: str
    output: str


@dataclass(frozen=True)
class Task:
    task_id: str
    prompt: str
    entry_point: str | None = None
    tests: tuple[str, ...] = ()
    hidden_tests: tuple[str, ...] = ()
    io_tests: tuple[IOTest, ...] = ()
    hidden_io_tests: tuple[IOTest, ...] = ()
    # Code the tests need before they run (MBPP's test_setup_code); executed after the code, before the tests.
    test_setup: str = ""
    # Code the prompt defines that the solution may rely on (HumanEval's imports and helper functions);
    # executed, untraced, before every candidate and final program.
    prelude: str = ""
    # Code the answer starts with (HumanEval: the signature and docstring): the model continues it.
    answer_start: str = ""
    # How a stdin/stdout program's output is judged (execution/checks.py, CHECKERS): "lines" (line by
    # line, trailing whitespace ignored), "tokens" (whitespace-separated tokens, as Codeforces' default
    # checker) or "float:EPS" (tokens; numbers within absolute or relative error EPS, as testlib's).
    checker: str = "lines"
    # The hidden-test run's wall-clock limit in seconds and address space in MB (None: the defaults,
    # checks.HIDDEN_TIMEOUT and the sandbox's); EvalPlus harnesses time each input themselves.
    hidden_timeout: float | None = None
    hidden_memory_mb: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_io(self) -> bool:
        """stdin/stdout task: programs read input and print the answer."""
        return bool(self.io_tests) and not self.tests

    def validate(self) -> "Task":
        """Raise EgcfgError naming the field and the problem; return self when the task is usable."""
        where = f"task {self.task_id!r}"
        # Types first: a Task built in Python (not through task_from_dict) may hold anything.
        for name in ("task_id", "prompt", "test_setup", "prelude", "answer_start"):
            if not isinstance(getattr(self, name), str):
                raise EgcfgError(f"{where}: field {name!r} must be a string, not {type(getattr(self, name)).__name__}")
        if self.entry_point is not None and not isinstance(self.entry_point, str):
            raise EgcfgError(f"{where}: field 'entry_point' must be a string")
        for name in ("tests", "hidden_tests"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(t, str) for t in value):
                raise EgcfgError(f"{where}: field {name!r} must be a tuple of strings (asserts), not {value!r:.80}")
        for name in ("io_tests", "hidden_io_tests"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(t, IOTest) for t in value):
                raise EgcfgError(f"{where}: field {name!r} must be a tuple of IOTest")
        if not self.prompt.strip():
            raise EgcfgError(f"{where}: field 'prompt' is empty")
        if not self.tests and not self.io_tests and not (self.entry_point and self.hidden_tests):
            # (benchmark tasks whose prompt shows no example may have hidden tests only)
            raise EgcfgError(f"{where}: needs visible tests: field 'tests' (asserts) or 'io_tests'")
        if self.tests or self.hidden_tests:
            if self.entry_point is None:
                raise EgcfgError(f"{where}: missing field 'entry_point' (the function the tests call)")
            if not self.entry_point.isidentifier():
                raise EgcfgError(f"{where}: field 'entry_point' must be a Python function name, got {self.entry_point!r}")
            for i, test in enumerate(self.tests + self.hidden_tests):
                name = "tests" if i < len(self.tests) else "hidden_tests"
                try:
                    ast.parse(test)
                except SyntaxError as exc:
                    raise EgcfgError(f"{where}: field {name!r} has a test that is not valid Python ({exc.msg}, line {exc.lineno}): {test[:80]!r}") from None
        if not _valid_checker(self.checker):
            raise EgcfgError(f"{where}: field 'checker' must be 'lines', 'tokens' or 'float:EPS' (EPS > 0), "
                             f"not {self.checker!r:.40}")
        for name in ("hidden_timeout", "hidden_memory_mb"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise EgcfgError(f"{where}: field {name!r} must be a positive number")
        for name in ("test_setup", "prelude"):  # (answer_start is a prefix and need not parse alone)
            try:
                ast.parse(getattr(self, name))
            except SyntaxError as exc:
                raise EgcfgError(f"{where}: field {name!r} is not valid Python ({exc.msg})") from None
        return self


def _valid_checker(checker: object) -> bool:
    if checker in ("lines", "tokens"):
        return True
    if not isinstance(checker, str) or not checker.startswith("float:"):
        return False
    try:
        eps = float(checker[len("float:"):])
    except ValueError:
        return False
    return 0 < eps < 1


def _strings(obj: dict, key: str, where: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EgcfgError(f"{where}: field {key!r} must be a list of strings")
    return tuple(value)


def _io_tests(obj: dict, key: str, where: str) -> tuple[IOTest, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise EgcfgError(f"{where}: field {key!r} must be a list of {{\"input\": ..., \"output\": ...}} objects")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("input"), str) or not isinstance(item.get("output"), str):
            raise EgcfgError(f"{where}: field {key!r}[{i}] must be an object with string 'input' and 'output'")
        out.append(IOTest(item["input"], item["output"]))
    return tuple(out)


def task_from_dict(obj: Any, where: str = "task") -> Task:
    """Build a validated Task from a parsed JSON object."""
    if not isinstance(obj, dict):
        raise EgcfgError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("task_id", "prompt"):
        if key not in obj:
            raise EgcfgError(f"{where}: missing field {key!r}")
    if not isinstance(obj["prompt"], str):
        raise EgcfgError(f"{where}: field 'prompt' must be a string")
    entry = obj.get("entry_point")
    if entry is not None and not isinstance(entry, str):
        raise EgcfgError(f"{where}: field 'entry_point' must be a string")
    for key in ("test_setup", "prelude", "answer_start", "checker"):
        if not isinstance(obj.get(key, ""), str):
            raise EgcfgError(f"{where}: field {key!r} must be a string")
    task = Task(
        task_id=str(obj["task_id"]),
        prompt=obj["prompt"],
        entry_point=entry,
        tests=_strings(obj, "tests", where),
        hidden_tests=_strings(obj, "hidden_tests", where),
        io_tests=_io_tests(obj, "io_tests", where),
        hidden_io_tests=_io_tests(obj, "hidden_io_tests", where),
        test_setup=obj.get("test_setup", ""),
        prelude=obj.get("prelude", ""),
        answer_start=obj.get("answer_start", ""),
        checker=obj.get("checker", "lines"),
    )
    return task.validate()


def read_user_file(path: Path) -> str:
    """A text file the user named, or EgcfgError with a one-line reason."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EgcfgError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EgcfgError(f"{path}: cannot read: {exc}") from None


def load_tasks(path: str | Path, on_invalid: Callable[[str], None] | None = None) -> list[Task]:
    """Read one task or a list of tasks from a JSON file.

    A malformed task raises EgcfgError, unless ``on_invalid`` is given and the file holds a list:
    then each bad task is reported through ``on_invalid(message)`` and skipped, so one broken entry
    does not cost the others (the error is still raised when no task at all is usable).
    """
    path = Path(path)
    text = read_user_file(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EgcfgError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, list):
        return [task_from_dict(data, str(path))]
    if not data:
        raise EgcfgError(f"{path}: the list of tasks is empty")
    tasks, problems = [], []
    for i, item in enumerate(data):
        try:
            tasks.append(task_from_dict(item, f"{path}[{i}]"))
        except EgcfgError as exc:
            if on_invalid is None:
                raise
            problems.append(str(exc))
            on_invalid(f"skipping {exc}")
    if not tasks:
        raise EgcfgError(f"{path}: no usable task ({len(problems)} malformed; first: {problems[0]})")
    return tasks
