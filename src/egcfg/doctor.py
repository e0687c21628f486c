"""`egcfg doctor`: what this environment offers egcfg, as a dict."""

from __future__ import annotations

import os
import platform
import sys

from . import __version__
from .execution.sandbox import isolation, sandbox_user
from .models import DEFAULT_MODEL, MODELS, is_verified, model_file, sha256_of


def report(verify: bool = False) -> dict:
    info = {
        "egcfg": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sandbox_isolation": isolation(),
        "sandbox_user": sandbox_user(),
    }
    try:
        import llama_cpp

        info["llama_cpp_python"] = llama_cpp.__version__
    except Exception as exc:  # an import failure is exactly what doctor must report
        info["llama_cpp_python"] = None
        info["llama_cpp_error"] = f"{type(exc).__name__}: {exc}"
    path = model_file(DEFAULT_MODEL)
    info["model"] = DEFAULT_MODEL
    info["model_path"] = str(path)
    info["model_present"] = path.is_file()
    if verify and path.is_file():
        info["model_sha256_ok"] = sha256_of(path) == MODELS[DEFAULT_MODEL].sha256
    else:
        info["model_sha256_ok"] = is_verified(DEFAULT_MODEL)
    info["ok"] = bool(info["llama_cpp_python"] and info["model_sha256_ok"])
    info["executable"] = sys.executable
    return info
