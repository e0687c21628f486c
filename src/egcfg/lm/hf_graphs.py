"""Forwards at a few static shapes, replayed as CUDA graphs.

Why: an eager forward of the 0.5B model launches about a thousand small kernels, each with Python
dispatch, so a decode step of a hundred rows took 21.5 ms alone on an H200 and 73 ms inside a run,
where the batcher thread shares its interpreter (and the CPU) with the engine threads and the
sandbox (benchmarks/results/speed.json, "gpu_grid"). The GPU work of that step is about 1 ms. A
CUDA graph replays all of a forward's kernels in one launch, at the price of static shapes.

So a forward of B rows of N tokens attending L cached positions runs at the shape bucket
(B', N', L') just above it: extra rows point at the model's scratch slot (their K/V and logits land
there, never read), extra tokens of a row write K/V past its length (never attended: the mask ends
at each query's position, and the cache has PREFILL_CHUNK positions of slack), extra key
positions are masked out. The math is HFModel.forward_core, the same function the eager path runs.

A bucket is captured the second time it is asked for (a shape seen once is not worth a capture),
into one memory pool shared by every graph: a graph's intermediates are dead after its replay and
the batcher replays one graph at a time, so their memory can be shared; a graph's only state is its
input buffer, and its outputs are writes into the model's K/V cache and next-logits table.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch

# Row counts of a bucket. A decode forward reads every weight once whatever its rows, so padding
# rows costs little; attention grows with rows x attended length, hence the finer steps.
ROWS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024)
LENGTHS = (1, 16, 32, 64, 128, 192, 256, 384, 512)   # tokens per row (decode 1; prefill chunks)
ATTEND_STEP = 512                                      # attended positions, in steps of this
MAX_GRAPHS = 512                                       # beyond this, a new shape runs eagerly


def bucket(rows: int, length: int, attended: int, capacity: int) -> tuple[int, int, int] | None:
    """The static shape above (rows, length, attended), or None where none is (too many rows or
    tokens: such a forward runs eagerly at its own shape)."""
    i, j = bisect.bisect_left(ROWS, rows), bisect.bisect_left(LENGTHS, length)
    if i == len(ROWS) or j == len(LENGTHS):
        return None
    return ROWS[i], LENGTHS[j], min(-(-attended // ATTEND_STEP) * ATTEND_STEP, capacity)


class Graphs:
    def __init__(self, model, capture: bool):
        self.model = model
        self.capture = capture  # False: bucketed shapes run eagerly (CPU, and tests of the padding)
        self.dev = model.device
        self.graphs: dict[tuple, tuple] = {}  # shape -> (graph, input buffer)
        self.seen: dict[tuple, int] = {}
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.replays = self.captures = self.eager = 0

    def stats(self) -> dict:
        return {"graphs": len(self.graphs), "captures": self.captures, "replays": self.replays,
                "eager_forwards": self.eager}

    def _inputs(self, rows, shape) -> torch.Tensor:
        """One host array for the whole input (one copy to the device): ids (B' x N'), then each
        row's start position, slot and index of its last token. Padding rows use the scratch slot."""
        B, N, _ = shape
        host = np.zeros(B * N + 3 * B, dtype=np.int64)
        ids = host[:B * N].reshape(B, N)
        starts, slots, last = host[B * N:B * N + B], host[B * N + B:B * N + 2 * B], host[B * N + 2 * B:]
        n = len(rows)
        if N == 1:
            ids[:n, 0] = [toks[0] for _, _, toks in rows]
            last[:n] = 0
        else:
            for b, (_, _, toks) in enumerate(rows):
                ids[b, :len(toks)] = toks
                last[b] = len(toks) - 1
        starts[:n] = [start for _, start, _ in rows]
        slots[:n] = [slot for slot, _, _ in rows]
        slots[n:] = self.model.scratch
        # Pinned, so that the copy to the device need not block: the host prepares the next forward
        # while the GPU still runs this one (torch's host allocator keeps the block until the copy
        # is done).
        host = torch.from_numpy(host)
        return host.pin_memory() if self.dev.type == "cuda" else host

    @staticmethod
    def _views(buf: torch.Tensor, shape):
        B, N, _ = shape
        return (buf[:B * N].view(B, N), buf[B * N:B * N + B], buf[B * N + B:B * N + 2 * B], buf[B * N + 2 * B:])

    @torch.inference_mode()
    def run(self, rows) -> None:
        """One forward of ``rows`` (slot, start, tokens): K/V to the cache, logits to the table."""
        n = max(len(t) for _, _, t in rows)
        # (the fused one-token forward reads each row's length on the device: one graph per row
        # bucket, whatever the rows' lengths)
        attended = 0 if n == 1 and self.model.fused is not None else max(start for _, start, _ in rows) + n
        shape = bucket(len(rows), n, attended, self.model.capacity)
        if shape is None:
            self.eager += 1
            return self.model.forward_eager(rows)
        if shape in self.graphs:
            graph, buf = self.graphs[shape]
            buf.copy_(self._inputs(rows, shape), non_blocking=True)
            graph.replay()
            self.replays += 1
            return None
        inputs = self._inputs(rows, shape).to(self.dev, non_blocking=True)
        self.seen[shape] = self.seen.get(shape, 0) + 1
        if self.capture and self.seen[shape] >= 2 and len(self.graphs) < MAX_GRAPHS:
            self._capture(shape, inputs)  # (its warm-up run is this forward: same inputs)
            return None
        self.eager += 1
        self.model.forward_core(*self._views(inputs, shape), shape[2])
        return None

    def _capture(self, shape, inputs: torch.Tensor) -> None:
        """The documented recipe: warm up on a side stream (lazy library set-up must not happen
        inside a capture), then capture. The warm-up is a real forward of these rows; the writes
        it makes are the ones the forward is for, so the graph is not replayed now. ``inputs``
        (this forward's own copy on the device) becomes the graph's input buffer."""
        buf = inputs
        args = (*self._views(buf, shape), shape[2])
        side = torch.cuda.Stream(device=self.dev)
        side.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(side):
            self.model.forward_core(*args)
        torch.cuda.current_stream(self.dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # capture_begin/end rather than the torch.cuda.graph context, which also empties the
        # allocator's cache and collects garbage at every capture (measured: a run captures about a
        # hundred shapes per process, and every emptied cache meant fresh cudaMallocs). A capture
        # must run on a stream other than the default one. thread_local: other threads of the
        # process may touch CUDA meanwhile (e.g. pinned host memory).
        with torch.cuda.stream(side):
            graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
            try:
                self.model.forward_core(*args)
            finally:
                graph.capture_end()
        torch.cuda.current_stream(self.dev).wait_stream(side)
        self.graphs[shape] = (graph, buf)
        self.captures += 1
