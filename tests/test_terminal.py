"""Untrusted text never reaches a terminal raw: control sequences in programs, outputs, exceptions
and traces are written out as escapes by everything egcfg prints as text."""

import json

from egcfg.terminal import safe

EVIL = "\x1b]0;pwned\x07\x1b[31mred\x1b[0m\rback\x9b2J\u202eevil\x00"


def test_safe_escapes_controls_and_keeps_text():
    out = safe("line 1\n\tline 2 é ✓ " + EVIL)
    assert out.startswith("line 1\n\tline 2 é ✓ ")  # newline, tab and printable Unicode kept
    assert out.endswith("\\x1b]0;pwned\\x07\\x1b[31mred\\x1b[0m\\rback\\x9b2J\\u202eevil\\x00")
    assert not any(ch in out for ch in "\x1b\x07\r\x9b\u202e\x00")


def test_trace_text_output_is_escaped(tmp_path, egcfg_cli):
    prog = tmp_path / "evil.py"
    prog.write_text(f"def f():\n    print({EVIL!r})\n    raise ValueError({EVIL!r})\n")
    res = egcfg_cli("trace", str(prog), "--call", "f()")
    assert res.returncode == 1
    assert not any(ch in res.stdout + res.stderr for ch in "\x1b\x07\r\x9b\u202e\x00")
    assert "\\x1b]0;pwned\\x07" in res.stdout  # shown, as an escape
    # JSON output is escaped by the JSON encoder itself, and decodes back to the exact text.
    res = egcfg_cli("trace", str(prog), "--call", "f()", "--json")
    assert "\x1b" not in res.stdout and EVIL in json.loads(res.stdout)["stdout"]


def test_error_lines_are_escaped(tmp_path, egcfg_cli):
    bad = tmp_path / "tasks.json"
    bad.write_text(json.dumps({"task_id": EVIL, "prompt": 3}))
    res = egcfg_cli("solve", str(bad))
    assert res.returncode == 2
    assert not any(ch in res.stderr for ch in "\x1b\x07\r\x9b\u202e")
