"""The transformers backend on the embedded model (converted from its GGUF file), on CPU.

Its slot KV cache and attention are ours, so they are checked against transformers' own forward
pass; batching across sessions is checked against running the same sessions one at a time.
"""

import threading

import numpy as np
import pytest

pytest.importorskip("torch", reason="the hf extra is not installed")
pytest.importorskip("transformers", reason="the hf extra is not installed")
import torch  # noqa: E402

from egcfg import Config, task_from_dict  # noqa: E402
from egcfg.engine import Generator  # noqa: E402
from egcfg.errors import EgcfgError  # noqa: E402

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def hf_model(model_path):
    from egcfg.lm import load_model

    m = load_model("hf:embedded?slots=12", n_ctx=2048)
    yield m
    m.close()


def reference(m, ids):
    with torch.inference_mode():
        return m.hf(torch.tensor([ids], device=m.device)).logits[0, -1].float().cpu().numpy()


def prompt_ids(m, text):
    return m.tokenize(m.render_chat([{"role": "user", "content": text}]), special=True)


def test_slot_cache_matches_transformers_forward(hf_model):
    m = hf_model
    ids = prompt_ids(m, "Write a python function add(a, b).")
    with m.session(3) as s:
        np.testing.assert_allclose(s.sync(0, ids), reference(m, ids), atol=2e-3)
        nxt = int(np.argmax(s.sync(0, ids)))
        stepped = s.step({0: nxt})[0]
        np.testing.assert_allclose(stepped, reference(m, ids + [nxt]), atol=2e-3)
        # forks share the prefix and then diverge, in one batched step
        s.fork(0, 1)
        s.fork(0, 2)
        out = s.step({1: 100, 2: 200})
        np.testing.assert_allclose(out[1], reference(m, ids + [nxt, 100]), atol=2e-3)
        np.testing.assert_allclose(out[2], reference(m, ids + [nxt, 200]), atol=2e-3)
        # rewind: a shorter sequence than the one cached, then a different extension
        np.testing.assert_allclose(s.sync(1, ids[:20] + [7, 8, 9]), reference(m, ids[:20] + [7, 8, 9]), atol=2e-3)
        assert s.tokens(1) == ids[:20] + [7, 8, 9]
        assert s.stats.prefilled == len(ids) + 3  # the prompt once, then only the 3 new tokens


def test_sessions_in_threads_are_batched_and_equal_to_sequential(hf_model):
    m = hf_model
    prompts = [prompt_ids(m, f"Write a python function {name}.") for name in ("square(x)", "is_even(n)", "greet(name)")]

    def greedy(ids, n=8):
        with m.session(2) as s:
            logits, out = s.sync(0, ids), []
            for _ in range(n):
                out.append(int(np.argmax(logits)))
                logits = s.step({0: out[-1]})[0]
            return out

    sequential = [greedy(p) for p in prompts]
    rows_before, forwards_before = m.batcher.rows, m.batcher.forwards
    results = [None] * len(prompts)
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, greedy(prompts[i]))) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == sequential
    step_rows = m.batcher.rows - rows_before
    assert step_rows == 3 * 8
    # 24 one-token rows + 3 prefills took fewer forwards than 27: steps of different sessions shared them
    assert m.batcher.forwards - forwards_before < step_rows + 3


def test_tokenizer_agrees_with_llama_cpp(hf_model, model):
    code = 'def f(x):\n    """Docs ünïcode ✓."""\n    return [x ** 2 for x in range(10)]  # 😀\n'
    assert hf_model.tokenize(code) == model.tokenize(code)
    assert b"".join(hf_model.piece(t) for t in hf_model.tokenize(code)).decode() == code
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert hf_model.render_chat(messages) == model.render_chat(messages)
    end = hf_model.tokenize("<|im_end|>", special=True)
    assert len(end) == 1 and hf_model.is_eog(end[0]) and hf_model.piece(end[0]) == b""
    assert len(hf_model.tokenize("<|im_end|>")) > 1  # as plain text, not the control token


def test_engine_gamma0_equals_transformers_greedy(hf_model, sandbox):
    task = task_from_dict({"task_id": "t/clip", "prompt": "Write a function that clips x to [lo, hi].",
                           "entry_point": "clip", "tests": ["assert clip(5, 0, 3) == 3"]})
    gen = Generator(hf_model, task, Config(gammas=(0.0,), max_tokens=40), sandbox)
    try:
        attempt = gen.run(0.0)
    finally:
        gen.close()
    ids = gen.prefix + gen.suffix
    with torch.inference_mode():
        want = hf_model.hf.generate(torch.tensor([ids]), max_new_tokens=len(attempt.tokens), do_sample=False,
                                    attention_mask=torch.ones(1, len(ids), dtype=torch.long))[0, len(ids):].tolist()
    assert attempt.tokens == want


def test_context_limit_and_slots_are_clear_errors(hf_model):
    from egcfg.errors import EgcfgError

    with hf_model.session(1) as s:
        with pytest.raises(EgcfgError, match="context of 2048"):
            s.sync(0, [1] * 2049)
    with pytest.raises(EgcfgError, match="no free KV slots"):
        hf_model.session(13)


@pytest.mark.parametrize("rows", [None, 1])
def test_concurrent_prefills_share_padded_forwards(hf_model, rows):
    m = hf_model
    base = prompt_ids(m, "Write a python function that sorts a list. " * 3)
    long = prompt_ids(m, "Explain this code:\n" + "x = [i * i for i in range(10)]\n" * 60)  # > one 512-token chunk
    prompts = [base[:15], base, long]
    assert len(long) > 512
    barrier = threading.Barrier(len(prompts))
    got = [None] * len(prompts)

    def prefill(i):
        with m.session(1) as s:
            barrier.wait()
            got[i] = s.sync(0, prompts[i])

    m.batcher.prefill_rows = rows  # 1: packing off (the option prefill_rows=1)
    before = m.batcher.forwards
    try:
        threads = [threading.Thread(target=prefill, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        m.batcher.prefill_rows = None
    for ids, logits in zip(prompts, got):
        np.testing.assert_allclose(logits, reference(m, ids), atol=2e-3)
    forwards = m.batcher.forwards - before
    if rows == 1:
        assert forwards == 4  # one per 512-token chunk
    else:
        assert forwards < 4  # 4 chunks in all, padded together where they met


def test_tokenizer_is_safe_across_threads(hf_model):
    text = "<|im_start|>user\nhi<|im_end|>\n" * 20
    want_special, want_plain = hf_model.tokenize(text, special=True), hf_model.tokenize(text)
    assert want_special != want_plain
    bad = []

    def work(special):
        for _ in range(30):
            if hf_model.tokenize(text, special=special) != (want_special if special else want_plain):
                bad.append(special)

    threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_a_closed_model_fails_fast_instead_of_hanging(model_path):
    from egcfg.errors import BackendFailure
    from egcfg.lm import load_model

    m = load_model("hf:embedded?slots=2", n_ctx=256)
    s = m.session(1)
    s.sync(0, [1, 2, 3])
    m.close()
    with pytest.raises(BackendFailure, match="closed"):
        s.step({0: 4})


def test_device_picks_equal_host_picks(hf_model):
    """Greedy, guided (every gamma of the grid and past it) and sampled picks chosen on the device
    (torch_picks.py) are the tokens choice.pick_on_host chooses from the same logits, including the
    full-sort fallback (top_p over the top 1024's mass) and top_p 1; step_pick equals step + pick."""
    from egcfg.choice import Pick, pick_on_host

    m = hf_model
    ids = prompt_ids(m, "Write a function that reverses a list.")
    s = m.session(3)
    try:
        host = {0: s.sync(0, ids), 1: s.sync(1, ids[:-6] + [9, 10, 11])}
        picks = [Pick(0), Pick(1)] + [Pick(0, dyn=1, gamma=g) for g in (0.0, 0.25, 0.5, 1.0, 1.5, 3.0)]
        rng = np.random.default_rng(3)
        for t, p in ((0.7, 0.95), (1.5, 0.95), (1.0, 1.0), (2.0, 0.999), (0.3, 0.5)):
            picks += [Pick(seq, temperature=t, top_p=p, u=float(rng.random())) for seq in (0, 1) for _ in range(6)]
        want = [pick_on_host(host, p) for p in picks]
        assert s.pick(picks) == want
        assert len(set(want[8:])) > 3  # the draws do sample different tokens
        nxt = want[0]
        s.fork(0, 2)
        stepped = s.step_pick({0: nxt}, [Pick(0), Pick(2)])
        assert stepped == [int(np.argmax(reference(m, ids + [nxt]))), want[0]]
    finally:
        s.close()


def test_static_shape_forwards_equal_eager_ones(hf_model):
    """The padding of a CUDA graph's static shape (hf_graphs.py: rows to the scratch slot, tokens
    past a row's length, masked key positions) changes nothing a session reads: the same forwards
    at bucketed shapes (run eagerly here, on CPU) leave the same logits and the same cached K/V."""
    from egcfg.lm.hf_graphs import Graphs, bucket

    m = hf_model
    p1 = prompt_ids(m, "Write a function that reverses a list.")
    p2 = prompt_ids(m, "Write a python function add(a, b) that adds two numbers.")[:37]
    p3 = p1[:5]
    assert bucket(3, 1, 40, m.capacity) == (4, 1, 512) and bucket(2, len(p1), len(p1), m.capacity)[0] == 2
    assert bucket(5000, 1, 10, m.capacity) is None  # too many rows: eager at its own shape
    a, b, c = m.take_slots(3)
    stages = [[(a, 0, p1), (b, 0, p2)], [(c, 0, p3)],
              [(a, len(p1), [5]), (b, len(p2), [6]), (c, len(p3), [7])],
              [(b, len(p2) + 1, [8, 9, 10])]]

    def run(forward):
        m.kv.zero_()
        got = []
        for rows in stages:
            forward(rows)
            got.append(m.next_logits[[slot for slot, _, _ in rows]].clone())
        kv = [m.kv[:, :, s, :, :n].clone() for s, n in ((a, len(p1) + 1), (b, len(p2) + 4), (c, len(p3) + 1))]
        return got, kv

    try:
        graphs = Graphs(m, capture=False)
        want, want_kv = run(m.forward_eager)
        got, got_kv = run(graphs.run)
        assert graphs.eager == len(stages)  # each at its bucketed shape, none captured on CPU
        exact = m.dtype == torch.float32  # (on CPU; bf16 kernels on a GPU differ by shape)
        for x, y in zip(want + want_kv, got + got_kv):
            torch.testing.assert_close(y, x, atol=2e-4 if exact else 0.25, rtol=1e-4 if exact else 0.02)
        for x, y in zip(want, got):
            assert (x.argmax(-1) == y.argmax(-1)).all()
    finally:
        m.give_slots([a, b, c])


def test_graph_option_errors(model_path):
    from egcfg.errors import EgcfgError
    from egcfg.lm import load_model

    with pytest.raises(EgcfgError, match="must be on or off"):
        load_model("hf:embedded?graphs=yes", n_ctx=256)
    for bad in ("yes", "0", "-1"):
        with pytest.raises(EgcfgError, match="must be on, off or a number of servers"):
            load_model(f"hf:embedded?server={bad}", n_ctx=256)
    if not torch.cuda.is_available():
        with pytest.raises(EgcfgError, match="needs a CUDA device"):
            load_model("hf:embedded?graphs=on", n_ctx=256)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_replays_equal_eager_forwards(model_path):
    """On a GPU: forwards replayed from captured graphs leave the logits the eager forward leaves
    at the same static shape (bf16: the same kernels, so equal to rounding)."""
    from egcfg.lm import load_model
    from egcfg.lm.hf_graphs import Graphs

    m = load_model("hf:embedded?slots=8&graphs=on", n_ctx=1024)
    try:
        rng = np.random.default_rng(0)
        rows = [(s, 0, rng.integers(0, 1000, 40 + 7 * s).tolist()) for s in range(5)]
        step = [(s, 40 + 7 * s, [int(rng.integers(0, 1000))]) for s in range(5)]
        eager = Graphs(m, capture=False)
        eager.run(rows)
        eager.run(step)
        want = m.next_logits[:5].clone()
        for _ in range(3):  # seen once: eager; twice: captured; then replayed
            m.graphs.run(rows)
            m.graphs.run(step)
            torch.testing.assert_close(m.next_logits[:5], want, atol=0.05, rtol=0.01)
        assert m.graphs.captures == 2 and m.graphs.replays == 2
        assert (m.next_logits[:5].argmax(-1) == want.argmax(-1)).all()
    finally:
        m.close()


def test_candidates_stepped_by_the_batcher_equal_the_session_driven_loop(hf_model):
    """sample_forks: the batcher forks and steps a refresh's candidates itself (one round trip).
    Same texts, token count and generator state after as the loop driven from the session one
    token at a time (candidates.sample_on_host), for several sessions sampling at once; and a
    candidate that would pass the context is the same clear error."""
    from egcfg.candidates import sample_continuations, sample_on_host

    m = hf_model
    prompts = [prompt_ids(m, f"Write a python function {name}.") + m.tokenize("```python\ndef ")
               for name in ("square(x)", "is_even(n)", "greet(name)")]

    def sample(ids, driver, seed):
        rng = np.random.default_rng(seed)
        with m.session(4) as s:
            s.sync(0, ids, fetch=False)
            out = driver(m, s, 0, [1, 2, 3], 1.3, 0.95, 1, 40, rng)
            assert s.tokens(1) == [] and s.tokens(0) == ids  # the forks are gone, the base as it was
            return out.texts, out.tokens, rng.random()

    on_host = [sample(p, sample_on_host, i) for i, p in enumerate(prompts)]
    assert any(len(set(texts)) > 1 for texts, _, _ in on_host)  # (a real sample: candidates differ)
    forwards = m.batcher.forwards
    results = [None] * len(prompts)
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, sample(prompts[i], sample_continuations, i)))
               for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == on_host
    # the three sessions' candidates shared forwards
    assert m.batcher.forwards - forwards < sum(tokens for _, tokens, _ in on_host) // 3
    with m.session(2) as s:
        s.sync(0, list(range(100, 100 + m.n_ctx - 2)), fetch=False)
        with pytest.raises(EgcfgError, match="exceed the model context"):
            sample_continuations(m, s, 0, [1], 0.9, 0.95, 8, 40, np.random.default_rng(0))


def test_candidates_sampled_in_a_model_server_hand_the_generator_back(hf_model):
    """Through the model server (hf_server.py) the candidates' generator travels pickled and its
    state comes back with the texts: two refreshes in a row draw what the session-driven loop
    draws in this process, and the generator ends in the same state."""
    import multiprocessing

    from egcfg.candidates import sample_continuations, sample_on_host
    from egcfg.lm import hf_server

    m = hf_model
    ids = prompt_ids(m, "Write a python function square(x).") + m.tokenize("```python\ndef ")

    def two_refreshes(model, driver):
        rng = np.random.default_rng(7)
        with model.session(4) as s:
            s.sync(0, ids, fetch=False)
            texts = [driver(model, s, 0, [1, 2, 3], 1.3, 0.95, 1, 24, rng).texts for _ in range(2)]
        return texts, rng.random()

    expected = two_refreshes(m, sample_on_host)
    proc, conns = hf_server.start(multiprocessing.get_context("spawn"), "hf:embedded?slots=8", {"n_ctx": 2048}, 1, None)
    try:
        remote = hf_server.RemoteModel(conns[0])
        assert remote.batcher_candidates
        assert two_refreshes(remote, sample_continuations) == expected
        remote.close()
    finally:
        hf_server.stop(proc)


def _decode_lines(m, name, rule_args, decode, lines=3):
    """A few lines of one attempt, as the engine decodes them (SOL caught up where it lags; each
    line guided again as if refreshed), through ``decode``; what came out and the state after."""
    from egcfg.decoding import DYN, SOL, Line, Rule

    sol = prompt_ids(m, f"Write a python function {name}.") + m.tokenize("```python\ndef ")
    dyn = prompt_ids(m, f"Write a python function {name}. It returns None.") + m.tokenize("```python\ndef ")
    guided = rule_args.get("guided", False)
    rule = Rule(**rule_args, rng=np.random.default_rng(3) if rule_args.get("temperature") else None)
    out, generated, first = [], [], None
    with m.session(2) as s:
        s.sync(SOL, sol, fetch=False)
        if guided:
            s.sync(DYN, dyn, fetch=False)
        for _ in range(lines):
            if first is None and rule.needs_sol():
                s.sync(SOL, sol + generated, fetch=False)
                rule.stale = False
            rule.guided = guided
            line = Line(m, rule, first, limit=24)
            decode(s, line)
            out.append((line.tokens, line.next, dict(line.fed), line.steps))
            generated += [t for t in line.tokens if not m.is_eog(t)]
            first = line.next
        out.append((s.tokens(SOL), s.tokens(DYN), rule.guided, rule.stale, rule.rng.random() if rule.rng else None))
    return out


LINE_RULES = [("square(x)", {"gamma": 0.5, "guided": True}), ("is_even(n)", {"gamma": 1.0, "guided": True}),
              ("greet(name)", {"gamma": 0.0, "temperature": 1.2, "top_p": 0.95}), ("cube(x)", {"gamma": 0.0})]


def test_lines_stepped_by_the_batcher_equal_the_session_driven_loop(hf_model):
    """decode_line: the batcher steps a whole line itself (one round trip per line). Same tokens,
    next token, branches fed, session state and generator state as the loop driven from the
    session one token at a time (decoding.decode_on_host), for four sessions at once (guided at
    gamma 0.5 and 1, the sampling control, greedy); and a line that would pass the context is the
    same clear error."""
    from egcfg.decoding import SOL, Line, Rule, decode_on_host

    m = hf_model
    on_host = [_decode_lines(m, name, args, decode_on_host) for name, args in LINE_RULES]
    assert all(any(fed[1] for _, _, fed, _ in r[:-1]) for r in on_host[:2])  # (DYN was fed where guided)
    served = m.batcher.requests["line"]
    results = [None] * len(LINE_RULES)
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, _decode_lines(m, *LINE_RULES[i], lambda s, line: s.decode_line(line)))) for i in range(len(LINE_RULES))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == on_host
    assert m.batcher.requests["line"] - served == 3 * len(LINE_RULES)  # one request per line
    with m.session(2) as s:
        s.sync(SOL, list(range(100, 100 + m.n_ctx - 2)), fetch=False)
        with pytest.raises(EgcfgError, match="exceed the model context"):
            s.decode_line(Line(m, Rule(0.0), None, limit=8))


def test_lines_decoded_in_a_model_server_hand_the_rule_back(hf_model):
    """Through the model server the line's rule travels pickled, generator included, and comes
    back with its state: the sampling control and a gamma 1 line (SOL left behind) decode what
    they decode in this process, and end in the same state."""
    import multiprocessing

    from egcfg.decoding import decode_on_host
    from egcfg.lm import hf_server

    m = hf_model
    rules = [LINE_RULES[1], LINE_RULES[2]]
    expected = [_decode_lines(m, name, args, decode_on_host) for name, args in rules]
    proc, conns = hf_server.start(multiprocessing.get_context("spawn"), "hf:embedded?slots=8", {"n_ctx": 2048}, 1, None)
    try:
        remote = hf_server.RemoteModel(conns[0])
        assert remote.batcher_lines
        assert [_decode_lines(remote, name, args, lambda s, line: s.decode_line(line)) for name, args in rules] == expected
        remote.close()
    finally:
        hf_server.stop(proc)


def test_copy_slots_fork_into_runs_and_gaps_alike(hf_model):
    m = hf_model
    m.give_slots(m.take_slots(5))
    taken = m.take_slots(5)  # (a batch just given back comes back as an ascending run)
    try:
        assert taken == sorted(taken)
        src, dsts = taken[0], [taken[4], taken[1], taken[2]]  # a run of two, and one apart
        with torch.inference_mode():
            m.kv[:, :, src, :, :40] = torch.randn_like(m.kv[:, :, src, :, :40])
            m.next_logits[src] = torch.randn_like(m.next_logits[src])
            m.kv[:, :, taken[3]] = 0
        m.copy_slots(src, dsts, 40)
        for d in dsts:
            assert torch.equal(m.kv[:, :, d, :, :40], m.kv[:, :, src, :, :40])
            assert torch.equal(m.next_logits[d], m.next_logits[src])
        assert not m.kv[:, :, taken[3]].any()  # the gap is untouched
    finally:
        m.give_slots(taken)
    again = m.take_slots(5)
    m.give_slots(again)
    assert again == sorted(taken)  # given back, they come back as the same run
