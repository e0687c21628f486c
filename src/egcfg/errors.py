"""The one error type that a user can cause (bad task file, missing model, bad flag).

The CLI prints its message on one line and exits 2; the library raises it instead of printing.
"""


class EgcfgError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class BackendFailure(EgcfgError):
    """The model backend itself broke (e.g. a CUDA error), not one task's input: a benchmark run
    stops on it instead of recording the failure as every in-flight task's attempt."""


class ContextFull(EgcfgError):
    """A sequence would grow past the model's context (one attempt's problem, not the backend's)."""

    def __init__(self, n_ctx: int, length: int):
        super().__init__(f"a sequence would exceed the model context of {n_ctx} tokens ({length} tokens)")
        self.n_ctx, self.length = n_ctx, length

    def __reduce__(self):  # (it travels pickled from a model server)
        return ContextFull, (self.n_ctx, self.length)
