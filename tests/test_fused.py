"""The transformers backend's fused Triton kernels (lm/fused.py), on the CPU through Triton's
interpreter: each kernel against its torch reference on random inputs, and the fused forward
against HF's own modules on a small random Qwen2 model (prefills of different lengths, a fork,
one-token steps split over positions, static shapes with padding rows)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the hf extra is not installed")
pytest.importorskip("transformers", reason="the hf extra is not installed")
pytest.importorskip("triton", reason="Triton is not installed (the dev extra brings it)")
import torch  # noqa: E402

from egcfg.errors import EgcfgError  # noqa: E402

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(model_path, tmp_path_factory):
    """A 2-layer Qwen2 of random weights (biases and norms random too) with the embedded model's
    tokenizer: small enough for the interpreter, the same architecture as the embedded model."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from egcfg.lm.hf import _convert

    source = _convert(model_path)
    out = tmp_path_factory.mktemp("tiny-qwen2")
    cfg = Qwen2Config(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    m.save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (source / name).exists():
            shutil.copy(source / name, out)
    return out


def test_fused_kernels_and_forward_equal_the_torch_references(tiny):
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "fused_interpreted.py"), str(tiny)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    # float32 throughout: only the order of summation differs
    for name, err in {**got["kernels"], "logits": got["forward"]["logits"], "cache": got["forward"]["cache"]}.items():
        assert err < 1e-5, (name, err)
    assert got["forward"]["splits_4_rows"] == 2  # the one-token steps did use the split attention


def test_kernels_option(tiny):
    from egcfg.lm.hf import HFModel

    with pytest.raises(EgcfgError, match="must be fused or torch"):
        HFModel(str(tiny), device="cpu", n_ctx=64, slots=2, kernels="triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(EgcfgError, match="needs a CUDA device"):
            HFModel(str(tiny), device="cpu", n_ctx=64, slots=2, kernels="fused")
    m = HFModel(str(tiny), device="cpu", n_ctx=64, slots=2)  # the CPU default: HF's modules
    assert m.fused is None and m.describe()["kernels"] == "torch"
    m.close()
