"""Language-model backends behind one interface (``base.LanguageModel``), imported lazily by name."""

from __future__ import annotations

from urllib.parse import parse_qsl

from ..errors import EgcfgError
from .base import LanguageModel

# Options a spec may carry after "?" (e.g. "hf:embedded?device=cuda&slots=320"), with their types.
_HF_OPTIONS = {"device": str, "dtype": str, "slots": int, "n_ctx": int, "batch_wait": float}


def _split_options(spec: str, allowed: dict) -> tuple[str, dict]:
    if "?" not in spec:
        return spec, {}
    spec, query = spec.split("?", 1)
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise EgcfgError(f"unknown model option {key!r} (known: {', '.join(allowed)})")
        try:
            options[key] = allowed[key](value)
        except ValueError:
            raise EgcfgError(f"model option {key}={value!r} is not a valid {allowed[key].__name__}") from None
        number = options[key]
        if allowed[key] in (int, float) and not (0 < number < 1e9):  # also rejects nan and inf
            raise EgcfgError(f"model option {key}={value!r} must be a positive finite number")
    return spec, options


def load_model(spec: str | None = None, **options) -> LanguageModel:
    """Open a model by spec:

    * None / "embedded" / an embedded model name / a ``.gguf`` path / ``llamacpp:<that>``: llama.cpp;
    * ``hf:<that>`` (a GGUF file is converted once), ``hf:<transformers folder or hub id>``:
      transformers on CUDA when there is one, else CPU; options after ``?``: device, dtype, slots,
      n_ctx, batch_wait.

    Backends are imported only when asked for."""
    from ..models import MODELS, ALIASES, resolve_model_path

    spec = spec or "embedded"
    if spec.startswith("llamacpp:"):
        spec = spec[len("llamacpp:"):]
    if spec.startswith("openai:"):
        raise EgcfgError("backend 'openai' is not available in this version; use a GGUF file or hf:")
    if spec.startswith("hf:"):
        target, extra = _split_options(spec[3:], _HF_OPTIONS)
        options = {k: v for k, v in options.items() if k in ("n_ctx", "n_threads", "slots")} | extra
        if ALIASES.get(target, target) in MODELS or target.endswith(".gguf"):
            target = str(resolve_model_path(target))
        from .hf import HFModel

        return HFModel(target, **options)
    options.pop("slots", None)  # llama.cpp contexts are per session: no shared slots to size
    path = resolve_model_path(spec)
    from .llamacpp import LlamaCppModel

    return LlamaCppModel(path, **options)
