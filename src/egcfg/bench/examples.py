"""Visible tests for HumanEval: the examples in each docstring, turned into asserts.

HumanEval prompts show examples in several styles; we read the common ones:

    >>> f(1, 2)            f(1, 2) ==> 3        f(1, 2) ➞ 3       f(1, 2) -> 3
    3                      f(1, 2) => 3         f(1, 2) == 3      f(1, 2) should return 3
                           f(1, 2) = 3          f(1, 2) returns 3 "for x = .. the output should be" is not read

Only examples that parse as Python and call the entry point are kept, in docstring order, without
duplicates. A few docstrings hold no example we can read; those tasks get no visible test.

``f(x) = y`` is also how docstrings *define* things (HumanEval/130 defines a sequence with
``tri(1) = 3`` / ``tri(n) = tri(n - 1) + ...`` and works one term out with ``tri(3) = tri(2) + ...``
while ``tri`` returns a list). So a run of consecutive ``f(...) = ...`` lines is read as a definition,
and none of its lines as an example, when any line of it is one: the right side calls ``f`` again,
the call has a free variable (``f(n)``), the value is a chain (``f(2) = 1 + 1 = 2``) or goes on
on a line starting with ``=``. Values that call the function are never examples, whatever the arrow.
"""

from __future__ import annotations

import ast
import builtins
import re

_ARROW = re.compile(r"^\s*(?:[-*]\s*)?(?P<call>.+?)\s*(?:==>|=>|➞|->|==|=|\bshould\s+(?:return|be)\b|\breturns?\b|\bis\b)\s*(?P<value>.+?)\s*$")
_EQUALS = re.compile(r"^\s*=(?![=>])\s*(?P<value>.*)$")  # "= value": a single "=", not "==", "=>"
_MORE_EQUALS = re.compile(r"(?<![=!<>])=(?![=>])")  # another single "=" inside a value: a chain


def _docstring(prompt: str, entry_point: str) -> str:
    try:
        tree = ast.parse(prompt + "\n    pass\n" if prompt.rstrip().endswith('"""') or prompt.rstrip().endswith("'''") else prompt)
    except SyntaxError:
        tree = None
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == entry_point:
                return ast.get_docstring(node) or ""
    match = re.search(r'("""|\'\'\')(.*?)(\1|$)', prompt, flags=re.S)
    return match.group(2) if match else ""


def _balanced_call(text: str, name: str) -> str | None:
    """The text of the first ``name(...)`` call in ``text`` with balanced brackets."""
    start = re.search(rf"\b{re.escape(name)}\s*\(", text)
    if not start:
        return None
    depth = 0
    for i in range(start.end() - 1, len(text)):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return text[start.start(): i + 1]
    return None


_BUILTINS = set(dir(builtins))


def _checked(text: str, name: str) -> str | None:
    """``text`` normalised if it is an assert that calls ``name`` and uses no unknown names."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]
    unknown = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - _BUILTINS - {name}
    if not calls or unknown:  # e.g. is_happy(abc) with an unquoted string in the docstring
        return None
    return ast.unparse(tree)


def _is_comparison(expr: str) -> bool:
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        return False
    return isinstance(node, ast.Compare)


def _valid_assert(call: str, value: str, name: str) -> str | None:
    value = value.strip().rstrip(".,;").strip()
    if not value:
        return None
    return _checked(f"assert {call} == {value}", name)


def _calls(text: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\s*\(", text) is not None


def _parses(expr: str) -> bool:
    try:
        ast.parse(expr, mode="eval")
    except SyntaxError:
        return False
    return True


def _equals_line(line: str, name: str) -> tuple[str, str] | None:
    """(call, value) for a line ``name(...) = value`` (a single ``=``), else None."""
    call = _balanced_call(line, name)
    if not call:
        return None
    match = _EQUALS.match(line[line.index(call) + len(call):])
    return (call, match.group("value")) if match else None


def _defines(call: str, value: str, name: str) -> bool:
    """Whether ``call = value`` defines or derives rather than shows an example."""
    value = value.strip().rstrip(".,;").strip()
    if _calls(value, name):                                  # tri(3) = tri(2) + tri(1) + tri(4)
        return True
    if _MORE_EQUALS.search(value) and not _parses(value):    # tri(2) = 1 + (2 / 2) = 2
        return True
    try:
        args = {n.id for n in ast.walk(ast.parse(call, mode="eval")) if isinstance(n, ast.Name)}
    except SyntaxError:
        return False
    free = args - _BUILTINS - {name}                           # tri(n) = 1 + n / 2, if n is even
    return any(re.search(rf"\b{re.escape(v)}\b", value) for v in free)


def _definition_lines(lines: list[str], name: str) -> set[int]:
    """Indices of the lines of every run of ``name(...) = ...`` lines (and ``= ...`` continuation
    lines) that holds a definition or a derivation: those are no examples."""
    out: set[int] = set()
    i = 0
    while i < len(lines):
        run: list[int] = []
        defining = False
        j = i
        while j < len(lines):
            line = lines[j].strip()
            found = _equals_line(line, name) if not line.startswith(">>>") else None
            if found:
                defining = defining or _defines(found[0], found[1], name)
            elif run and _EQUALS.match(line):
                defining = True                               # "       = 2 + 3 + 3 = 8": worked out
            else:
                break
            run.append(j)
            j += 1
        if defining:
            out.update(run)
        i = j + 1 if not run else j
    return out


def _input_output(lines: list[str], i: int, name: str) -> tuple[str | None, int]:
    """An ``Input: ... / Output: ...`` example starting at line i."""
    args = lines[i].strip()[len("Input:"):].strip()
    j = i + 1
    while j < len(lines) and not lines[j].strip().startswith(("Output:", "Input:")):
        args += " " + lines[j].strip()
        j += 1
    if j >= len(lines) or not lines[j].strip().startswith("Output:"):
        return None, j
    value = lines[j].strip()[len("Output:"):].strip()
    found = _valid_assert(f"{name}({args})", value, name)
    return found, j + 1


def docstring_asserts(prompt: str, entry_point: str) -> list[str]:
    doc = _docstring(prompt, entry_point)
    lines = doc.splitlines()
    definitions = _definition_lines(lines, entry_point)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith(">>>"):
            expr = line[3:].strip()
            j = i + 1
            while j < len(lines) and lines[j].strip().startswith("..."):
                expr += " " + lines[j].strip()[3:].strip()
                j += 1
            expected = []
            while (j < len(lines) and lines[j].strip() and not lines[j].strip().startswith(">>>")
                   and not _balanced_call(lines[j], entry_point)):  # the next example starts
                expected.append(lines[j].strip())
                j += 1
            if expected:
                found = _valid_assert(expr, " ".join(expected), entry_point)
            else:  # ">>> f(x) == y" carries its own expected value; a bare call without output does not
                found = _checked(f"assert {expr}", entry_point) if _is_comparison(expr) else None
            if found:
                out.append(found)
            i = j
            continue
        if line.startswith("Input:"):
            found, i = _input_output(lines, i, entry_point)
            if found:
                out.append(found)
            continue
        call = _balanced_call(line, entry_point)
        if call:
            rest = line[line.index(call) + len(call):]
            match = _ARROW.match("X" + rest)
            if match:
                value = match.group("value")
                if not value and i + 1 < len(lines):
                    value = lines[i + 1].strip()
                # A value that calls the function again relates two calls: no example. Nor is a
                # line of a definition (see the module docstring).
                defining = i in definitions or _calls(value, entry_point)
                found = None if defining else _valid_assert(call, value, entry_point)
                if found:
                    out.append(found)
            elif not rest.strip() and i + 1 < len(lines):
                # "f(x)\n    value" with the result alone on the next line
                nxt = lines[i + 1].strip()
                arrow = _ARROW.match("X " + nxt) if nxt[:2] in ("==", "=>", "->", "➞") else None
                found = _valid_assert(call, arrow.group("value") if arrow else "", entry_point) if arrow else None
                if found:
                    out.append(found)
        i += 1
    unique = []
    for a in out:
        if a not in unique:
            unique.append(a)
    return unique
