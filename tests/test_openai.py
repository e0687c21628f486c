"""The openai backend: the top-k guidance rule, against llama-cpp-python's real OpenAI-compatible
server on 127.0.0.1 (started here with the embedded model), and error handling against a fake
server (refused connection, 500s, missing log-probs, a different tokenizer)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from egcfg.guidance import UNLISTED, guided_argmax, log_softmax

EXAMPLE = "examples/second_smallest.json"


from conftest import free_port as _free_port  # noqa: E402,F401  (the server fixture lives in conftest)


# -- the rule -----------------------------------------------------------------------------------
def _topk(n: int, entries: dict[int, float]) -> np.ndarray:
    z = np.full(n, UNLISTED, dtype=np.float32)
    for t, lp in entries.items():
        z[t] = lp
    return z


def test_topk_rule_picks_only_listed_tokens_and_floors_missing_ones():
    sol = _topk(10, {1: -0.1, 2: -2.5})
    dyn = _topk(10, {2: -0.3, 3: -1.4})
    assert guided_argmax(sol, dyn, 0.0, topk=True) == 1 and guided_argmax(sol, dyn, 1.0, topk=True) == 2
    assert guided_argmax(sol, dyn, 0.5, topk=True) == 2  # listed by both
    for gamma in (0.5, 2.0, 3.0, 10.0):  # never a token neither list names (ids 0, 4..9)
        assert guided_argmax(sol, dyn, gamma, topk=True) in (1, 2, 3)
    # Token 3 is missing from p_sol: it gets p_sol's floor, min(smallest listed, log(mass left)),
    # not a deletion (the reference keeps only tokens listed by both, which would force token 2).
    floor = min(-2.5, np.log(1 - np.exp(-0.1) - np.exp(-2.5)))
    scores = {t: -2.0 * s + 3.0 * d for t, (s, d) in {2: (-2.5, -0.3), 3: (floor, -1.4), 1: (-0.1, np.log(
        1 - np.exp(-0.3) - np.exp(-1.4)))}.items()}
    assert guided_argmax(sol, dyn, 3.0, topk=True) == max(scores, key=scores.get)


def test_full_logits_take_the_plain_path():
    rng = np.random.default_rng(0)
    z_sol, z_dyn = rng.normal(size=50).astype(np.float32), rng.normal(size=50).astype(np.float32)
    for gamma in (0.5, 3.0):
        want = int(np.argmax(log_softmax(z_sol) + gamma * (log_softmax(z_dyn) - log_softmax(z_sol))))
        assert guided_argmax(z_sol, z_dyn, gamma) == want


def test_first_lines():
    from egcfg.lm.openai_api import _first_lines

    assert _first_lines("a\nb\nc\nd", 2) == "a\nb\n"
    assert _first_lines("a\nb", 3) == "a\nb"
    assert _first_lines("a\n```\nb\n", 3) == "a\n```"


# -- a real server --------------------------------------------------------------------------------
@pytest.mark.model
def test_server_topk_equals_direct_logsoftmax(server, model):
    """The top-k entries the server returns, mapped back to local token ids, are the direct
    backend's log-softmax at the same position."""
    from egcfg.lm import load_model

    remote = load_model(f"openai:{server}?model=qwen-test")
    prompt = model.tokenize("<|im_start|>user\nWrite add(a, b).<|im_end|>\n<|im_start|>assistant\n```python\ndef add(",
                            special=True)
    with model.session(1) as local:
        direct = log_softmax(local.sync(0, prompt))
    session = remote.session(2)
    session.set_full_logits(True)
    got = session.sync(0, prompt)
    listed = np.flatnonzero(got > UNLISTED / 2)
    assert len(listed) >= remote.k
    assert set(listed[np.argsort(-got[listed])][:3]) == set(np.argsort(-direct)[:3])
    # The same numbers, not close ones: the server runs the same llama.cpp build with the same
    # evaluation settings as the direct backend (flash attention on, one 512-token micro-batch), and
    # llama.cpp computes each output row by itself, so the layout (logits for every prompt position
    # there, the last one here) changes nothing. setup.sh builds llama.cpp for one instruction set,
    # so this holds on any x86-64 host. (With flash attention off on one side, the two differ by up
    # to 0.07 on these top-5 log-probs on one host and 0.3 on another: that was no test.) The only
    # slack is the float32 -> JSON -> float32 round trip of the server's reply.
    np.testing.assert_allclose(got[listed], direct[listed], rtol=0, atol=1e-5)
    # The next position comes from the same draft: no new request when the drafted token is fed.
    before = remote.stats.requests
    nxt = session.step({0: int(np.argmax(got))})[0]
    assert remote.stats.requests == before and (nxt > UNLISTED / 2).sum() >= remote.k
    # argmax-only (gamma 0 or 1): a plain-text draft, each position listing one token.
    session.set_full_logits(False)
    one = session.sync(1, prompt)  # a sequence without a draft (a fork would share seq 0's full one)
    assert (one > UNLISTED / 2).sum() == 1 and int(np.argmax(one)) == int(np.argmax(direct))
    remote.close()


@pytest.mark.model
def test_hf_tokenizer_for_a_server(server, model, model_path):
    """tokenizer=hf:<folder>: a transformers tokenizer passes the check against the server and
    gives the same prompt tokens and pieces as the GGUF vocabulary."""
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    from egcfg.lm import load_model
    from egcfg.lm.hf import _convert

    remote = load_model(f"openai:{server}?model=qwen-test&tokenizer=hf:{_convert(model_path)}")
    assert remote.flavour == "llama-cpp-python"  # the tokenizer check ran and agreed
    text = remote.render_chat([{"role": "user", "content": "Write add(a, b) -> int."}]) + "```python\ndef add("
    ids = remote.tokenize(text, special=True)
    assert ids == model.tokenize(text, special=True)
    assert remote.text(ids) == text  # special tokens written out for the server
    remote.close()


@pytest.mark.model
def test_greedy_through_the_server_matches_direct(server, egcfg_cli):
    out = {}
    for name, extra in (("server", ["--model", f"openai:{server}", "--model-name", "qwen-test"]), ("direct", [])):
        res = egcfg_cli("solve", EXAMPLE, "--gamma", "0", "--json", *extra)
        assert res.returncode in (0, 1), res.stderr[-500:]
        out[name] = json.loads(res.stdout)
    assert out["server"]["code"] == out["direct"]["code"]


@pytest.mark.model
def test_egcfg_through_the_server_solves_with_guidance(server, egcfg_cli):
    res = egcfg_cli("solve", EXAMPLE, "--gamma", "0.5", "--json", "--model", f"openai:{server}",
                    "--model-name", "qwen-test", timeout=900)
    assert res.returncode == 0, res.stderr[-800:]
    result = json.loads(res.stdout)
    assert result["passed"] and result["stats"]["refreshes"] > 0 and result["stats"]["executions"] > 0


@pytest.mark.model
def test_wrong_model_name_is_one_line(server, egcfg_cli):
    res = egcfg_cli("solve", EXAMPLE, "--model", f"openai:{server}", "--model-name", "nope")
    assert res.returncode == 2 and "serves no model 'nope' (it serves: qwen-test)" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


# -- a fake server for failures --------------------------------------------------------------------
class _Fake:
    """A tiny OpenAI-shaped server: lists one model, tokenizes like the embedded model (or not),
    and answers completions per ``mode``."""

    def __init__(self, mode: str, tokens: list[int] | None = None, honour_n: bool = True, ids=(0, 0),
                 tokenize_route: str = "/extras/tokenize"):
        self.mode, self.tokens, self.completions, self.honour_n, self.ids = mode, tokens, 0, honour_n, ids
        self.stream_n: list[int] = []  # the n of each streamed request
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "x"}]})

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == tokenize_route and fake.tokens is not None:
                    return self._send(200, {"tokens": fake.tokens})
                if self.path == "/tokenize":  # llama.cpp's server reads "content" only
                    return self._send(200, {"tokens": []})
                if self.path != "/v1/completions":
                    return self._send(404, {"error": {"message": "no such route"}})
                fake.completions += 1
                if fake.mode == "500":
                    return self._send(500, {"error": {"message": "boom"}})
                if fake.mode == "ok" and body.get("stream"):
                    n = body.get("n", 1)
                    fake.stream_n.append(n)
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    for piece in ("a = 1\n", "b = 2\n", "c = 3\n", "d = 4\n"):
                        for i in range(n if fake.honour_n else 1):
                            chunk = {"id": "c", "object": "text_completion", "created": 0, "model": "fake",
                                     "choices": [{"text": f"{piece[:-1]}{i}\n", "index": i, "logprobs": None,
                                                  "finish_reason": None}]}
                            try:
                                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                                self.wfile.flush()
                            except OSError:  # the client closed the stream early, as it should
                                return
                    try:
                        self.wfile.write(b"data: [DONE]\n\n")
                    except OSError:
                        pass
                    return
                reply = {"id": "c", "object": "text_completion", "created": 0, "model": "fake"}
                if fake.mode == "ok":
                    return self._send(200, {**reply, "choices": [{"text": "x", "index": 0, "finish_reason": "length", "logprobs": {
                        "tokens": ["x"], "token_logprobs": [-0.1], "top_logprobs": [{"x": -0.1, "y": -2.5}],
                        "text_offset": [0]}}]})
                if fake.mode == "content":  # llama.cpp's server: ids and a list per position
                    x, y = fake.ids
                    return self._send(200, {**reply, "choices": [{"text": "x", "index": 0, "finish_reason": "length", "logprobs": {
                        "content": [{"id": x, "token": "x", "logprob": -0.1, "bytes": [120], "top_logprobs": [
                            {"id": x, "token": "x", "logprob": -0.1}, {"id": y, "token": "y", "logprob": -2.5}]}]}}]})
                if fake.mode == "eos":  # stops at once at an end-of-generation token (TGI's finish reason)
                    return self._send(200, {**reply, "choices": [{"text": "", "index": 0, "finish_reason": "eos_token",
                                                                  "logprobs": {"tokens": [], "top_logprobs": [], "token_logprobs": [],
                                                                               "text_offset": []} if body.get("logprobs") else None}]})
                return self._send(200, {"id": "c", "object": "text_completion", "created": 0, "model": "fake",
                                        "choices": [{"text": "x", "index": 0, "logprobs": None, "finish_reason": "length"}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def _one_line_error(res, text):
    assert res.returncode == 2, res.stderr[-500:]
    assert text in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_refused_connection(egcfg_cli):
    res = egcfg_cli("solve", EXAMPLE, "--model", f"openai:http://127.0.0.1:{_free_port()}/v1?retries=0")
    _one_line_error(res, "cannot reach")


def test_server_errors_are_retried_then_reported(egcfg_cli, model):
    fake = _Fake("500", tokens=model.tokenize(__import__("egcfg.lm.openai_api", fromlist=["_PROBE"])._PROBE, special=True))
    try:
        res = egcfg_cli("solve", EXAMPLE, "--model", f"openai:{fake.url}?retries=2")
        _one_line_error(res, "answered 500")
        assert fake.completions == 3  # the first try and two retries (with backoff)
    finally:
        fake.close()


def test_missing_logprobs(egcfg_cli, model):
    from egcfg.lm.openai_api import _PROBE

    fake = _Fake("no-logprobs", tokens=model.tokenize(_PROBE, special=True))
    try:
        _one_line_error(egcfg_cli("solve", EXAMPLE, "--model", f"openai:{fake.url}"), "returned no log-probs")
    finally:
        fake.close()


def test_a_different_tokenizer_is_refused(egcfg_cli):
    fake = _Fake("no-logprobs", tokens=[1, 2, 3])
    try:
        _one_line_error(egcfg_cli("solve", EXAMPLE, "--model", f"openai:{fake.url}"), "does not match the server's model")
    finally:
        fake.close()


@pytest.mark.parametrize("route, honour_n, requests", [
    ("/tokenize", True, [3]),                  # vLLM-like: n choices in one stream
    ("/tokenize", False, [3, 1, 1]),           # n ignored: noticed, one more request per missing choice
    ("/extras/tokenize", False, [1, 1, 1]),    # llama-cpp-python (known to ignore n): one request each
])
def test_candidates_from_n_choices_cut_at_the_horizon(model, route, honour_n, requests):
    """Candidates: streamed choices, each cut after horizon + 1 lines."""
    from egcfg.lm.openai_api import OpenAIModel

    fake = _Fake("ok", tokens=_probe(model), honour_n=honour_n, tokenize_route=route)
    try:
        remote = OpenAIModel(fake.url)
        session = remote.session(5)
        session.sync(0, model.tokenize("def f():\n", special=True))
        got = session.sample_continuations(0, 3, 0.7, 0.95, 1, 64, np.random.default_rng(0))
        assert fake.stream_n == requests
        if honour_n:
            assert got.texts == ["a = 10\nb = 20\n", "a = 11\nb = 21\n", "a = 12\nb = 22\n"]
        else:
            assert got.texts == ["a = 10\nb = 20\n"] * 3
        remote.close()
    finally:
        fake.close()


def _probe(model):
    from egcfg.lm.openai_api import _PROBE

    return model.tokenize(_PROBE, special=True)


def test_a_resynced_sequence_never_reuses_an_old_draft(model):
    """p_dyn re-synced with a new signal of the same length is another sequence: a new request."""
    from egcfg.lm.openai_api import OpenAIModel

    fake = _Fake("ok", tokens=_probe(model))
    try:
        remote = OpenAIModel(fake.url)
        session = remote.session(2)
        a = model.tokenize("def f(x):\n    return 1\n")
        b = list(a)
        b[1] = model.tokenize(" g")[0]
        session.sync(1, a)
        before = fake.completions
        session.sync(1, b)
        assert fake.completions == before + 1
        session.sync(1, b)  # the same sequence again: its draft is still good
        assert fake.completions == before + 1
        session.fork(1, 0)
        session.sync(0, a)  # a fork re-synced to other tokens: a request of its own
        assert fake.completions == before + 2
        remote.close()
    finally:
        fake.close()


def test_llama_cpp_server_shapes(model):
    """llama.cpp's own server: /tokenize reads "content" (an empty list for other bodies is no
    answer), log-probs come as "content" entries with token ids."""
    from egcfg.lm.openai_api import OpenAIModel

    x, y = model.tokenize("x")[0], model.tokenize("y")[0]
    fake = _Fake("content", tokens=_probe(model), ids=(x, y), tokenize_route="/no-such-route")
    try:
        remote = OpenAIModel(fake.url)
        assert remote.flavour == "plain"  # no usable tokenize endpoint: warned, not refused
        session = remote.session(1)
        got = session.sync(0, model.tokenize("def f():\n"))
        assert got[x] == pytest.approx(-0.1) and got[y] == pytest.approx(-2.5)
        assert (got > UNLISTED / 2).sum() == 2
        remote.close()
    finally:
        fake.close()


def test_end_of_generation_without_a_listed_token(model):
    """A server that stops at once (finish reason "eos_token", no tokens) yields the local
    end-of-generation token, not an error."""
    from egcfg.lm.openai_api import OpenAIModel

    fake = _Fake("eos", tokens=_probe(model))
    try:
        with pytest.raises(Exception, match="no log-probs"):
            OpenAIModel(fake.url)  # its log-prob check finds none: refused at start-up
        fake.mode = "ok"
        remote = OpenAIModel(fake.url)
        fake.mode = "eos"
        session = remote.session(1)
        for full in (False, True):
            session.set_full_logits(full)
            session.drop(0)
            got = session.sync(0, model.tokenize("def f():\n    return 1\n"))
            assert model.is_eog(int(np.argmax(got)))
        remote.close()
    finally:
        fake.close()


def test_bad_specs(egcfg_cli):
    _one_line_error(egcfg_cli("solve", EXAMPLE, "--model", "openai:localhost:8000"), "must start with http")
    _one_line_error(egcfg_cli("solve", EXAMPLE, "--model-name", "x"), "--model-name is for --model openai")
    _one_line_error(egcfg_cli("solve", EXAMPLE, "--model", "openai:http://127.0.0.1:1/v1?logprobs=abc"),
                    "not a valid int")
