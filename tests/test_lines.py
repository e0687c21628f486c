"""Line tracking and stop rules (lines.py) on their own: bytes in, boundaries and stops out."""

import pytest

from egcfg.lines import LineTracker


def feed_all(tracker, pieces):
    events = []
    for piece in pieces:
        newline, stop = tracker.feed(piece.encode())
        events.append((newline, stop and stop.reason))
        if stop:
            return events, stop
    return events, None


def tracker(**kw):
    args = {"entry_point": "f", "is_io": False, "answer_start": "", "max_line_tokens": 8} | kw
    return LineTracker(**args)


def test_guidance_switches_on_at_the_def_line_and_boundaries_follow_newlines():
    t = tracker()
    assert not t.active and t.at_boundary
    t.feed(b"import os\n")
    assert not t.active and t.at_boundary
    t.feed(b"def f(x):")
    assert not t.at_boundary
    t.feed(b"\n")
    assert t.active and t.at_boundary and t.last_completed_line() == "def f(x):"


def test_a_merged_newline_token_starts_the_next_line_inside_it():
    t = tracker()
    t.feed(b"def f(x):\n    ")
    assert t.active and t.at_boundary and t.line_start == len(b"def f(x):\n") and t.line_tokens == 1


def test_a_given_signature_is_active_at_once_and_stdin_programs_always():
    assert tracker(answer_start="def f(x):\n    ").active
    assert tracker(entry_point=None, is_io=True).active


@pytest.mark.parametrize("pieces, reason, code", [
    (["def f(x):\n", "    return x\n", "```"], "fence", "def f(x):\n    return x\n"),
    (["def f(x):\n", "    return x\n", "print(f(1))\n"], "function_end", "def f(x):\n    return x\n"),
    (["def f(x):\n", "    return x\n", "\n```"], "fence", "def f(x):\n    return x\n\n"),  # fence inside a newline token
    (["def f(x):\n", "    return x\n", "Invocation: f(1)\n"], "imitation", "def f(x):\n    return x\n"),
    (["def f(x):\n", "    y = " + "x" * 3] + ["+x"] * 8, "line_too_long", "def f(x):\n"),
])
def test_stop_rules(pieces, reason, code):
    t = tracker()
    _, stop = feed_all(t, pieces)
    assert stop is not None and stop.reason == reason
    assert bytes(t.text[:stop.cut]).decode() == code


def test_what_does_not_stop():
    t = tracker()
    _, stop = feed_all(t, ["def f(x):\n", "    return g(x)\n", "\n", "def g(x):\n", "    return x\n",
                           "import math\n", "# a comment\n", "@decorator\n", "class A:\n"])
    assert stop is None
    # before the body (no indented line yet), a line at column 0 does not end the code
    t = tracker()
    _, stop = feed_all(t, ["def f(x):\n", "x = 1\n"])
    assert stop is None
    # stdin programs have no function to end
    t = tracker(entry_point=None, is_io=True)
    _, stop = feed_all(t, ["n = int(input())\n", "print(n)\n", "for i in range(n):\n", "    print(i)\n", "print(0)\n"])
    assert stop is None
