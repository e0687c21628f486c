import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def model_path():
    """The embedded model, fetched and verified if missing (the setup script normally did it)."""
    from egcfg.models import ensure_model

    return ensure_model()


@pytest.fixture(scope="session")
def model(model_path):
    from egcfg.lm.llamacpp import LlamaCppModel

    m = LlamaCppModel(model_path, n_ctx=8192)
    yield m
    m.close()


@pytest.fixture(scope="session")
def sandbox():
    from egcfg.execution.sandbox import Limits, Sandbox

    with Sandbox(Limits(timeout=2.0)) as sb:
        yield sb


@pytest.fixture
def egcfg_cli():
    """Run the real console entry point in a subprocess; returns CompletedProcess."""
    import subprocess

    def run(*args, input=None, timeout=600):
        return subprocess.run([sys.executable, "-m", "egcfg", *args], capture_output=True, text=True,
                              input=input, timeout=timeout, cwd=ROOT)

    return run
