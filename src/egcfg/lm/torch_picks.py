"""The choice rules of choice.py as batched tensor ops, for a backend whose logits stay on its device.

``launch(table, rows)`` chooses one token per row from ``table`` (slots x vocabulary, float32: each
slot's current next-token logits) and queues their copy to the host; ``.tokens()`` of what it
returns waits for them and gives them as one host list: the only transfer of a step.
Every row carries its own parameters, so one call serves every task, agent and branch at once:

* greedy: argmax of the slot's logits;
* guided: argmax of ``gamma * z_dyn + (1 - gamma) * z_sol`` (guidance.guided_argmax: the rule's
  log-softmax normalizers are constants over the vocabulary and drop out of the argmax);
* sampled: temperature, then the nucleus of ``top_p`` from the sorted top 1024 tokens (all tokens,
  sorted, for the rare rows whose top 1024 hold less than ``top_p``; token order for ``top_p`` 1), then
  the inverse CDF at the row's uniform draw ``u``: choice.sample_token, float64 sums as there.

Results equal choice.pick_on_host on the same logits (tests/test_hf.py), except where tokens tie
exactly in a sampled nucleus (their order inside it may differ).
"""

from __future__ import annotations

import torch

TOP = 1024  # tokens sorted per sampled row before the full-sort fallback

# A row: (kind, slot, dyn_slot, gamma, temperature, top_p, u); kind is "greedy", "guided" or "sample".
Row = tuple


def rows_of(picks, slot_of) -> list[Row]:
    """choice.Pick objects as rows, their sequences mapped to KV slots by ``slot_of``."""
    rows = []
    for p in picks:
        if p.dyn is not None and p.gamma in (0.0, 1.0):  # the rule is one branch's argmax
            rows.append(("greedy", slot_of(p.dyn if p.gamma == 1.0 else p.seq), -1, 0.0, 0.0, 1.0, 0.0))
        else:
            rows.append((p.kind, slot_of(p.seq), slot_of(p.dyn) if p.dyn is not None else -1,
                         float(p.gamma), float(p.temperature), float(p.top_p), float(p.u)))
    return rows


class Pending:
    """Picked tokens on their way to the host: the copy is queued on the device, so the caller can
    queue more work (a prefill forward) before it waits for them with ``tokens()``. ``fix``: rows
    whose sampled nucleus did not fit in the top TOP tokens (flagged on the device, copied beside
    the tokens) are sampled again over every token, after that wait: no sync at launch."""

    def __init__(self, picked: torch.Tensor | None, where: list[int], n: int, fix=None):
        self.where, self.n, self.fix = where, n, fix
        self.event = None
        if picked is None:
            self.host = None
        elif picked.is_cuda:
            self.host = torch.empty(picked.shape, dtype=picked.dtype, pin_memory=True)
            self.host.copy_(picked, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = picked

    def tokens(self) -> list[int]:
        """The tokens in row order (waits for the device: the one sync of the picks)."""
        if self.host is None:
            return []
        if self.event is not None:
            self.event.synchronize()
        picked = self.host.tolist()
        if self.fix is not None:
            picked = self.fix(picked)
        out = [0] * self.n
        for i, tok in zip(self.where, picked):
            out[i] = tok
        return out


def _to_device(values: list, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    """A host list as a device tensor without a sync: through pinned memory, copied asynchronously
    (``torch.tensor(values, device=cuda)`` copies from pageable memory, which waits until the
    device has finished everything queued before it: the step's forward)."""
    host = torch.tensor(values, dtype=dtype)
    if dev.type != "cuda":
        return host
    return host.pin_memory().to(dev, non_blocking=True)


@torch.inference_mode()
def launch(table: torch.Tensor, rows: list[Row]) -> Pending:
    dev = table.device
    greedy = [i for i, r in enumerate(rows) if r[0] == "greedy"]
    guided = [i for i, r in enumerate(rows) if r[0] == "guided"]
    sampled = [i for i, r in enumerate(rows) if r[0] == "sample"]
    where = greedy + guided + sampled
    if not where:
        return Pending(None, where, len(rows))
    # Every row's slots in one copy to the device, every parameter in another.
    ints = _to_device([rows[i][1] for i in greedy] + [rows[i][1] for i in guided]
                      + [rows[i][2] for i in guided] + [rows[i][1] for i in sampled], torch.long, dev)
    floats = _to_device([rows[i][3] for i in guided] + [1.0 - rows[i][3] for i in guided]
                        + [x for i in sampled for x in rows[i][4:7]], torch.float64, dev)
    a, b, c = len(greedy), len(guided), len(sampled)
    parts = []
    if greedy:
        parts.append(table[ints[:a]].argmax(-1))
    if guided:
        sol, dyn = table[ints[a:a + b]], table[ints[a + b:a + 2 * b]]
        g = floats[:b].float()[:, None]
        rest = floats[b:2 * b].float()[:, None]
        scores = dyn * g
        scores += sol * rest
        parts.append(scores.argmax(-1))
    fix = None
    if sampled:
        params = floats[2 * b:].view(c, 3)
        whole = [j for j, i in enumerate(sampled) if rows[i][5] >= 1.0]  # (known here: no sync)
        tokens, flags, redo = _sample(table[ints[a + 2 * b:]], params[:, 0], params[:, 1], params[:, 2], whole)
        parts += [tokens, flags]  # the flags travel with the tokens, in the same copy
        fix = _fixer(a + b, c, redo)
    picked = torch.cat(parts)
    return Pending(picked, where, len(rows), fix)


def _fixer(offset: int, c: int, redo):
    """Undo the flags' tail of a picked list, and pick the flagged rows again (``redo``)."""
    def fix(picked: list[int]) -> list[int]:
        flags, picked = picked[-c:], picked[:-c]
        rows = [j for j, f in enumerate(flags) if f]
        if rows:  # rare: a second sync, for these rows only
            for j, tok in zip(rows, redo(rows, [flags[j] for j in rows]).tolist()):
                picked[offset + j] = tok
        return picked
    return fix


WIDE, NOT_FINITE = 1, 2  # a sampled row's flag: its nucleus is wider than the top TOP; its logits are not finite


def _sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor, whole: list[int]):
    """Sampled rows' tokens, with no host sync: (tokens, a flag per row, a function that picks
    given rows again by their flags). Flagged rows are rare: WIDE, a nucleus wider than the top
    TOP tokens (sampled again over every token, sorted); NOT_FINITE, NaN or +inf logits, with no
    distribution to sample from (their argmax, NaN as -inf: choice.sample_token's fallback).
    ``whole``: rows with top_p 1 (no nucleus: the whole distribution in token order, as
    choice.sample_token)."""
    z = logits / temperature.float()[:, None]
    best = z.max(-1, keepdim=True).values
    finite = torch.isfinite(best[:, 0])
    p = torch.exp(z - best)
    total = p.sum(-1, dtype=torch.float64)
    k = min(TOP, p.shape[-1])
    pv, pi = torch.topk(p, k, dim=-1)
    tokens = _nucleus(pv, pi, total, top_p, u)
    cum = pv.sum(-1, dtype=torch.float64) / total
    wide = cum < top_p
    if whole:
        idx = _to_device(whole, torch.long, logits.device)
        q = p[idx].double() / total[idx][:, None]
        tokens[idx] = _inverse_cdf(q, u[idx], torch.full_like(idx, q.shape[-1]))
        wide[idx] = False
    flags = torch.where(finite, wide.long() * WIDE, torch.full_like(tokens, NOT_FINITE))

    def redo(rows: list[int], why: list[int]) -> torch.Tensor:
        idx = torch.tensor(rows, device=logits.device)
        sv, si = torch.sort(p[idx], dim=-1, descending=True, stable=True)
        again = _nucleus(sv, si, total[idx], top_p[idx], u[idx])
        bad = torch.tensor([f == NOT_FINITE for f in why], device=logits.device)
        return torch.where(bad, torch.nan_to_num(z[idx], nan=float("-inf")).argmax(-1), again)

    return tokens, flags, redo


def _nucleus(pv: torch.Tensor, pi: torch.Tensor, total: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Rows of probabilities sorted high to low (``pv``) and their token ids (``pi``): the token of
    each row's nucleus at its draw."""
    q = pv.double()
    cum = q.cumsum(-1) / total[:, None]
    cut = ((cum < top_p[:, None]).sum(-1) + 1).clamp(max=q.shape[-1])
    keep = torch.arange(q.shape[-1], device=q.device)[None, :] < cut[:, None]
    q = torch.where(keep, q, torch.zeros_like(q))
    q = q / q.sum(-1, keepdim=True)
    return pi.gather(-1, _inverse_cdf(q, u, cut)[:, None])[:, 0]


def _inverse_cdf(q: torch.Tensor, u: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Index of the first cumulative weight above ``u`` among each row's first ``n`` entries."""
    cdf = q.cumsum(-1)
    cdf = cdf / cdf.gather(-1, (n - 1)[:, None])
    idx = (cdf <= u[:, None]).sum(-1)
    return torch.minimum(idx, n - 1)
