"""`egcfg doctor`: what this environment offers egcfg, as a dict."""

from __future__ import annotations

import os
import platform
import sys

from . import __version__
from .errors import EgcfgError
from .execution import seccomp
from .execution.sandbox import Limits, Sandbox, isolation, sandbox_user
from .models import DEFAULT_MODEL, MODELS, is_verified, model_file, sha256_of


def report(verify: bool = False) -> dict:
    info = {
        "egcfg": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sandbox_isolation": isolation(),
        "sandbox_user": sandbox_user(),
        "sandbox_seccomp": seccomp.describe(),
        "sandbox_seccomp_check": _filter_check(),
        "sandbox_tmp": (f"private tmpfs of {Limits.tmp_mb} MiB" if isolation() == "bubblewrap" else
                        f"scratch directory on the host, no total cap ({Limits.file_size_mb} MiB per file)"),
    }
    try:
        import llama_cpp

        info["llama_cpp_python"] = llama_cpp.__version__
        # The instruction set llama.cpp was built for (scripts/setup.sh fixes it: same logits on every host).
        info["llama_cpp_cpu"] = " ".join(llama_cpp.llama_print_system_info().decode(errors="replace").split())
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
    info["ok"] = bool(info["llama_cpp_python"] and info["model_sha256_ok"]
                      and info["sandbox_seccomp_check"].startswith("in force"))
    info["executable"] = sys.executable
    return info


_CHECK = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
status = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")]
refused = libc.unshare(0x10000000) != 0 and ctypes.get_errno() == 1
print(status[0] if status else "?", "refused" if refused else "ALLOWED")
"""


def _filter_check() -> str:
    """Run a probe program in the sandbox: is the filter in force, and is unshare(CLONE_NEWUSER) refused?"""
    try:
        with Sandbox(Limits(timeout=5.0), warm=0, workers=1) as sandbox:
            result = sandbox.run(_CHECK, trace=False)
    except EgcfgError as exc:
        return f"no sandbox: {exc}"
    words = result.stdout.split()
    if result.ok and words == ["2", "refused"]:
        return "in force (a probe run has Seccomp: 2 and unshare(CLONE_NEWUSER) fails with EPERM)"
    return f"NOT in force: probe {result.status} {result.exception or ''} {' '.join(words)}".strip()
