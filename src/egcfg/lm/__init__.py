"""Language-model backends behind one interface (``base.LanguageModel``), imported lazily by name."""

from __future__ import annotations

from ..errors import EgcfgError
from .base import LanguageModel


def load_model(spec: str | None = None, **options) -> LanguageModel:
    """Open a model by spec: None / "embedded" (the default GGUF), a path to a ``.gguf`` file,
    or ``llamacpp:<path>``. Backends are imported only when asked for."""
    from ..models import resolve_model_path

    spec = spec or "embedded"
    if spec.startswith("llamacpp:"):
        spec = spec[len("llamacpp:"):]
    if spec.startswith(("hf:", "openai:")):
        raise EgcfgError(f"backend {spec.split(':')[0]!r} is not available in this version; use a GGUF file")
    path = resolve_model_path(spec)
    from .llamacpp import LlamaCppModel

    return LlamaCppModel(path, **options)
