import ast

from egcfg.execution.program import (invocation_from_assert, last_code_block, make_candidate, parses, repair,
                                     strip_fences, program_with_test)


def test_repair_keeps_valid_code():
    code = "def f(x):\n    return x\n"
    assert repair(code) == code


def test_repair_appends_pass_to_open_block():
    code = "def f(xs):\n    total = 0\n    for x in xs:"
    fixed = repair(code)
    assert fixed.endswith("    for x in xs:\n        pass\n")
    assert parses(fixed)


def test_repair_drops_a_cut_line():
    code = "def f(x):\n    y = x + 1\n    return (y *"
    fixed = repair(code)
    assert fixed == "def f(x):\n    y = x + 1\n"


def test_repair_gives_none_when_nothing_executable():
    assert repair("(((") is None
    assert repair("   \n") is None


def test_make_candidate_joins_prefix_and_strips_fence():
    prefix = "def f(n):\n"
    cont = "    s = 0\n    for i in range(n):\n        s += i\n    return s\n```\nprint('after fence')\n"
    program = make_candidate(prefix, cont)
    assert "after fence" not in program
    assert parses(program)
    ns = {}
    exec(program, ns)
    assert ns["f"](4) == 6


def test_make_candidate_discards_empty():
    assert make_candidate("", "```\n") is None


def test_strip_fences_and_last_block():
    assert strip_fences("```python\nx = 1\n```\ntext") == "x = 1"
    assert last_code_block("a\n```python\nx = 1\n```\nb\n```\ny = 2\n```") == "y = 2\n"


def test_invocation_from_assert_drops_expected_value():
    assert invocation_from_assert("assert f(3, [1, 2]) == 7", "f") == "f(3, [1, 2])"
    assert invocation_from_assert("assert f('a') is None", "f") == "f('a')"
    assert invocation_from_assert("assert not f(0)", "f") == "f(0)"
    assert invocation_from_assert("assert set(f(x=[1, 2])) == {1, 2}", "f") == "f(x=[1, 2])"
    assert invocation_from_assert("assert math.isclose(f(2.0), 4.0, rel_tol=0.001)", "f") == "f(2.0)"
    # the outermost call of the entry point wins over one nested in its arguments
    assert invocation_from_assert("assert f(f(1)) == 3", "f") == "f(f(1))"
    # an assert that never names the entry point: the asserted expression itself
    assert invocation_from_assert("assert g(1) == 2", "f") == "g(1) == 2"


def test_test_program_is_valid_python():
    code = "def f(x):\n    return x * 2\n"
    text = program_with_test(code, "assert f(2) == 4", setup="import math")
    ast.parse(text)
    exec(text, {})


def test_parsing_model_code_puts_no_compiler_warning_on_stderr():
    """A model's string with an invalid escape ("\\ ") makes the compiler warn (SyntaxWarning on
    3.12, DeprecationWarning before); parsing it must not print that on egcfg's stderr mid-run,
    while the same parse elsewhere still warns (the filter is only for model code)."""
    import subprocess
    import sys

    code = ("from egcfg.execution.program import parses, _has_statement\n"
            "import ast\n"
            "assert parses('x = \"\\\\ \"\\n') and _has_statement('y = \"\\\\ \"\\n')\n"
            "ast.parse('z = \"\\\\ \"\\n')\n")
    res = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("invalid escape sequence") == 1 and "<unknown>" in res.stderr, res.stderr
