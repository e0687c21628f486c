"""EG-CFG over an OpenAI-compatible ``/v1/completions`` server (vLLM, SGLang, llama.cpp, hosted APIs).

Such a server gives no KV cache to fork and no full logits: it gives, per generated token, the
top-k log-probs (``logprobs=k``). This backend keeps the engine's session interface anyway:

* Each sequence is a token list kept here; ``fork``/``drop`` are bookkeeping. Every request sends
  the whole prompt text, so requests of one solve share their longest prefix and a server's prefix
  cache (vLLM, SGLang, llama.cpp) reuses it.
* ``sync``/``step`` return a full-vocabulary array holding the server's top-k log-probs and
  ``guidance.UNLISTED`` elsewhere; ``guidance`` applies the rule over the union of the two lists
  with a floor for missing entries (see ``guidance.topk_guided_argmax``).
* Drafting: one request asks for a greedy continuation of ``draft`` tokens with top-k log-probs at
  every position. As long as the engine then feeds exactly the drafted tokens (guided and greedy
  choices mostly agree), the next positions' log-probs are already here: a whole line often costs
  one request per branch instead of one per token. At gamma = 1 the engine needs p_dyn alone.
  The draft length doubles while drafts are used up and falls back when one is cut short.
* Candidates come from the server's sampler (``sample_continuations``): one streamed request with
  ``n`` choices, closed as soon as every choice holds the wanted number of lines; a server that
  ignores ``n`` gets one more request (own seed) per missing choice.

Tokens: the engine works in token ids of a local tokenizer (``tokenizer=``; default the embedded
model's). Prompts go to the server as text (not every server takes token ids); the top-k entries
come back keyed by token text and are mapped back through the local vocabulary (entries that map
to no single local token are dropped and counted). At start-up the local tokenizer is checked
against the server's own ``/tokenize`` (vLLM, SGLang, llama.cpp) or ``/extras/tokenize``
(llama-cpp-python) where the server has one, and refused if they disagree.

HTTP: the official ``openai`` client (connection pooling, timeouts, retries with exponential
backoff on connection errors, 408/429/5xx).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import BackendFailure, EgcfgError
from .base import UNLISTED, Capabilities, ModelLifetime, Sampled, TrackedSession, UsesTokenizer, common_prefix

log = logging.getLogger(__name__)

_PROBE = "def f(x):\n    return [x * 2 for x in range(10)]  # ok\n"


@dataclass
class _Draft:
    """A greedy continuation of a sequence as the server wrote it, with its top-k at each position."""

    @property
    def start(self) -> int:
        return len(self.prefix)

    prefix: tuple[int, ...]         # the sequence it continues
    full: bool                      # with top-k log-probs (else each position lists its argmax only)
    tokens: list[int]               # drafted token ids (cut at the first one no local token matches)
    dists: list[np.ndarray]         # dists[j]: next-token log-probs after tokens[:j]


@dataclass
class RemoteStats:
    requests: int = 0
    unmapped: int = 0               # top-k entries whose text is no single local token
    draft_hits: int = 0             # positions answered from a draft, no request


class OpenAIModel(UsesTokenizer, ModelLifetime):
    """A model behind an OpenAI-compatible completions endpoint, with a local tokenizer."""

    # fork/rewind are bookkeeping only (the server keeps no state for us); next-token arrays hold a
    # server's top-k, not the whole vocabulary: guidance applies its top-k rule to them.
    capabilities = Capabilities(full_vocab=False, samples=True, partial_logits=True, refines=True)

    def __init__(self, base_url: str, model: str | None = None, tokenizer: str | None = None,
                 logprobs: int = 5, draft: int = 16, concurrency: int = 8, timeout: float = 120.0,
                 retries: int = 3, api_key_env: str | None = None, n_ctx: int = 8192, **_ignored):
        try:
            import openai
        except ImportError:
            raise EgcfgError("the openai backend needs the openai package: pip install 'egcfg[openai]'") from None
        if not base_url.startswith(("http://", "https://")):
            raise EgcfgError(f"openai: base URL must start with http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        key_env = api_key_env or ("EGCFG_API_KEY" if os.environ.get("EGCFG_API_KEY") else "OPENAI_API_KEY")
        self._client = openai.OpenAI(base_url=self.base_url, api_key=os.environ.get(key_env) or "none",
                                     timeout=timeout, max_retries=int(retries))
        self._openai = openai
        self.k = int(logprobs)
        self.draft = int(draft)
        self.n_ctx = n_ctx
        self.stats = RemoteStats()
        self._stats_lock = threading.Lock()
        self._gate = threading.BoundedSemaphore(int(concurrency))  # requests in flight, all sessions
        self._pool = ThreadPoolExecutor(int(concurrency), thread_name_prefix="egcfg-http")
        try:
            self._start(model, tokenizer)
        except BaseException:  # a failed start-up check leaves no client, pool or tokenizer behind
            self.close()
            raise

    def _start(self, model: str | None, tokenizer: str | None) -> None:
        self.served = self._pick_model(model)
        self.name = self.served
        self.tok = _local_tokenizer(tokenizer)
        self.n_vocab = self.tok.n_vocab
        self._by_text = self._text_table()
        self._eos = next((t for t in (self.tok.eos_id(),) if t is not None and self.tok.is_eog(t)), None)
        self._bos = self.tok.bos_id()
        self.flavour = self._check_tokenizer()
        # llama-cpp-python's sampler defaults (repeat penalty 1.1, top-k 40, min-p 0.05) would make its
        # "greedy" draft differ from the argmax of the log-probs it returns; other servers default to none.
        self._extra = {"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0} if self.flavour == "llama-cpp-python" else {}
        # llama-cpp-python's server runs one request at a time and keeps only the last prompt's
        # cache: there, requests go one by one, the one sharing most with the last prompt first
        # (p_sol and p_dyn differ from the signal on, so each switch re-reads the rest).
        self.serial = self.flavour == "llama-cpp-python"
        self._n_choices: bool | None = False if self.serial else None  # does the server honour n? (None: unknown)
        self._last_prompt: list[int] = []
        self._check_logprobs()

    # -- start-up checks ---------------------------------------------------------------------------
    def _call(self, what: str, fn, *args, gated: bool = True, **kwargs):
        """One API call with the client's retries; failures become one clear line. ``gated``: count
        it against ``concurrency`` here (a caller that holds the gate itself passes False)."""
        o = self._openai
        try:
            if not gated:
                return fn(*args, **kwargs)
            with self._gate:
                return fn(*args, **kwargs)
        except o.APIConnectionError as exc:  # includes timeouts, after the retries
            raise BackendFailure(f"openai: cannot reach {self.base_url} ({what}): {_short(exc)}") from None
        except o.AuthenticationError:
            raise EgcfgError(f"openai: {self.base_url} refused the API key (set EGCFG_API_KEY or OPENAI_API_KEY)") from None
        except o.BadRequestError as exc:  # this request (e.g. a prompt past the context): the attempt fails, not the run
            raise EgcfgError(f"openai: {self.base_url} rejected a request ({what}): {_short(exc)}") from None
        except o.NotFoundError as exc:
            raise EgcfgError(f"openai: {self.base_url} ({what}): not found: {_short(exc)}") from None
        except o.APIStatusError as exc:
            raise BackendFailure(f"openai: {self.base_url} ({what}) answered {exc.status_code}: {_short(exc)}") from None

    def _pick_model(self, wanted: str | None) -> str:
        models = [m.id for m in self._call("list models", self._client.models.list).data]
        if wanted:
            if models and wanted not in models:
                raise EgcfgError(f"openai: {self.base_url} serves no model {wanted!r} (it serves: {', '.join(models)})")
            return wanted
        if len(models) != 1:
            raise EgcfgError(f"openai: {self.base_url} serves {len(models)} models; name one with --model-name "
                             f"({', '.join(models) or 'none listed'})")
        return models[0]

    def _check_tokenizer(self) -> str:
        """Compare the local tokenizer with the server's on a probe text; returns the server flavour."""
        import httpx

        root = self.base_url[: -len("/v1")]
        local = self.tok.tokenize(_PROBE, special=True)
        for flavour, url, body, key in (
                ("llama-cpp-python", f"{root}/extras/tokenize", {"input": _PROBE, "model": self.served}, "tokens"),
                ("tokenize", f"{root}/tokenize", {"content": _PROBE}, "tokens"),  # llama.cpp's own server
                ("tokenize", f"{root}/tokenize", {"prompt": _PROBE, "model": self.served, "add_special_tokens": False}, "tokens")):
            try:
                reply = httpx.post(url, json=body, timeout=30, headers={"Authorization": f"Bearer {self._client.api_key}"})
            except httpx.HTTPError:
                continue
            if reply.status_code != 200:
                continue
            try:
                remote = [int(t) for t in reply.json()[key]]
            except (ValueError, KeyError, TypeError):
                continue
            if not remote:  # e.g. llama.cpp's server answering a body it does not read
                continue
            if remote[:1] == [self._bos] and local[:1] != [self._bos]:
                remote = remote[1:]  # the server adds its BOS (llama-cpp-python tokenizes with add_bos)
            if remote != local:
                raise EgcfgError(f"openai: the local tokenizer ({self.tok.name}) does not match the server's model "
                                 f"{self.served!r}; pass the model's own with tokenizer=<gguf file or hf:folder>")
            return flavour
        log.warning("openai: %s has no tokenize endpoint: cannot check that the local tokenizer (%s) matches %r",
                    self.base_url, self.tok.name, self.served)
        return "plain"

    def _check_logprobs(self) -> None:
        reply = self._complete("check log-probs", prompt="def add(a, b):\n", max_tokens=1)
        rows = _logprob_rows(reply.choices[0].logprobs) if reply.choices else None
        if not rows or not rows[0][1]:
            hint = " (llama-cpp-python: start it with --logits_all true)" if self.flavour == "llama-cpp-python" else ""
            raise EgcfgError(f"openai: {self.base_url} returned no log-probs for {self.served!r}; EG-CFG needs them{hint}")

    # -- tokens ------------------------------------------------------------------------------------
    def _text_table(self) -> dict[str, int]:
        """Token text -> local id, for reading top-k entries (first id wins; specials by their text)."""
        table: dict[str, int] = {}
        for t in range(self.tok.n_vocab):
            piece = self.tok.piece(t)
            if not piece:  # a special token: servers that list it write its text (e.g. "<|im_end|>")
                special = self.tok.special_text(t)
                if special:
                    table.setdefault(special, t)
                continue
            try:
                text = piece.decode("utf-8")
            except UnicodeDecodeError:
                continue  # a partial character: servers render these differently, no safe mapping
            table.setdefault(text, t)
        return table

    def _token_of(self, text: str | int) -> int | None:
        if isinstance(text, int):  # servers that give ids (llama.cpp's "id")
            return text if 0 <= text < self.n_vocab else None
        if text.startswith("token_id:"):  # vLLM with return_tokens_as_token_ids
            try:
                return int(text[len("token_id:"):])
            except ValueError:
                return None
        return self._by_text.get(text)

    def text(self, tokens: Sequence[int]) -> str:
        """Prompt text of a token list; special tokens are written out so the server parses them back."""
        out = bytearray()
        if self._bos is not None and list(tokens[:1]) == [self._bos]:
            tokens = tokens[1:]  # servers add their own BOS to a text prompt
        for t in tokens:
            out += self.tok.piece(t) or self.tok.special_text(t).encode("utf-8")
        return out.decode("utf-8", "replace")

    def describe(self) -> dict:
        return {"backend": "openai", "base_url": self.base_url, "model": self.served, "tokenizer": self.tok.name,
                "server": self.flavour, "top_logprobs": self.k, "draft": self.draft, "requests": self.stats.requests,
                "draft_hits": self.stats.draft_hits, "unmapped_entries": self.stats.unmapped}

    def session(self, n_seqs: int) -> "OpenAISession":
        return OpenAISession(self, n_seqs)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()
        tok = getattr(self, "tok", None)
        if hasattr(tok, "close"):
            tok.close()

    # -- requests ----------------------------------------------------------------------------------
    def _complete(self, what: str, **kwargs):
        with self._stats_lock:
            self.stats.requests += 1
        kwargs.setdefault("logprobs", self.k)
        start = time.perf_counter()
        reply = self._call(what, self._client.completions.create, model=self.served,
                           extra_body=self._extra or None, **kwargs)
        log.debug("openai %s: %d prompt chars, max_tokens %s, logprobs %s: %.2f s", what, len(kwargs.get("prompt", "")),
                  kwargs.get("max_tokens"), kwargs.get("logprobs"), time.perf_counter() - start)
        return reply

    def _dist(self, top: dict | None) -> np.ndarray:
        z = np.full(self.n_vocab, UNLISTED, dtype=np.float32)
        for text, lp in (top or {}).items():
            t = self._token_of(text)
            if t is None or lp is None or not np.isfinite(lp):
                with self._stats_lock:
                    self.stats.unmapped += 1
                continue
            z[t] = max(z[t], float(lp), UNLISTED / 4)  # several texts can name one token: keep the likelier
        return z

    def _one_hot(self, token: int) -> np.ndarray:
        """A next-token array that lists one token (log-prob 0): what the server chose, no more."""
        z = np.full(self.n_vocab, UNLISTED, dtype=np.float32)
        z[token] = 0.0
        return z

    def _room(self, tokens: Sequence[int], wanted: int) -> int:
        """Tokens a request may ask for: servers refuse prompt + max_tokens past their context."""
        return max(1, min(wanted, self.n_ctx - len(tokens)))

    def draft_from(self, tokens: Sequence[int], length: int, full: bool) -> _Draft:
        """A greedy continuation of ``tokens``: with top-k log-probs at each of its positions if
        ``full``, else as plain text, tokenized here, each position listing only the token written
        (its argmax). Log-probs can be expensive: llama-cpp-python's server sorts the whole
        vocabulary in Python for every token that has them (~0.4 s per token on 2 cores)."""
        self._last_prompt = list(tokens)
        reply = self._complete("draft", prompt=self.text(tokens), max_tokens=self._room(tokens, length),
                               temperature=0.0, logprobs=self.k if full else None)
        if not reply.choices:
            raise BackendFailure(f"openai: {self.base_url} answered a completion without choices")
        choice = reply.choices[0]
        ids: list[int] = []
        dists: list[np.ndarray] = []
        if full:
            rows = _logprob_rows(choice.logprobs)
            if rows is None:
                raise BackendFailure(f"openai: {self.base_url} stopped returning log-probs")
            for text, top in rows:
                dists.append(self._dist(top))
                t = self._token_of(text)
                if t is None:  # no local token for what the server wrote: the draft ends here
                    return _Draft(tuple(tokens), full, ids, dists)
                ids.append(t)
                if self.tok.is_eog(t):
                    return _Draft(tuple(tokens), full, ids, dists)
        else:
            text = choice.text or ""
            for t in self._tokens_of_text(text):
                dists.append(self._one_hot(t))
                ids.append(t)
        # Fewer tokens than asked and not cut by length: the server stopped at an end-of-generation
        # token, which it does not list (llama-cpp-python; "stop", "eos", "eos_token" by server).
        # Say so with a list of that one token.
        stopped = choice.finish_reason not in ("length", None) or not dists
        if stopped and self._eos is not None and (not ids or not self.tok.is_eog(ids[-1])):
            dists.append(self._one_hot(self._eos))
        return _Draft(tuple(tokens), full, ids, dists)

    def _tokens_of_text(self, text: str) -> list[int]:
        """Local tokens of a continuation written as text. Tokenized after a newline, because
        SentencePiece vocabularies prepend a space at the start of a text; cut where the tokens
        stop spelling the text (the draft then ends early: safe)."""
        want = text.encode("utf-8")
        lead = self.tok.tokenize("\n")
        ids = self.tok.tokenize("\n" + text)
        ids = ids[len(lead):] if ids[:len(lead)] == lead else self.tok.tokenize(text)
        out, at = [], 0
        for t in ids:
            piece = self.tok.piece(t)
            if not piece or want[at:at + len(piece)] != piece:
                break
            out.append(t)
            at += len(piece)
        return out

    def each(self, fn, items: list, key=None) -> list:
        """``fn`` over ``items``: in parallel, or for a serial server one by one, starting with the
        item whose tokens (``key``) share the longest prefix with the last prompt it read."""
        if not self.serial:
            return list(self._pool.map(fn, items))
        if key is not None:
            order = sorted(range(len(items)), key=lambda i: -common_prefix(key(items[i]), self._last_prompt))
        else:
            order = range(len(items))
        out = [None] * len(items)
        for i in order:
            out[i] = fn(items[i])
        return out

    def sample_lines(self, tokens: Sequence[int], n: int, lines: int, max_tokens: int, temperature: float,
                     top_p: float, seed: int) -> tuple[list[str], int]:
        """Up to ``n`` sampled continuations from one streamed request (``n`` choices), closed once
        every choice holds ``lines`` newlines (or a code fence) or has finished. A server that
        ignores ``n`` (llama-cpp-python) returns one; that is noticed (only index 0 after a few
        chunks) and remembered. Returns (texts, chunks received)."""
        import httpx

        self._last_prompt = list(tokens)
        with self._stats_lock:
            self.stats.requests += 1
        if self._n_choices is False:
            n = 1
        texts: dict[int, str] = {}
        finished: set[int] = set()
        received = 0
        extra = dict(self._extra)  # temperature and top-p only, as the local sampler (candidates.py)
        with self._gate:  # a stream counts against `concurrency` until it is closed
            stream = self._call("sample", self._client.completions.create, gated=False, model=self.served,
                                prompt=self.text(tokens), max_tokens=self._room(tokens, max_tokens),
                                temperature=temperature, top_p=top_p, seed=seed, stream=True,
                                extra_body=extra or None, **({"n": n} if n > 1 else {}))
            try:
                for chunk in stream:
                    for choice in chunk.choices or ():
                        text = texts.get(choice.index, "") + (choice.text or "")
                        texts[choice.index] = text
                        received += 1
                        if choice.finish_reason or text.count("\n") >= lines or "```" in text:
                            finished.add(choice.index)
                    if n > 1 and self._n_choices is None and received >= 4 * n and set(texts) == {0}:
                        self._n_choices = False  # only one choice comes: the server ignores n
                        n = 1
                    if len(finished) >= n:
                        break
            except (self._openai.APIError, httpx.HTTPError) as exc:
                raise BackendFailure(f"openai: {self.base_url} broke off a stream: {_short(exc)}") from None
            finally:
                stream.close()  # the server stops generating when the client goes
        if n > 1 and self._n_choices is None and len(texts) > 1:
            self._n_choices = True
        return [texts[i] for i in sorted(texts)][:n], received


class OpenAISession(TrackedSession):
    """Sequences as token lists; next-token log-probs from drafts, requested when a draft runs out."""

    def __init__(self, model: OpenAIModel, n_seqs: int):
        super().__init__(model.n_ctx)
        self.model = model
        self.n_seqs = n_seqs
        self._drafts: dict[int, _Draft] = {}
        self._length: dict[int, int] = {}
        self.full_logits = True

    _topk = True  # next-token arrays are the server's top-k lists (choice.pick_on_host)

    def _refine_hook(self):
        return self.refine

    def _cached(self, seq: int) -> np.ndarray | None:
        draft, toks = self._drafts.get(seq), self._tokens[seq]
        if draft is None or len(toks) < draft.start or (self.full_logits and not draft.full):
            return None
        j = len(toks) - draft.start
        # Valid only for the very sequence it continues (a re-synced p_dyn with a new signal of
        # the same length is another sequence) followed by the drafted tokens.
        if j < len(draft.dists) and toks[draft.start:] == draft.tokens[:j] and tuple(toks[:draft.start]) == draft.prefix:
            return draft.dists[j]
        return None

    def _request(self, seqs: list[int]) -> None:
        m = self.model

        def one(seq: int) -> tuple[int, _Draft]:
            old = self._drafts.get(seq)
            # Drafts used up -> longer ones; a draft cut short by a different choice -> short again.
            used_up = old is not None and len(self._tokens[seq]) - old.start >= len(old.dists)
            length = min(self._length.get(seq, m.draft) * 2, 256) if used_up else m.draft
            self._length[seq] = length
            return seq, m.draft_from(self._tokens[seq], length, self.full_logits)

        results = m.each(one, seqs, key=lambda seq: self._tokens[seq])
        for seq, draft in results:
            self._drafts[seq] = draft
            self.stats.prefilled += draft.start
            self.stats.decoded += len(draft.tokens)
            self.stats.batches += 1

    def _next(self, seqs: list[int]) -> dict[int, np.ndarray]:
        out, missing = {}, []
        for seq in seqs:
            dist = self._cached(seq)
            if dist is None:
                missing.append(seq)
            else:
                out[seq] = dist
        with self.model._stats_lock:
            self.model.stats.draft_hits += len(out)
        if missing:
            self._request(missing)
            for seq in missing:
                dist = self._cached(seq)
                if dist is None:
                    raise BackendFailure(f"openai: {self.model.base_url} returned no tokens for a completion")
                out[seq] = dist
        return out

    def set_full_logits(self, full: bool) -> None:
        """False: only argmaxes of what sync/step return are used (gamma 0 or 1): drafts may be plain
        text, each position listing one token, and ask the server for no log-probs."""
        self.full_logits = full

    def refine(self, seqs: list[int]) -> dict[int, np.ndarray]:
        """Top-k log-probs at the current position of ``seqs`` (after argmax-only drafts disagreed):
        one token each, so that only this position pays for log-probs; the drafts stay."""
        m = self.model
        done = {}
        for seq in seqs:
            cached = self._cached(seq)
            draft = self._drafts.get(seq)
            if cached is not None and draft is not None and draft.full:
                done[seq] = cached
        todo = [s for s in seqs if s not in done]
        for seq, draft in zip(todo, m.each(lambda s: m.draft_from(self._tokens[s], 1, True), todo,
                                           key=lambda s: self._tokens[s])):
            if not draft.dists:
                raise BackendFailure(f"openai: {m.base_url} returned no tokens for a completion")
            done[seq] = draft.dists[0]
            self.stats.prefilled += draft.start
            self.stats.batches += 1
        return done

    def sync(self, seq: int, tokens: Sequence[int], fetch: bool = True) -> np.ndarray:  # (host arrays: fetch is moot)
        if len(tokens) >= self.model.n_ctx:
            raise EgcfgError(f"context full: {len(tokens)} tokens >= n_ctx {self.model.n_ctx}")
        self._tokens[seq] = list(tokens)
        self._logits[seq] = self._next([seq])[seq]  # (kept for pick)
        return self._logits[seq]

    def step(self, feeds: dict[int, int]) -> dict[int, np.ndarray]:
        for seq, token in feeds.items():
            self._tokens[seq].append(int(token))
        out = self._next(list(feeds))
        self._logits.update(out)
        return out

    def fork(self, src: int, dst: int) -> None:
        self._forked(src, dst)
        if src in self._drafts:
            self._drafts[dst] = self._drafts[src]

    def drop(self, seq: int) -> None:
        self._dropped(seq)
        self._drafts.pop(seq, None)

    def sample_continuations(self, base_seq: int, n: int, temperature: float, top_p: float, horizon: int,
                             max_tokens: int, rng: np.random.Generator):
        """``n`` sampled continuations of ``base_seq`` to ``horizon + 1`` lines, from the server's
        sampler: one request with ``n`` choices, then one request per choice still missing (for
        servers without ``n``), each with its own seed."""
        m = self.model
        tokens = list(self._tokens[base_seq])
        seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=n)]
        texts, received = m.sample_lines(tokens, n, horizon + 1, max_tokens, temperature, top_p, seeds[0])
        if len(texts) < n:
            more = m.each(lambda s: m.sample_lines(tokens, 1, horizon + 1, max_tokens, temperature, top_p, s),
                          seeds[len(texts):])
            texts += [t for got, _ in more for t in got]
            received += sum(r for _, r in more)
        return Sampled(texts=[_first_lines(t, horizon + 1) for t in texts[:n]], tokens=received)

    def close(self) -> None:
        self._tokens.clear()
        self._drafts.clear()


def _field(obj, name):
    """A field of an SDK object or of a dict (servers' extra fields arrive as either)."""
    if isinstance(obj, dict):
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None:
        value = (getattr(obj, "model_extra", None) or {}).get(name)
    return value


def _logprob_rows(lp) -> list[tuple[str | int, dict]] | None:
    """(token, {token: log-prob}) per generated position, from either shape servers use:
    OpenAI's legacy completions (``tokens`` + ``top_logprobs`` dicts keyed by text; vLLM, SGLang,
    llama-cpp-python) or llama.cpp's server (``content``: a list of {id, token, logprob,
    top_logprobs: [{id, token, logprob}]}; ids are used where given). None if there are none."""
    if lp is None:
        return None
    content = _field(lp, "content")
    if content:
        rows = []
        for entry in content:
            token = _field(entry, "id")
            token = token if isinstance(token, int) else _field(entry, "token")
            top = {}
            for alt in _field(entry, "top_logprobs") or ():
                key = _field(alt, "id")
                top[key if isinstance(key, int) else _field(alt, "token")] = _field(alt, "logprob")
            rows.append((token, top))
        return rows
    tokens, tops = _field(lp, "tokens"), _field(lp, "top_logprobs")
    if tokens is None or tops is None:
        return None
    return [(t, top or {}) for t, top in zip(tokens, tops)]


def _first_lines(text: str, lines: int) -> str:
    """``text`` up to and including its ``lines``-th newline (a fence ends it as well)."""
    fence = text.find("```")
    if fence >= 0:
        text = text[: fence + 3]
    parts = text.split("\n")
    return "\n".join(parts[:lines]) + ("\n" if len(parts) > lines else "")


def _short(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return " ".join(text.split())[:200]


class _GGUFTokenizer:
    """A GGUF model's vocabulary through llama.cpp (vocabulary only, no weights)."""

    def __init__(self, path):
        from .llamacpp import LlamaCppModel

        self._m = LlamaCppModel(path, vocab_only=True)
        self.name = self._m.name
        self.n_vocab = self._m.n_vocab
        self.tokenize, self.piece, self.is_eog, self.render_chat = (
            self._m.tokenize, self._m.piece, self._m.is_eog, self._m.render_chat)

    def special_text(self, token: int) -> str:
        return self._m.special_text(token)

    def eos_id(self) -> int | None:
        return self._m.eos_id()

    def bos_id(self) -> int | None:
        return self._m.bos_id()

    def close(self) -> None:
        self._m.close()


def _local_tokenizer(spec: str | None):
    from ..models import resolve_model_path

    spec = spec or "embedded"
    if spec.startswith("hf:"):
        from .hf_tokenizer import HFTokenizer

        return HFTokenizer(spec[3:])
    return _GGUFTokenizer(resolve_model_path(spec))
