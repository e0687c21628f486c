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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(model_path):
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1 with the embedded model, evaluating
    as the direct backend does (flash attention on: see test_openai's top-k test)."""
    import subprocess
    import time
    import urllib.request

    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
    port = free_port()
    log = open(f"/tmp/egcfg-test-server-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias",
                             "qwen-test", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
                             # evaluated as the direct backend evaluates (see test_server_topk_...)
                             "--flash_attn", "true"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, "the server exited"
                time.sleep(0.5)
        else:
            pytest.fail("the server did not come up")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
