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


def _files(out) -> dict[str, bytes]:
    return {f"{d}/{f.name}": f.read_bytes() for d in ("llm", "mllm")
            for f in sorted((out / d).glob("*.safetensors"))}


@pytest.fixture
def traced(monkeypatch):
    """Record what the CUDA pipeline does: ("up", unit, host buffers pinned) / ("compute", unit)."""
    from harness.merge import gpu

    log, index = [], {}
    upload, compute = gpu.CudaStages.upload, gpu.CudaStages.compute

    def traced_upload(self, i, loaded):
        flight = upload(self, i, loaded)
        index[id(flight)] = i
        log.append(("up", i, all(item.tuned_buf.is_pinned() for item in loaded)
                    and all(item.base_buf is None or item.base_buf.is_pinned()
                            for item in loaded)))
        return flight

    def traced_compute(self, flight):
        log.append(("compute", index[id(flight)]))
        compute(self, flight)

    monkeypatch.setattr(gpu.CudaStages, "upload", traced_upload)
    monkeypatch.setattr(gpu.CudaStages, "compute", traced_compute)
    return log


@pytest.mark.parametrize("method", ["ties", "neuron_fusion"])
def test_overlapped_path_is_used_and_repeatable(tmp_path, wide_pair, traced, method):
    base, tuned = wide_pair
    for run in ("a", "b"):
        merge_checkpoints(base, tuned, method, METHODS[method], out=tmp_path / run,
                          device="cuda", progress=False, force=True)
    ups = [e for e in traced if e[0] == "up"]
    assert ups and all(pinned for _, _, pinned in ups), "pool buffers must be pinned"
    assert traced[:3] == [("up", 0, True), ("up", 1, True), ("compute", 0)]  # i+1 up, then i
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


@pytest.mark.timeout(600)
def test_units_larger_than_the_budget_run_one_by_one(tmp_path, wide_pair, traced):
    base, tuned = wide_pair
    merge_checkpoints(base, tuned, "ties", METHODS["ties"], out=tmp_path / "big",
                      device="cuda", progress=False)
    traced.clear()
    merge_checkpoints(base, tuned, "ties", METHODS["ties"], out=tmp_path / "tiny",
                      device="cuda", progress=False, memory_mb=0)
    assert traced[:3] == [("up", 0, True), ("compute", 0), ("up", 1, True)]
    assert _files(tmp_path / "tiny") == _files(tmp_path / "big")
