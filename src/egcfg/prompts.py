"""Prompt templates: the few-shot instruct style and the "long code" style, in the model's chat format,
in one of a few formats (``FORMATS``: with or without the worked example and the given signature, or
EvalPlus's own instruction prompt), which both methods always share.

Both branches share one chat: p_sol is ``prefix + suffix``, p_dyn is ``prefix + signal + suffix``,
where the split point is the end of the last user message (the method puts the traces there) and
the suffix is the assistant's turn opened with a ```python fence. Keeping the prefix identical lets
the backend reuse its KV cache for p_dyn.
"""

from __future__ import annotations

from dataclasses import dataclass

from .task import Task

STYLES = ("instruct", "long-code")
SIGNAL_SLOT = "\x00EGCFG_SIGNAL\x00"
ANSWER_START = "```python\n"

# How the chat is put together (Config.prompt_format):
# * one-shot: our system prompt, one worked example, then the task with its visible tests; where the
#   task gives a signature (HumanEval), the answer continues it;
# * one-shot-free: the same, but the answer writes the whole program, signature included;
# * zero-shot: one-shot without the worked example;
# * evalplus: EvalPlus's instruction prompt for chat models (its codegen for HumanEval+/MBPP+, the
#   setting model makers report): no system prompt of ours (the model's template adds its default),
#   the problem in a code block, and the answer opened by EvalPlus's response prefix, whole;
# * auto (the default): evalplus where the task gives a signature and docstring (HumanEval and its
#   siblings), one-shot otherwise (MBPP, contests). Measured side by side on the same tasks
#   (benchmarks/results/prompt_study_*.md): on all of HumanEval, greedy passes 39.0 / 48.8 / 54.3% in
#   one-shot / zero-shot / evalplus (the one-line MBPP example draws terse answers), and with 16
#   agents evalplus is level or ahead for EG-CFG and the sampling control alike; on MBPP the worked
#   example helps (every 10th task: one-shot 38.0, zero-shot 34.0, evalplus 28.0).
FORMATS = ("auto", "one-shot", "one-shot-free", "zero-shot", "evalplus")
EVALPLUS_INSTRUCTION = "Please provide a self-contained Python script that solves the following problem in a markdown code block:"
EVALPLUS_RESPONSE = ("Below is a Python script with a self-contained function that solves the problem and passes "
                     "corresponding tests:\n")

SYSTEM = "You are an expert Python programmer. You write correct, simple code."

_EXAMPLE_TASK = (
    "Write a function to return the sum of the squares of the even numbers in a list.\n"
    "Your code should pass these tests:\n"
    "assert sum_even_squares([1, 2, 3, 4]) == 20\n"
    "assert sum_even_squares([]) == 0\n"
    "assert sum_even_squares([5, 6]) == 36"
)
_EXAMPLE_INSTRUCT = (
    "```python\n"
    "def sum_even_squares(numbers):\n"
    "    return sum(x * x for x in numbers if x % 2 == 0)\n"
    "```"
)
_EXAMPLE_LONG = (
    "```python\n"
    "def sum_even_squares(numbers):\n"
    "    total = 0\n"
    "    for x in numbers:\n"
    "        is_even = x % 2 == 0\n"
    "        if is_even:\n"
    "            square = x * x\n"
    "            total = total + square\n"
    "    return total\n"
    "```"
)
_EXAMPLE_IO_TASK = (
    "The input is one line with a word and an integer k separated by a space. "
    "Print the word k times, separated by dashes.\n"
    "Your program should pass these tests (stdin -> expected stdout):\n"
    "Input:\nab 3\nOutput:\nab-ab-ab"
)
_EXAMPLE_IO = (
    "```python\n"
    "def main():\n"
    "    word, k = input().split()\n"
    "    k = int(k)\n"
    "    parts = [word] * k\n"
    "    print(\"-\".join(parts))\n"
    "\n"
    "main()\n"
    "```"
)

_INSTRUCTIONS = {
    "instruct": "Answer with a single ```python code block and nothing else.",
    "long-code": (
        "Answer with a single ```python code block and nothing else. Write many short, simple lines: "
        "one small step per line, intermediate variables with clear names, explicit for-loops instead "
        "of comprehensions, no lambdas, so that every prefix of the code can already run."
    ),
}


def task_text(task: Task) -> str:
    """The problem statement with its visible tests, as the user message shows it."""
    if task.is_io:
        shown = "\n".join(f"Input:\n{t.input.rstrip()}\nOutput:\n{t.output.rstrip()}" for t in task.io_tests)
        return f"{task.prompt.strip()}\nYour program should pass these tests (stdin -> expected stdout):\n{shown}"
    shown = "Your code should pass these tests:\n" + "\n".join(t.strip() for t in task.tests) + "\n" if task.tests else ""
    return f"{task.prompt.strip()}\n{shown}Write the Python function `{task.entry_point}`."


def _evalplus_problem(task: Task) -> str:
    """The problem as EvalPlus shows it: a given signature and docstring as they are (they hold the
    examples); otherwise the statement and its visible tests in a docstring, as in its MBPP prompt."""
    if task.answer_start:
        return task.answer_start.strip()
    if task.is_io:
        return task_text(task)
    return '"""\n' + task.prompt.strip() + "\n" + "\n".join(t.strip() for t in task.tests) + '\n"""'


def concrete(fmt: str, gives_signature: bool) -> str:
    """``auto`` made concrete for a task that gives a signature and docstring to continue or not
    (see FORMATS); other formats as they are."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}")
    if fmt != "auto":
        return fmt
    return "evalplus" if gives_signature else "one-shot"


def resolve(fmt: str, task: Task) -> str:
    """The format ``task`` is prompted in."""
    return concrete(fmt, bool(task.answer_start) and not task.is_io)


def messages(task: Task, style: str, fmt: str = "auto") -> list[dict]:
    """Chat messages of the format; the last user message ends with the signal slot."""
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}")
    fmt = resolve(fmt, task)
    instruction = _INSTRUCTIONS[style]
    if fmt == "evalplus":
        # (the long-code style keeps its request for many short lines; instruct adds nothing)
        extra = _INSTRUCTIONS["long-code"].split(". ", 1)[1] if style == "long-code" else ""
        return [{"role": "user", "content": f"{EVALPLUS_INSTRUCTION}\n```\n{_evalplus_problem(task)}\n```\n{extra}{SIGNAL_SLOT}"}]
    final = {"role": "user", "content": f"{task_text(task)}\n{instruction}{SIGNAL_SLOT}"}
    if fmt == "zero-shot":
        return [{"role": "system", "content": SYSTEM}, final]
    if task.is_io:
        example_task, example_answer = _EXAMPLE_IO_TASK, _EXAMPLE_IO
    else:
        example_task = _EXAMPLE_TASK
        example_answer = _EXAMPLE_LONG if style == "long-code" else _EXAMPLE_INSTRUCT
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{example_task}\n{instruction}"},
        {"role": "assistant", "content": example_answer},
        final,
    ]


def answer_start(task: Task, fmt: str) -> str:
    """Code the answer begins with: the task's given signature where the format continues it."""
    return task.answer_start if resolve(fmt, task) in ("one-shot", "zero-shot") else ""


def opener(task: Task, fmt: str) -> str:
    """What the assistant's turn starts with, before the program."""
    return (EVALPLUS_RESPONSE if resolve(fmt, task) == "evalplus" else "") + ANSWER_START


@dataclass(frozen=True)
class PromptParts:
    """Rendered chat text around the signal slot: p_sol = prefix + suffix, p_dyn = prefix + signal + suffix."""

    prefix: str
    suffix: str

    @staticmethod
    def signal_segment(signal: str) -> str:
        return "\n\n" + signal


def split_prompt(rendered: str, answer_start: str = "", opening: str = ANSWER_START) -> PromptParts:
    """Split a rendered chat (with the assistant turn opened) at the signal slot. The answer opens
    with ``opening`` (a ```python block, after a response prefix in some formats), then
    ``answer_start`` (code the model is to continue, e.g. a signature)."""
    if rendered.count(SIGNAL_SLOT) != 1:
        raise ValueError("the chat template must render the signal slot exactly once")
    prefix, suffix = rendered.split(SIGNAL_SLOT)
    return PromptParts(prefix=prefix, suffix=suffix + opening + answer_start)
