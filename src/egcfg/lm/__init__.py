"""Language-model backends behind one interface (``base.LanguageModel``), imported lazily by name."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from ..errors import EgcfgError
from .base import LanguageModel

# Options a spec may carry after "?" (e.g. "hf:embedded?device=cuda&slots=320"), with their types.
_HF_OPTIONS = {"device": str, "dtype": str, "slots": int, "n_ctx": int, "batch_wait": float,
               "prefill_rows": int, "prefill_budget": int, "max_rows": int, "graphs": str,
               "server": str, "candidates": str, "lines": str, "kernels": str}
_OPENAI_OPTIONS = {"model": str, "tokenizer": str, "logprobs": int, "draft": int, "concurrency": int,
                   "timeout": float, "retries": int, "api_key_env": str, "n_ctx": int}


BACKENDS = {"llamacpp": "llama.cpp", "hf": "transformers", "openai": "openai"}
# hf options that only change how forwards are placed and batched (as bench --workers and
# --concurrency do), not what a run computes: a resumed run may change them.
_SCHEDULING_OPTIONS = frozenset({"server", "batch_wait", "prefill_rows", "prefill_budget", "max_rows", "slots"})


def model_servers(value: str | None) -> int | None:
    """The hf option ``server=`` as a number of model server processes for ``bench --workers``:
    on (or unset) 1, off 0, N >= 1; None when it is none of these (HFModel refuses it in one line)."""
    if value in (None, "on"):
        return 1
    if value == "off":
        return 0
    return int(value) if value.isdigit() and int(value) >= 1 else None


def spec_identity(spec: str | None) -> tuple:
    """What of a model spec decides a run's results: the backend, its target and its options less
    the scheduling ones (``_SCHEDULING_OPTIONS``), in any order. ``--resume`` compares this."""
    backend, target, query = split_spec(spec)
    options = parse_qsl(query, keep_blank_values=True)
    if backend == "transformers":
        options = [(k, v) for k, v in options if k not in _SCHEDULING_OPTIONS]
    return backend, target, tuple(sorted(options))


def split_spec(spec: str | None) -> tuple[str, str, str]:
    """``[backend:]target[?options]`` -> (backend name, target, options query). No prefix means
    llama.cpp, whose target is a name or a file path taken whole (no options). The one parser of
    model specs: loading and run labels both use it."""
    spec = spec or "embedded"
    prefix, _, rest = spec.partition(":")
    backend = BACKENDS.get(prefix)
    if backend is None:  # no known prefix (a path may contain ":" too)
        backend, rest = "llama.cpp", spec
    if backend == "llama.cpp":
        return backend, rest, ""
    target, _, query = rest.partition("?")
    if backend == "openai" and target.startswith("//"):  # "openai://host:port/v1" means http://
        target = "http:" + target
    return backend, target, query


def _split_options(query: str, allowed: dict) -> dict:
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise EgcfgError(f"unknown model option {key!r} (known: {', '.join(allowed)})")
        try:
            options[key] = allowed[key](value)
        except ValueError:
            raise EgcfgError(f"model option {key}={value!r} is not a valid {allowed[key].__name__}") from None
        number = options[key]
        if key == "retries" and number == 0:
            continue
        if allowed[key] in (int, float) and not (0 < number < 1e9):  # also rejects nan and inf
            raise EgcfgError(f"model option {key}={value!r} must be a positive finite number")
    return options


def _resolve(spec: str | None, options: dict) -> tuple[str, str, dict]:
    """(backend, target, options) for a spec, without loading anything: the options a backend
    takes (the caller's, filtered, plus the spec's ``?...``), and a local model file or folder
    checked to exist (an embedded model is fetched once if not cached)."""
    from ..models import MODELS, ALIASES, resolve_model_path

    backend, target, query = split_spec(spec)
    if backend == "openai":
        options = {k: v for k, v in options.items() if k == "n_ctx"} | _split_options(query, _OPENAI_OPTIONS)
    elif backend == "transformers":
        options = {k: v for k, v in options.items() if k in ("n_ctx", "n_threads", "slots")}
        options |= _split_options(query, _HF_OPTIONS)
        if ALIASES.get(target, target) in MODELS or target.endswith(".gguf"):
            target = str(resolve_model_path(target))
        elif target.startswith(("/", ".", "~")) and not Path(target).expanduser().is_dir():
            raise EgcfgError(f"model folder not found: {target}")
    else:
        options = {k: v for k, v in options.items() if k != "slots"}  # llama.cpp contexts are per session
        target = str(resolve_model_path(target))
    return backend, target, options


def check_model(spec: str | None) -> None:
    """Fail fast, in one line, on a spec that cannot load, without loading it: a benchmark checks
    its model before it creates a run folder or starts worker processes (which would each fail on
    their own). Fetches the embedded model if it is not cached yet, so workers find it ready."""
    _resolve(spec, {})


def load_model(spec: str | None = None, **options) -> LanguageModel:
    """Open a model by spec:

    * None / "embedded" / an embedded model name / a ``.gguf`` path / ``llamacpp:<that>``: llama.cpp;
    * ``hf:<that>`` (a GGUF file is converted once), ``hf:<transformers folder or hub id>``:
      transformers on CUDA when there is one, else CPU; options after ``?``: device, dtype, slots,
      n_ctx, batch_wait, prefill_rows (rows per packed prefill forward; 1 turns packing off),
      graphs (on/off), server (on/off, for bench --workers), candidates (batcher/session: who steps
      the sampled candidates, lm/hf.py), lines (batcher/session: who steps each decoded line),
      kernels (fused/torch: the forward's Triton kernels, lm/fused.py, or HF's modules);
    * ``openai:<base URL>`` (e.g. ``openai:http://127.0.0.1:8000/v1``): any OpenAI-compatible
      completions server; options after ``?``: model, tokenizer, logprobs, draft, concurrency,
      timeout, retries, api_key_env (see lm/openai_api.py).

    Backends are imported only when asked for."""
    backend, target, options = _resolve(spec, options)
    if backend == "openai":
        from .openai_api import OpenAIModel

        return OpenAIModel(target, **options)
    if backend == "transformers":
        from .hf import HFModel

        return HFModel(target, **options)
    from .llamacpp import LlamaCppModel

    return LlamaCppModel(target, **options)
