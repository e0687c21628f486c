"""The tracer inside the sandbox, on small programs: what the model will see."""

from egcfg.execution.render import render_run
from egcfg.execution.sandbox import Job

LOOP = """def total(xs):
    s = 0
    for x in xs:
        s = s + x
    return s
"""

RECURSION = """def fact(n):
    if n <= 1:
        return 1
    return n * fact(n - 1)
"""


def test_loop_records_changed_locals(sandbox):
    r = sandbox.run(LOOP, "total([1, 2, 3])")
    assert r.status == "returned" and r.value == "6"
    assert r.events[0] == ["call", "total", "xs=[1, 2, 3]", 1]
    lines = [e for e in r.events if e[0] == "line"]
    assert ["line", 2, "s=0", 1] in lines
    assert ["line", 4, "s=6", 1] in lines
    assert r.events[-1] == ["return", "total", "6", 1]
    text = render_run(LOOP, r, "Invocation: total([1, 2, 3])")
    assert "L4   s = s + x" in text and "| s=6" in text
    assert text.endswith("Result: returned 6")


def test_recursion_nests_calls(sandbox):
    r = sandbox.run(RECURSION, "fact(3)")
    assert r.value == "6"
    calls = [e for e in r.events if e[0] == "call"]
    assert [c[2] for c in calls] == ["n=3", "n=2", "n=1"]
    assert [c[3] for c in calls] == [1, 2, 3]


def test_exception_is_reported_with_line(sandbox):
    program = "def f(x):\n    y = 10 / x\n    return y\n"
    r = sandbox.run(program, "f(0)")
    assert r.status == "raised"
    assert r.exception.startswith("ZeroDivisionError")
    assert any(e[0] == "exception" and e[1] == 2 for e in r.events)
    assert "Result: raised ZeroDivisionError" in render_run(program, r, "Invocation: f(0)")


def test_infinite_loop_times_out_with_partial_trace(sandbox):
    program = "def f():\n    i = 0\n    while True:\n        i = i + 1\n"
    r = sandbox.run(program, "f()", timeout=0.5)
    assert r.status == "timeout"
    assert r.skipped > 0                          # bounded: head + tail kept, middle counted
    assert len([e for e in r.events if e != "skip"]) <= sandbox.limits.trace_head + sandbox.limits.trace_tail
    assert "timed out" in render_run(program, r, "Invocation: f()")


def test_stdin_program(sandbox):
    program = "n = int(input())\nvalues = [int(v) for v in input().split()]\nprint(sum(values[:n]))\n"
    r = sandbox.run(program, None, stdin="2\n5 6 7\n")
    assert r.status == "completed"
    assert r.stdout.strip() == "11"
    assert any(e[0] == "line" and "n=2" in e[2] for e in r.events)


def test_print_output_is_captured_and_capped(sandbox):
    program = "def f():\n    for i in range(100000):\n        print('x' * 50)\n    return 1\n"
    r = sandbox.run(program, "f()", trace=False, timeout=5)
    assert r.status == "returned"
    assert len(r.stdout) < sandbox.limits.max_stdout_chars + 200
    assert "more characters of output cut" in r.stdout


def test_untraced_run_has_no_events(sandbox):
    r = sandbox.run(LOOP + "\nassert total([1]) == 1\n", trace=False)
    assert r.status == "completed" and r.events == []


def test_syntax_error_is_an_outcome(sandbox):
    r = sandbox.run("def f(:\n", "f()")
    assert r.status == "raised" and r.exception.startswith("SyntaxError")


def test_os_exit_is_a_crash_not_a_pass(sandbox):
    r = sandbox.run("import os\nos._exit(0)\n", trace=False)
    assert r.status == "crashed" and not r.ok


def test_sys_exit_is_not_a_pass(sandbox):
    r = sandbox.run("import sys\nsys.exit(0)\nassert False\n", trace=False)
    assert r.status == "exited" and not r.ok


def test_runs_in_parallel_keep_order(sandbox):
    jobs = [Job(LOOP, invocation=f"total(list(range({n})))") for n in range(6)]
    results = sandbox.run_many(jobs)
    assert [r.value for r in results] == [str(sum(range(n))) for n in range(6)]


def test_timeout_with_a_trace_even_when_tracing_dominates(sandbox):
    """The deadline often lands inside the tracer's own repr work; it must still end the run with
    its partial trace (repeated runs, since where the alarm lands is a matter of timing)."""
    program = "def f(xs):\n    while True:\n        xs = xs + [len(xs)]\n"
    for _ in range(4):
        r = sandbox.run(program, "f([])", timeout=0.3)
        assert r.status == "timeout" and r.events, r


def test_swallowed_timeouts_still_end_the_run(sandbox):
    program = "def f():\n    while True:\n        try:\n            while True:\n                pass\n        except BaseException:\n            pass\n"
    r = sandbox.run(program, "f()", timeout=0.3)
    assert r.status == "timeout"


def test_standard_streams_are_those_of_a_normal_interpreter(sandbox):
    """Contest solutions read and write bytes through sys.stdin.buffer / sys.stdout.buffer."""
    program = (
        "import sys\n"
        "data = sys.stdin.buffer.read().split()\n"
        "sys.stdout.buffer.write(b'%d\\n' % sum(map(int, data)))\n"
        "e = 'é'.encode()\n"
        "sys.stdout.buffer.write(e[:1])\n"
        "sys.stdout.buffer.write(e[1:] + b'\\n')\n"  # a character split across two writes
        "sys.stdout.reconfigure(line_buffering=True)\n"
        "print(sys.stdout.encoding, sys.stdout.isatty(), sys.stdout.writable())\n"
        "sys.stdout.flush(); sys.stdout.buffer.flush()\n"
    )
    r = sandbox.run(program, stdin="1 2\n3\n", trace=False)
    assert r.status == "completed", r.exception
    assert r.stdout == "6\né\nutf-8 False True\n"


def test_stdin_lines_after_the_job(sandbox):
    r = sandbox.run("import sys\nfirst = sys.stdin.buffer.readline()\nprint(first.strip().decode(), input())\n",
                    stdin="ab\ncd\n", trace=False)
    assert r.status == "completed" and r.stdout == "ab cd\n"


def test_traces_hold_no_memory_addresses(sandbox):
    """Reprs like <range_iterator object at 0x7f...> change with every process: traced runs of the
    same program must give the same events (and so the same signal) every time."""
    program = ("class A:\n    pass\n\ndef f(n):\n    a = A()\n    it = iter(range(n))\n    fn = f\n"
               "    return [a, it, fn]\n")
    first, second = sandbox.run(program, "f(3)"), sandbox.run(program, "f(3)")
    assert first.status == "returned" and first.events == second.events and first.value == second.value
    assert " at 0x" not in repr(first.events) + first.value
    assert "<__main__.A object>" in first.value and "<function f>" in first.value and "range_iterator" in first.value


def test_exception_messages_and_shown_output_hold_no_addresses(sandbox):
    program = "class A:\n    pass\n\ndef f():\n    print(A())\n    raise ValueError(A())\n"
    result = sandbox.run(program, "f()")
    assert result.status == "raised" and result.exception == "ValueError: <__main__.A object>"
    assert " at 0x" in result.stdout  # the program's own output is kept as it printed it ...
    shown = render_run(program, result, "Invocation: f()")
    assert "Output:\n<__main__.A object>" in shown and " at 0x" not in shown  # ... the signal shows it without
