"""Prompt formats (prompts.FORMATS): what each puts in the chat, and that both methods get it."""

import pytest

from egcfg import Config, prompts, task_from_dict
from egcfg.bench.runner import _greedy_key
from egcfg.agents import Agent
from egcfg.engine import Generator
from egcfg.errors import EgcfgError
from fakes import ScriptedModel

STUB = 'def add(a, b):\n    """Add two numbers.\n    >>> add(1, 2)\n    3\n    """\n'
HUMANEVAL_LIKE = task_from_dict({"task_id": "h", "prompt": STUB, "entry_point": "add", "answer_start": STUB,
                                 "tests": ["assert add(1, 2) == 3"]})
MBPP_LIKE = task_from_dict({"task_id": "m", "prompt": "Write a function to add two numbers.", "entry_point": "add",
                            "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]})


@pytest.mark.parametrize("fmt", prompts.FORMATS)
@pytest.mark.parametrize("style", prompts.STYLES)
def test_every_format_has_one_signal_slot_at_the_end_of_the_last_user_message(fmt, style):
    for task in (HUMANEVAL_LIKE, MBPP_LIKE):
        msgs = prompts.messages(task, style, fmt)
        assert msgs[-1]["role"] == "user" and msgs[-1]["content"].endswith(prompts.SIGNAL_SLOT)
        assert sum(m["content"].count(prompts.SIGNAL_SLOT) for m in msgs) == 1
        assert "assert add(1, 2) == 3" in msgs[-1]["content"] or ">>> add(1, 2)" in msgs[-1]["content"]


def test_what_each_format_changes():
    one = prompts.messages(HUMANEVAL_LIKE, "instruct", "one-shot")
    assert [m["role"] for m in one] == ["system", "user", "assistant", "user"]
    assert prompts.messages(HUMANEVAL_LIKE, "instruct", "one-shot-free") == one  # only the answer differs
    assert prompts.answer_start(HUMANEVAL_LIKE, "one-shot") == STUB
    assert prompts.answer_start(HUMANEVAL_LIKE, "one-shot-free") == ""
    assert [m["role"] for m in prompts.messages(HUMANEVAL_LIKE, "instruct", "zero-shot")] == ["system", "user"]
    assert prompts.answer_start(HUMANEVAL_LIKE, "zero-shot") == STUB
    (ev,) = prompts.messages(HUMANEVAL_LIKE, "instruct", "evalplus")  # no system prompt of ours
    assert ev["content"].startswith(prompts.EVALPLUS_INSTRUCTION + "\n```\n" + STUB.strip() + "\n```\n")
    assert prompts.answer_start(HUMANEVAL_LIKE, "evalplus") == ""
    assert prompts.opener(HUMANEVAL_LIKE, "evalplus") == prompts.EVALPLUS_RESPONSE + "```python\n"
    assert prompts.opener(HUMANEVAL_LIKE, "one-shot") == "```python\n"
    (mb,) = prompts.messages(MBPP_LIKE, "long-code", "evalplus")  # MBPP: statement and tests in a docstring
    assert '"""\nWrite a function to add two numbers.\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n"""' in mb["content"]
    assert "many short, simple lines" in mb["content"]
    with pytest.raises(ValueError):
        prompts.messages(MBPP_LIKE, "instruct", "few-shot")


def test_auto_is_evalplus_for_a_given_signature_and_one_shot_otherwise():
    io_task = task_from_dict({"task_id": "c", "prompt": "Print the sum of two numbers.",
                              "io_tests": [{"input": "1 2\n", "output": "3\n"}]})
    assert Config().prompt_format == "auto"
    assert prompts.resolve("auto", HUMANEVAL_LIKE) == "evalplus"
    assert prompts.resolve("auto", MBPP_LIKE) == "one-shot"
    assert prompts.resolve("auto", io_task) == "one-shot"
    assert prompts.resolve("zero-shot", HUMANEVAL_LIKE) == "zero-shot"  # a named format is kept
    for style in prompts.STYLES:
        assert prompts.messages(HUMANEVAL_LIKE, style, "auto") == prompts.messages(HUMANEVAL_LIKE, style, "evalplus")
        assert prompts.messages(MBPP_LIKE, style, "auto") == prompts.messages(MBPP_LIKE, style, "one-shot")
        assert prompts.messages(io_task, style, "auto") == prompts.messages(io_task, style, "one-shot")
    assert prompts.answer_start(HUMANEVAL_LIKE, "auto") == "" and prompts.answer_start(MBPP_LIKE, "auto") == ""
    assert prompts.opener(HUMANEVAL_LIKE, "auto") == prompts.EVALPLUS_RESPONSE + "```python\n"
    assert prompts.opener(MBPP_LIKE, "auto") == "```python\n"


def test_the_engine_opens_the_answer_as_the_format_says(sandbox):
    model = ScriptedModel(["    return a + b\n"])
    for fmt, tail in (("one-shot", "```python\n" + STUB), ("auto", prompts.EVALPLUS_RESPONSE + "```python\n"),
                      ("evalplus", prompts.EVALPLUS_RESPONSE + "```python\n")):
        gen = Generator(model, HUMANEVAL_LIKE, Config(prompt_format=fmt, gammas=(0.0,)), sandbox)
        assert gen.parts.suffix.endswith(tail)
        assert gen.start == prompts.answer_start(HUMANEVAL_LIKE, fmt)


def test_prompt_format_is_checked_and_keys_the_shared_greedy_attempt():
    with pytest.raises(EgcfgError, match="--prompt-format must be one of"):
        Config(prompt_format="few-shot").validate()
    a, b = Agent("a", Config(prompt_format="one-shot")), Agent("b", Config(prompt_format="evalplus"))
    c = Agent("c", Config(prompt_format="auto"))
    assert _greedy_key(a, MBPP_LIKE) != _greedy_key(b, MBPP_LIKE)  # a one-shot greedy attempt is not reused for evalplus
    assert _greedy_key(c, MBPP_LIKE) == _greedy_key(a, MBPP_LIKE)  # auto is one-shot there: one prompt, one attempt
    assert _greedy_key(c, HUMANEVAL_LIKE) == _greedy_key(b, HUMANEVAL_LIKE) != _greedy_key(a, HUMANEVAL_LIKE)


def test_bench_rejects_an_unknown_format_in_one_line(egcfg_cli, tmp_path):
    res = egcfg_cli("bench", "mbpp", "--prompt-format", "few-shot", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "few-shot" in res.stderr
