"""Prompt templates: the few-shot instruct style and the "long code" style, in the model's chat format.

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


def messages(task: Task, style: str) -> list[dict]:
    """Chat messages with a one-shot example; the last user message ends with the signal slot."""
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}")
    instruction = _INSTRUCTIONS[style]
    if task.is_io:
        example_task, example_answer = _EXAMPLE_IO_TASK, _EXAMPLE_IO
    else:
        example_task = _EXAMPLE_TASK
        example_answer = _EXAMPLE_LONG if style == "long-code" else _EXAMPLE_INSTRUCT
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{example_task}\n{instruction}"},
        {"role": "assistant", "content": example_answer},
        {"role": "user", "content": f"{task_text(task)}\n{instruction}{SIGNAL_SLOT}"},
    ]


@dataclass(frozen=True)
class PromptParts:
    """Rendered chat text around the signal slot: p_sol = prefix + suffix, p_dyn = prefix + signal + suffix."""

    prefix: str
    suffix: str

    @staticmethod
    def signal_segment(signal: str) -> str:
        return "\n\n" + signal


def split_prompt(rendered: str, answer_start: str = "") -> PromptParts:
    """Split a rendered chat (with the assistant turn opened) at the signal slot. The answer opens a
    ```python block, then ``answer_start`` (code the model is to continue, e.g. a signature)."""
    if rendered.count(SIGNAL_SLOT) != 1:
        raise ValueError("the chat template must render the signal slot exactly once")
    prefix, suffix = rendered.split(SIGNAL_SLOT)
    return PromptParts(prefix=prefix, suffix=suffix + ANSWER_START + answer_start)
