"""The CUDA pipeline's schedule (harness/merge/gpu.py `run`) and its place in the engine, on the
CPU: a stand-in for CudaStages does the device's part with CPU copies, so the order of the
stages, the buffer hand-back, the budget rule and failures are tested without a GPU (the CUDA
side itself: tests/test_gpu.py)."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import torch

from harness.errors import ConfigError, MergeError
from harness.merge import engine, gpu, merge_checkpoints
from harness.merge.buffers import BufferPool

pytestmark = pytest.mark.timeout(120)  # a deadlock fails instead of hanging


class Trace:
    """Stages that only record what the driver asks for, in order."""

    def __init__(self, fail_at: str | None = None):
        self.log: list[str] = []
        self.fail_at = fail_at

    def _do(self, what: str) -> None:
        self.log.append(what)
        if what == self.fail_at:
            raise RuntimeError(f"failed at {what}")

    def upload(self, index, loaded):
        self._do(f"up{index}")
        return index

    def compute(self, flight):
        self._do(f"compute{flight}")

    def wait(self, flight):
        self._do(f"wait{flight}")
        return set()

    def abandon(self):
        self.log.append("abandon")


def _drive(count: int, nbytes: int, budget: int, stages: Trace, fail_read: int = -1) -> list:
    def read(i: int) -> Future:
        stages.log.append(f"read{i}")
        f = Future()
        if i == fail_read:
            f.set_exception(OSError(f"cannot read unit {i}"))
        else:
            f.set_result(i)
        return f

    gpu.run(count, read, [nbytes] * count, budget, stages,
            lambda i, loaded, finite: stages.log.append(f"finish{i}"))
    return stages.log


def test_schedule_overlaps_reads_copies_and_compute():
    """Unit i+1 uploads before unit i computes, unit i+2 is read meanwhile, and the host waits
    for a unit's download only after queuing the next unit's compute."""
    log = _drive(5, 10, 1000, Trace())
    assert log == ["read0", "read1", "up0",
                   "read2", "up1", "compute0",
                   "read3", "up2", "compute1", "wait0", "finish0",
                   "read4", "up3", "compute2", "wait1", "finish1",
                   "up4", "compute3", "wait2", "finish2",
                   "wait3", "finish3", "compute4", "wait4", "finish4"]


def test_schedule_under_a_small_budget_runs_units_one_by_one():
    log = _drive(3, 10, 5, Trace())
    assert log == ["read0", "read1", "up0",
                   "compute0", "wait0", "finish0", "read2", "up1",
                   "compute1", "wait1", "finish1", "up2",
                   "compute2", "wait2", "finish2"]
    # room for two units: the oldest is finished before the third is waited for
    log = _drive(4, 10, 25, Trace())
    assert log[:9] == ["read0", "read1", "up0", "read2", "up1", "compute0",
                       "wait0", "finish0", "read3"]
    assert [x for x in log if x.startswith("finish")] == [f"finish{i}" for i in range(4)]


@pytest.mark.parametrize("fail_at", ["up2", "compute1", "wait0"])
def test_schedule_stops_at_the_first_failure(fail_at):
    stages = Trace(fail_at)
    with pytest.raises(RuntimeError, match=f"failed at {fail_at}"):
        _drive(5, 10, 1000, stages)
    assert stages.log[-2:] == [fail_at, "abandon"]
    with pytest.raises(OSError, match="cannot read unit 2"):
        _drive(5, 10, 1000, Trace(), fail_read=2)


def test_units_larger_than_the_pool_do_not_deadlock():
    """The real pool and prefetch thread, writers that give buffers back late: a budget below
    one unit makes the pipeline sequential, never stuck."""
    pool = BufferPool(1000)
    stages = Trace()
    given = []
    with ThreadPoolExecutor(max_workers=1) as prefetch:
        def read(i: int) -> Future:
            return prefetch.submit(lambda: [pool.take(600), pool.take(600, 600)])

        def finish(i, bufs, finite):
            def later():
                time.sleep(0.01)
                for b in bufs:
                    pool.give(b)
                given.append(i)

            threading.Thread(target=later).start()

        try:
            gpu.run(6, read, [1200] * 6, pool.budget, stages, finish)
        finally:
            pool.close()  # wakes a stuck prefetch thread, should this test fail
    deadline = time.time() + 10
    while len(given) < 6 and time.time() < deadline:
        time.sleep(0.01)
    assert sorted(given) == list(range(6)) and pool.peak <= 1200


class HostStages:
    """CudaStages' contract on the CPU: the 'device' copies are clones, merged by the engine's
    own merge, copied back, and checked by their float32 sums."""

    made: list[HostStages] = []

    def __init__(self, device, work_of, merge):
        self.work_of, self.merge = work_of, merge
        self.log: list[str] = []
        HostStages.made.append(self)

    def upload(self, index, loaded):
        self.log.append(f"up{index}")
        work = self.work_of(index, loaded)
        return {"index": index, "host": work,
                "dev": [(plan, b.clone(), t.clone()) for plan, b, t in work]}

    def compute(self, flight):
        self.log.append(f"compute{flight['index']}")
        self.merge(flight["dev"])
        for (_, _, host), (_, _, dev) in zip(flight["host"], flight["dev"]):
            host.copy_(dev)
        flight["finite"] = {plan.tuned for plan, _, t in flight["dev"]
                            if t.is_floating_point() and math.isfinite(float(t.float().sum()))}

    def wait(self, flight):
        return flight["finite"]

    def abandon(self):
        self.log.append("abandon")


@pytest.fixture
def host_pipeline(monkeypatch):
    """merge.device=cuda runs the pipeline with HostStages (no GPU needed)."""
    monkeypatch.setattr(engine, "pick_device", lambda device: torch.device(device))
    monkeypatch.setattr(gpu, "CudaStages", HostStages)
    HostStages.made.clear()
    return HostStages.made


def _files(out):
    return {f"{d}/{f.name}": f.read_bytes() for d in ("llm", "mllm")
            for f in sorted((out / d).glob("*.safetensors"))}


@pytest.mark.parametrize("method,params", [("ties", {"density": 0.3}),
                                           ("neuron_fusion", {"ratio": 0.1}),
                                           ("mllm", {})])
@pytest.mark.parametrize("memory_mb", [768, 0])
def test_pipeline_in_the_engine_gives_the_cpu_bytes(tmp_path, tiny_llama, tiny_llava_new,
                                                    host_pipeline, method, params, memory_mb):
    want = merge_checkpoints(tiny_llama, tiny_llava_new, method, params, out=tmp_path / "cpu",
                             device="cpu", progress=False)
    got = merge_checkpoints(tiny_llama, tiny_llava_new, method, params, out=tmp_path / "pipe",
                            device="cuda", progress=False, memory_mb=memory_mb)
    assert [len(s.log) > 0 for s in host_pipeline] == [True]
    assert got["device"] == "cuda" and got["neurons_located"] == want["neurons_located"]
    assert _files(tmp_path / "pipe") == _files(tmp_path / "cpu")
    log = host_pipeline[0].log
    if memory_mb:  # unit 1 goes up before unit 0 is merged
        assert log[:3] == ["up0", "up1", "compute0"]
    else:
        assert log[:3] == ["up0", "compute0", "up1"]


def test_pipeline_skips_the_host_check_of_tensors_found_finite(tmp_path, tiny_llama,
                                                              tiny_llava_new, host_pipeline,
                                                              monkeypatch):
    checked = []
    real = engine._check_finite
    monkeypatch.setattr(engine, "_check_finite",
                        lambda plan, out, method: (checked.append(plan), real(plan, out, method)))
    merge_checkpoints(tiny_llama, tiny_llava_new, "task_arithmetic", {}, out=tmp_path / "x",
                      device="cuda", progress=False)
    assert checked and all(plan.base is None for plan in checked)


def test_pipeline_failure_cleans_up(tmp_path, tiny_llama, tiny_llava_new, host_pipeline,
                                    monkeypatch):
    """A non-finite merge is the engine's MergeError; a failing stage stops the merge, closes the
    pool (the prefetch thread is not left waiting) and leaves no output."""
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan_tuned"
    bad.mkdir()
    for f in tiny_llava_new.iterdir():
        if f.suffix != ".safetensors":
            (bad / f.name).write_bytes(f.read_bytes())
    w = load_file(str(tiny_llava_new / "model.safetensors"))
    w["model.language_model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(w, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MergeError, match="layers.1.mlp.up_proj"):
        merge_checkpoints(tiny_llama, bad, "task_arithmetic", {}, out=tmp_path / "nan",
                          device="cuda", progress=False)
    assert host_pipeline[-1].log[-1] == "abandon"
    assert not (tmp_path / "nan").exists() and not list(tmp_path.glob(".nan.tmp-*"))

    def broken(self, flight):
        raise RuntimeError("device lost")

    monkeypatch.setattr(HostStages, "compute", broken)
    with pytest.raises(RuntimeError, match="device lost"):
        merge_checkpoints(tiny_llama, tiny_llava_new, "ties", {}, out=tmp_path / "lost",
                          device="cuda", progress=False, memory_mb=0)
    assert not (tmp_path / "lost").exists() and not list(tmp_path.glob(".lost.tmp-*"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_a_config_error(tmp_path, tiny_llama, tiny_llava_new, device):
    with pytest.raises(ConfigError, match="no CUDA device is available; use merge.device=cpu"):
        merge_checkpoints(tiny_llama, tiny_llava_new, "ties", {}, out=tmp_path / "x",
                          device=device, progress=False)


def test_cpu_merges_do_not_pin_and_pinning_without_cuda_is_harmless(tmp_path, tiny_llama,
                                                                   tiny_llava_new, monkeypatch):
    pins = []

    def pool(budget, pin=False):
        pins.append(pin)
        return BufferPool(budget, pin=True)  # asked to pin: without CUDA it must not break

    want = merge_checkpoints(tiny_llama, tiny_llava_new, "dare", {}, out=tmp_path / "plain",
                             device="cpu", progress=False)
    monkeypatch.setattr(engine, "BufferPool", pool)
    got = merge_checkpoints(tiny_llama, tiny_llava_new, "dare", {}, out=tmp_path / "pinned",
                            device="cpu", progress=False)
    assert pins == [False] and got["seconds"] > 0 and want["device"] == "cpu"
    assert _files(tmp_path / "pinned") == _files(tmp_path / "plain")
    if not torch.cuda.is_available():
        p = BufferPool(100, pin=True)
        assert not p.pin and not p.take(10).is_pinned()
        p.clear()
