"""Turn model text into executable programs, and visible tests into invocations.

Everything here is pure text/ast work on the host side; nothing is executed.
"""

from __future__ import annotations

import ast
import re
import warnings

FENCE = "```"
# Model code is parsed here (never run) under this file name. The compiler's warnings about it (an
# invalid escape such as "\\ " in a string: a SyntaxWarning on Python 3.12, a DeprecationWarning
# before) are about the model's text, and would otherwise land on egcfg's stderr mid-run.
MODEL_CODE = "<model code>"
for _category in (SyntaxWarning, DeprecationWarning):
    warnings.filterwarnings("ignore", category=_category, module=re.escape(MODEL_CODE))


def parse(code: str) -> ast.Module:
    """``ast.parse`` of model code, quietly (see MODEL_CODE)."""
    return ast.parse(code, filename=MODEL_CODE)


def strip_fences(text: str) -> str:
    """The code inside the first fenced block, or up to a closing fence, or the text as is.

    Candidates start inside a ```python block (the prompt opens it), so their text ends at the
    first closing fence; a whole answer may still carry its own opening fence.
    """
    lines = text.split("\n")
    if lines and lines[0].lstrip().startswith(FENCE):
        lines = lines[1:]
    out = []
    for line in lines:
        if line.lstrip().startswith(FENCE):
            break
        out.append(line)
    return "\n".join(out)


def last_code_block(text: str) -> str | None:
    """The last complete fenced code block in a chat answer, if any."""
    blocks = re.findall(r"```[a-zA-Z0-9_+-]*\n(.*?)```", text, flags=re.S)
    return blocks[-1] if blocks else None


def parses(code: str) -> bool:
    try:
        parse(code)
    except (SyntaxError, ValueError):  # ValueError: source contains null bytes
        return False
    return True


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _with_pass(lines: list[str]) -> str:
    """Close an open block: add ``pass`` one level inside the last line if it opens a block, else at its level."""
    last = next((l for l in reversed(lines) if l.strip()), "")
    indent = _indent_of(last)
    if last.rstrip().endswith(":"):
        indent += "    "
    return "\n".join(lines + [indent + "pass"])


def repair(code: str) -> str | None:
    """Make a partial program parse, or return None when nothing executable remains.

    Tries, in order: the code as is; with ``pass`` appended (a block the horizon cut open); then
    dropping trailing lines one at a time (a line cut in the middle), each again with and without
    ``pass``. Trailing blank lines are removed first so the result is stable.
    """
    lines = code.rstrip().split("\n")
    while lines:
        text = "\n".join(lines)
        if text.strip():
            if parses(text):
                return text + "\n"
            patched = _with_pass(lines)
            if parses(patched):
                return patched + "\n"
        lines = lines[:-1]
    return None


def _has_statement(code: str) -> bool:
    try:
        return bool(parse(code).body)
    except SyntaxError:
        return False


def make_candidate(prefix: str, continuation: str) -> str | None:
    """Program text for one sampled continuation: code so far + continuation, fences stripped, repaired."""
    program = repair(strip_fences(prefix + continuation))
    if program is None or not _has_statement(program):
        return None
    return program


def invocation_from_assert(test: str, entry_point: str) -> str:
    """The call a visible test makes, without its expected value.

    ``assert f(3, [1, 2]) == 7`` -> ``f(3, [1, 2])``. The outermost call of ``entry_point`` inside the
    assert is taken (``assert set(f(x)) == {1}`` -> ``f(x)``); if the assert never calls it by name,
    the asserted expression itself is the invocation, so the trace still shows what it evaluates to.
    """
    try:
        tree = ast.parse(test.strip())
    except SyntaxError:
        return test.strip()
    stmt = tree.body[0] if tree.body else None
    if not isinstance(stmt, ast.Assert):
        return test.strip()
    found = _outermost_call(stmt.test, entry_point)
    if found is not None:
        return ast.unparse(found)
    return ast.unparse(stmt.test)


def _outermost_call(node: ast.AST, name: str) -> ast.Call | None:
    # Breadth-first, so a call of `name` closer to the root wins over one nested in its arguments.
    queue = [node]
    while queue:
        current = queue.pop(0)
        if isinstance(current, ast.Call):
            func = current.func
            if (isinstance(func, ast.Name) and func.id == name) or (isinstance(func, ast.Attribute) and func.attr == name):
                return current
        queue.extend(ast.iter_child_nodes(current))
    return None


def program_with_test(code: str, test: str, setup: str = "") -> str:
    """A program that runs one visible assert against the final code."""
    parts = [code.rstrip(), ""]
    if setup.strip():
        parts += [setup.rstrip(), ""]
    parts.append(test.strip())
    return "\n".join(parts) + "\n"
