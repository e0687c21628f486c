"""The backend contract of lm/base.py, one test for every backend on this machine: the scripted fake,
llama.cpp with the embedded model, transformers (when installed) and the openai backend against
llama-cpp-python's real server. What the engine relies on, and nothing backend-specific."""

import numpy as np
import pytest

from egcfg.lm.base import UNLISTED, Capabilities
from fakes import ScriptedModel

TEXT = "def add(a, b):\n    return a + b\n"
BACKENDS = ["scripted", "llama.cpp", "hf", "openai"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    name = request.param
    if name == "scripted":
        yield ScriptedModel(["\n", "    return", " a", " +", " b", "\n", "```"])
        return
    from egcfg.lm import load_model

    request.getfixturevalue("model_path")  # the embedded model, fetched and verified
    if name == "llama.cpp":
        spec = "embedded"
    elif name == "hf":
        pytest.importorskip("transformers", reason="the hf extra is not installed")
        spec = "hf:embedded?slots=8"
    else:
        spec = f"{request.getfixturevalue('server')}"
        spec = f"openai:{spec}?model=qwen-test"
    model = load_model(spec, n_ctx=2048)
    yield model
    model.close()


def _listed(z: np.ndarray) -> np.ndarray:
    return np.flatnonzero(z > UNLISTED / 2)


def test_tokenizer_round_trip(backend):
    ids = backend.tokenize(TEXT)
    assert ids and all(isinstance(t, int) and 0 <= t < backend.n_vocab for t in ids)
    assert b"".join(backend.piece(t) for t in ids) == TEXT.encode()
    chat = backend.render_chat([{"role": "user", "content": "Hello there"}])
    assert isinstance(chat, str) and "Hello there" in chat


def test_capabilities_are_declared_and_honoured(backend):
    caps = backend.capabilities
    assert isinstance(caps, Capabilities)
    session = backend.session(4)
    try:
        for flag, op in (("samples", "sample_continuations"), ("partial_logits", "set_full_logits"),
                         ("refines", "refine")):
            if getattr(caps, flag):
                assert callable(getattr(session, op, None)), f"{flag} declared, {op} missing"
    finally:
        session.close()


def test_sync_step_fork_drop(backend):
    ids = backend.tokenize(TEXT)
    session = backend.session(4)
    try:
        first = session.sync(0, ids[:-2])
        assert first.shape == (backend.n_vocab,)
        if not backend.capabilities.full_vocab:
            assert len(_listed(first)) >= 1  # a top-k row: listed tokens, the rest UNLISTED
        assert session.tokens(0) == ids[:-2]
        # The same tokens again: the same distribution (nothing re-run or re-sampled).
        np.testing.assert_array_equal(session.sync(0, ids[:-2]), first)
        # step appends one token to several sequences at once and returns each one's next-token array.
        session.fork(0, 1)
        assert session.tokens(1) == ids[:-2]
        nxt = int(np.argmax(first))
        out = session.step({0: nxt, 1: ids[-2]})
        assert set(out) == {0, 1} and all(a.shape == (backend.n_vocab,) for a in out.values())
        assert session.tokens(0) == ids[:-2] + [nxt] and session.tokens(1) == ids[:-1]
        # A stepped sequence and a sequence synced to the same tokens agree on what comes next.
        again = session.sync(2, ids[:-1])
        assert int(np.argmax(again)) == int(np.argmax(out[1]))
        # Rewind and extend: a shorter sequence than the one cached, then other tokens.
        session.sync(1, ids[:3] + ids[5:7])
        assert session.tokens(1) == ids[:3] + ids[5:7]
        session.drop(1)
        assert session.tokens(1) == []
        assert session.stats.prefilled >= len(ids) - 2 and session.stats.decoded >= 2
    finally:
        session.close()


def test_end_of_generation_is_known(backend):
    eos = backend.eos_id()
    assert eos is not None and backend.is_eog(eos)
    assert not backend.is_eog(backend.tokenize("x")[0])
