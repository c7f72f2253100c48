"""The CUDA merge path (`merge.device=cuda`) gives the CPU path's merge. Needs a GPU."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import load_file

from harness.merge import merge_checkpoints
from harness.merge.registry import load_methods

pytestmark = pytest.mark.gpu
PARAMS = {"model_soup": {"alpha": 0.3}, "task_arithmetic": {"scale": 0.5},
          "ties": {"density": 0.3}, "dare": {"density": 0.5},
          "breadcrumbs": {"density": 0.3, "gamma": 0.05}, "della": {"density": 0.4},
          "neuron_fusion": {"ratio": 0.1}}
# every registered method that merges (base and mllm only copy one input)
METHODS = {name: PARAMS.get(name, {}) for name in load_methods() if name not in ("base", "mllm")}


@pytest.fixture(scope="module")
def wide_pair(tmp_path_factory):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from harness.models.tiny import build_tiny_llama, build_tiny_llava

    root = tmp_path_factory.mktemp("gpu")
    base = build_tiny_llama(root / "base", hidden=512, layers=4, intermediate=1408, heads=8,
                            kv_heads=4)
    return base, build_tiny_llava(root / "llava", base)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_cuda_merge_equals_cpu_merge(tmp_path, wide_pair, method):
    base, tuned = wide_pair
    out = {}
    for device in ("cpu", "cuda"):
        t0 = time.perf_counter()
        rep = merge_checkpoints(base, tuned, method, METHODS[method], out=tmp_path / device,
                                device=device, progress=False)
        print(f"{method} {device}: {time.perf_counter() - t0:.2f} s, {rep['device']}")
        out[device] = load_file(str(tmp_path / device / "mllm" / "model.safetensors"))
    for name, t in out["cpu"].items():
        # selection, masks and seeds are identical; lerp may differ in the last float32 bit
        torch.testing.assert_close(out["cuda"][name], t, rtol=1e-6, atol=1e-6, msg=name)
