"""Portable CPU numerics: AVX2 kernels and thread-count independent results, pinned at import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import numerics

ROOT = Path(__file__).resolve().parent.parent

# A tiny Llama's loss and gradients: GEMMs (MKL) and vectorised ATen kernels, hashed bit for bit.
PROBE = """
import hashlib, json, sys
import harness, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=97, hidden_size=96, intermediate_size=200, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
model = LlamaForCausalLM(cfg)
ids = torch.randint(0, 97, (8, 33))
model(ids, labels=ids).loss.backward()
flat = torch.cat([p.grad.flatten() for p in model.parameters()])
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                  "grads": hashlib.sha256(flat.numpy().tobytes()).hexdigest()}))
"""


def _probe(threads: int, **env) -> dict:
    import os

    out = subprocess.run([sys.executable, "-c", PROBE, str(threads)], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _has_avx2() -> bool:
    try:
        return " avx2 " in " " + Path("/proc/cpuinfo").read_text().replace("\n", " ") + " "
    except OSError:
        return False


def test_mode_is_validated(monkeypatch):
    monkeypatch.setenv(numerics.MODE_VAR, "fast")
    with pytest.raises(ValueError, match="HARNESS_CPU_NUMERICS='fast'.*portable, native"):
        numerics.mode()


def test_apply_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setenv(numerics.MODE_VAR, "portable")
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    numerics.apply()
    import os

    assert os.environ["MKL_CBWR"] == "COMPATIBLE"
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_native_mode_sets_nothing(monkeypatch):
    monkeypatch.setenv(numerics.MODE_VAR, "native")
    for var in numerics.PORTABLE:
        monkeypatch.delenv(var, raising=False)
    numerics.apply()
    import os

    assert not any(var in os.environ for var in numerics.PORTABLE)
    assert numerics.identity()["mode"] == "native"


@pytest.mark.skipif(not _has_avx2(), reason="portable numerics need an x86-64 CPU with AVX2")
def test_importing_harness_pins_avx2_and_results_do_not_depend_on_threads():
    one, two = _probe(1), _probe(2)
    assert one["capability"] == two["capability"] == "AVX2"
    assert one["grads"] == two["grads"]


def test_the_test_session_runs_on_the_portable_kernels():
    import torch

    if _has_avx2():
        assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    assert numerics.describe()["mkl_cbwr"] == "AVX2,STRICT"
