"""The streaming merge executor: the only code that reads shards, schedules tensors, writes
shards and the merge.json manifest.

Work proceeds one unit at a time — a tensor, or for Neuron-Fusion one layer's FFN or attention
group. A prefetch thread reads the next unit into buffers of a byte-budgeted pool
(harness/merge/buffers.py) while the current one is merged in place over its tuned tensor
(float32 chunks, harness/merge/stream.py), and writer threads pwrite each result to its planned
place in the output shards and hand the buffer back. With merge.device=cuda the merge runs on
the GPU, overlapped with the copies there and back (harness/merge/gpu.py). Peak memory is the
pool budget (merge.memory_mb), not the model; docs/performance.md has the design and the
measurements.

`merge_checkpoints` resolves the settings once, finds or locks the output, and runs a
`MergeJob`: `plan` (tensors matched, disk checked, units and output shards planned), `run` (the
units through one step — read on the prefetch thread (harness/merge/units.py), merged by
harness/merge/apply.py in `_cpu_loop` or `_cuda_loop`, checked and written in `finish`) and
`report` (merge.json).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import resource
import shutil
import time
from collections.abc import Callable, Container
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import harness.merge.accel as accel
from harness.errors import ConfigError, MergeError
from harness.merge.apply import merge_work
from harness.merge.buffers import MEMORY_MB, BufferPool
from harness.merge.gpu import Work
from harness.merge.identity import method_identity
from harness.merge.outputs import (
    check_free_disk,
    write_llm_files,
    write_mllm_files,
)
from harness.merge.registry import Method, get_method, make_params
from harness.merge.report import (
    MERGE_JSON,
    identity_digest,
    load_merge_report,
    merge_lock,
)
from harness.merge.sanity import PairCheck
from harness.merge.stream import MergeContext, release_scratch
from harness.merge.units import Loaded, load_unit, plan_units, release_after, vocab_rows
from harness.models.checkpoint import TORCH_DTYPES, CheckpointReader, PlannedWriter
from harness.models.keymap import TensorPlan, detect_layout, plan_tensors
from harness.models.pair import is_multimodal, read_config, resolve_model

log = logging.getLogger(__name__)


def pick_device(device: str) -> torch.device:
    """`auto` → cuda when available, else cpu; `cuda` without a GPU is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"merge.device={device!r} is not valid; choose auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"merge.device={device} but no CUDA device is available; "
                          f"use merge.device=cpu or auto")
    return torch.device(device)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a merge runs, resolved and checked once from merge_checkpoints' arguments (the
    merge.* keys of conf/config.yaml)."""

    device: torch.device
    seed: int
    shard_bytes: int
    memory_bytes: int
    progress: bool
    kernels: str
    allow_unrelated: bool

    @classmethod
    def resolve(cls, device: str, seed: int, shard_size_mb: int, memory_mb: int,
                progress: bool, kernels: str, allow_unrelated: bool) -> Settings:
        """Settings from the user's values; ConfigError naming a bad one."""
        if kernels not in accel.KERNEL_SETTINGS:
            raise ConfigError(f"merge.kernels={kernels!r} is not valid; choose one of "
                              f"{', '.join(accel.KERNEL_SETTINGS)}")
        return cls(pick_device(device), int(seed), int(shard_size_mb) * 2**20,
                   int(memory_mb) * 2**20, bool(progress), kernels, bool(allow_unrelated))


def merge_checkpoints(base, mllm, method: str, params: dict | None = None, out=None,
                      device: str = "cpu", seed: int = 0, force: bool = False,
                      shard_size_mb: int = 2000, progress: bool = True,
                      memory_mb: int = MEMORY_MB, kernels: str = "auto",
                      allow_unrelated: bool = False) -> dict:
    """Merge a base LLM with the language model of a tuned model (an MLLM or a causal LM).

    Args:
        base: directory (or HF id in the local cache) of the base LLM.
        mllm: directory (or HF id) of the tuned model.
        method: registered method name (see harness.merge.registry).
        params: the method's parameters; missing (or null) ones take their defaults.
        out: output directory; receives llm/, mllm/ (multimodal tuned models) and merge.json.
        device: auto | cpu | cuda.
        seed: seed of stochastic methods.
        force: redo the merge even when a complete identical one exists at `out`.
        shard_size_mb: maximum size of an output shard.
        memory_mb: budget of the tensor buffers (read, merged in place, written); a larger
            unit than the budget still runs, alone.
        progress: show a progress bar.
        kernels: the optional CPU accelerator (harness/merge/accel.py): `auto` (fused numba
            kernels on CPU where they apply, loaded in the background meanwhile the methods'
            definitions run), `fused` (always, loaded on first use) or `torch` (never); all
            give the same bits.
        allow_unrelated: merge a pair whose first weight matrices differ as much as unrelated
            models do (harness/merge/sanity.py); by default such a pair is a MergeError.

    Returns:
        The merge report (what merge.json holds).
    """
    if out is None:
        raise ConfigError("merge_checkpoints needs out=<directory>")
    spec = get_method(method)
    p = make_params(spec, params)
    base_dir, tuned_dir = resolve_model(base), resolve_model(mllm)
    settings = Settings.resolve(device, seed, shard_size_mb, memory_mb, progress, kernels,
                                allow_unrelated)
    out = Path(out)
    base_reader, tuned_reader = CheckpointReader(base_dir), CheckpointReader(tuned_dir)
    identity = {
        **method_identity(method, params, seed),
        # each side's fingerprint: {"digest", "files": [{file, bytes, sha256}, ...]}
        "base": {"path": str(base_dir), **base_reader.identity()},
        "mllm": {"path": str(tuned_dir), **tuned_reader.identity()},
    }
    digest = identity_digest(identity)
    out.parent.mkdir(parents=True, exist_ok=True)
    with merge_lock(out):
        if not force:
            done = load_merge_report(out)
            if done is not None and done.get("identity") == digest:
                log.info("reusing complete merge %s (same inputs, method, params, seed)", out)
                return done
        # under the lock every temporary directory of `out` is a leftover of a killed merge
        for stale in [*out.parent.glob(f".{out.name}.tmp-*"),
                      *out.parent.glob(f".{out.name}.old-*")]:
            log.info("removing %s, left by an interrupted merge", stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        try:
            job = MergeJob.plan(base_reader, tuned_reader, spec, p, tmp, settings)
            job.run()
            report = job.report()
            report.update({"identity": digest, "inputs": identity, "status": "complete"})
            # returned exactly as stored, so a fresh and a reused merge give the same object
            report = json.loads(json.dumps(report, default=str))
            (tmp / MERGE_JSON).write_text(json.dumps(report, indent=2))
            _swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("merge %s done in %.1f s → %s", method, report["seconds"], out)
    return report


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished temporary directory to `out` (replacing an old output)."""
    if out.exists():
        trash = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


@dataclasses.dataclass
class MergeJob:
    """One merge, as plan → run → report: the readers, the method (spec, params), its work
    units, the buffer pool, the writers and the pair check. `plan` decides everything that
    does not need a tensor's values; `run` streams the units through one step — read, merge
    (`_cpu_loop` or `_cuda_loop`), `finish` — and `report` is what merge.json records."""

    base_reader: CheckpointReader
    tuned_reader: CheckpointReader
    spec: Method
    p: Any
    out: Path
    settings: Settings
    plans: list[TensorPlan]
    unmatched: list[str]
    units: list[list[TensorPlan]]
    layout: str
    multimodal: bool
    tuned_cfg: dict
    pool: BufferPool
    llm_writer: PlannedWriter
    mllm_writer: PlannedWriter | None
    check: PairCheck | None
    ctx: MergeContext
    start: float
    located: dict[str, dict[str, list[int]]] = dataclasses.field(default_factory=dict)
    done: int = 0
    bar: Any = None

    @classmethod
    def plan(cls, base_reader: CheckpointReader, tuned_reader: CheckpointReader, spec: Method,
             p, out: Path, settings: Settings) -> MergeJob:
        """Match the tensors, check the disk, plan the units and the output shards."""
        start = time.perf_counter()
        if settings.kernels == "auto" and settings.device.type == "cpu":
            # loads in the background while the merge starts on the torch path
            accel.preload(spec, {TORCH_DTYPES.get(tuned_reader.dtype_name(n))
                                 for n in tuned_reader.names()},
                          sum(math.prod(tuned_reader.shape(n)) for n in tuned_reader.names()))
        base_cfg = read_config(base_reader.directory)
        tuned_cfg = read_config(tuned_reader.directory)
        multimodal = is_multimodal(tuned_cfg)
        tuned_names = tuned_reader.names()
        layout = detect_layout(tuned_names, str(tuned_reader.directory))
        base_names = set(base_reader.names())
        where = f"base {base_reader.directory}, tuned {tuned_reader.directory}"
        plans, unmatched = plan_tensors(
            base_names, base_reader.shape, tuned_names, tuned_reader.shape, layout,
            bool(base_cfg.get("tie_word_embeddings", False)) or "lm_head.weight" not in base_names,
            where)
        llm_bytes = sum(tuned_reader.nbytes_of(pl.tuned) for pl in plans if pl.llm_name)
        check_free_disk(out.parent, tuned_reader.nbytes() * (1 if multimodal else 0) + llm_bytes)

        units = plan_units(plans, spec.kind == "group")
        order = [pl for unit in units for pl in unit]  # shards follow the order of production
        spec_of = {pl.tuned: (tuned_reader.shape(pl.tuned), tuned_reader.dtype_name(pl.tuned))
                   for pl in order}
        llm_writer = PlannedWriter(out / "llm", [(pl.llm_name, *spec_of[pl.tuned]) for pl in order
                                                 if pl.llm_name is not None],
                                   settings.shard_bytes)
        mllm_writer = PlannedWriter(out / "mllm", [(pl.tuned, *spec_of[pl.tuned]) for pl in order],
                                    settings.shard_bytes) if multimodal else None
        pool = BufferPool(settings.memory_bytes, pin=settings.device.type == "cuda")
        check = PairCheck(settings.allow_unrelated, where) if spec.reads_base else None
        return cls(base_reader, tuned_reader, spec, p, out, settings, plans, unmatched, units,
                   layout, multimodal, tuned_cfg, pool, llm_writer, mllm_writer, check,
                   MergeContext(seed=settings.seed), start)

    def run(self) -> None:
        """Merge every unit and write the outputs (llm/, mllm/, neurons_located.json)."""
        self.bar = tqdm(total=self.tuned_reader.nbytes(), unit="B", unit_scale=True,
                        disable=not self.settings.progress, desc=f"merge {self.spec.name}",
                        dynamic_ncols=True)
        loop = _cuda_loop if self.settings.device.type == "cuda" else _cpu_loop
        writers = [w for w in (self.llm_writer, self.mllm_writer) if w is not None]
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as prefetch:
                def read(i: int) -> Future:
                    return prefetch.submit(load_unit, self.pool, self.base_reader,
                                           self.tuned_reader, self.units[i],
                                           self.spec.reads_base, self.check)

                try:
                    loop(self, read)
                    if self.check is not None:  # a model with fewer matrices than the sample
                        self.check.decide()
                except BaseException:
                    self.pool.close()  # a prefetch waiting for buffers must not wait forever
                    raise
            for w in writers:
                w.close()
        except BaseException:
            for w in writers:
                w.abort()
            raise
        finally:
            self.bar.close()
            self.pool.clear()
            release_scratch()
        write_llm_files(self.out / "llm", self.tuned_reader.directory,
                        self.base_reader.directory, self.tuned_cfg, self.multimodal,
                        vocab_rows(self.tuned_reader, self.plans))
        if self.multimodal:
            write_mllm_files(self.out / "mllm", self.tuned_reader.directory)
        if self.located:
            (self.out / "neurons_located.json").write_text(json.dumps(self.located))

    def merge(self, work: list[Work], kernels: str) -> None:
        """The merge step of one unit's work, on whichever device the work is
        (harness/merge/apply.py)."""
        merge_work(self.spec, self.p, work, self.ctx, self.located, kernels)

    def finish(self, i: int, loaded: list[Loaded], finite: Container[str] = ()) -> None:
        """Unit i is merged: check it (unless the device found it finite), hand it to the
        writers, who give its buffers back once written."""
        for plan, item in zip(self.units[i], loaded):
            if plan.tuned not in finite:
                _check_finite(plan, item.tuned, self.spec.name)
            if item.base_buf is not None:
                self.pool.give(item.base_buf)
            users = [(w, name) for w, name in ((self.mllm_writer, plan.tuned),
                                               (self.llm_writer, plan.llm_name))
                     if w is not None and name is not None]
            release = release_after(len(users), self.pool, item.tuned_buf)
            for w, name in users:
                w.add(name, item.tuned, release)
            self.bar.update(item.tuned_buf.numel())
        self.done += len(self.units[i])
        self.bar.set_postfix(tensors=f"{self.done}/{len(self.plans)}")

    def report(self) -> dict:
        """What merge.json records (the engine adds identity, inputs and status)."""
        from harness.versions import library_versions

        counts = {"matched": sum(1 for pl in self.plans if pl.base),
                  "copied": sum(1 for pl in self.plans if not pl.base),
                  "unmatched": len(self.unmatched)}
        log.info("tensors: %(matched)d matched, %(copied)d copied, %(unmatched)d unmatched",
                 counts)
        return {
            "method": self.spec.name, "params": dataclasses.asdict(self.p),
            "seed": self.settings.seed, "layout": self.layout, "multimodal": self.multimodal,
            "counts": counts, "unmatched": self.unmatched[:50],
            "neurons_located": {layer: {g: len(ix) for g, ix in groups.items()}
                                for layer, groups in self.located.items()},
            "outputs": {"llm": "llm", "mllm": "mllm" if self.multimodal else None},
            "seconds": round(time.perf_counter() - self.start, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_buffers_mb": round(self.pool.peak / 2**20, 1),
            "device": str(self.settings.device),
            "pair_check": self.check.summary() if self.check is not None else None,
            "bytes_read": self.base_reader.nbytes() + self.tuned_reader.nbytes(),
            "versions": library_versions(),
        }


def _cpu_loop(job: MergeJob, read: Callable[[int], Future]) -> None:
    """The step on the CPU: while unit i merges in its read buffers, unit i+1 is read."""
    pending = read(0) if job.units else None
    for i, unit in enumerate(job.units):
        loaded = pending.result()
        if i + 1 < len(job.units):
            pending = read(i + 1)
        _merge_unit(job, unit, loaded)
        job.finish(i, loaded)
        del loaded


def _merge_unit(job: MergeJob, unit: list[TensorPlan], loaded: list[Loaded]) -> None:
    """Merge one unit on the CPU, in its read buffers."""
    job.merge(_work_of(job.spec, unit, loaded), job.settings.kernels)


def _cuda_loop(job: MergeJob, read: Callable[[int], Future]) -> None:
    """The step on a GPU (harness/merge/gpu.py): read, upload, merge, download and finish,
    overlapped across units; the merge is the CPU's, on device copies, by the definitions."""
    from harness.merge import gpu

    reads_base = job.spec.reads_base
    nbytes = [sum(job.tuned_reader.nbytes_of(pl.tuned)
                  + (job.base_reader.nbytes_of(pl.base) if pl.base is not None and reads_base
                     else 0) for pl in unit) for unit in job.units]
    stages = gpu.CudaStages(job.settings.device,
                            lambda i, loaded: _work_of(job.spec, job.units[i], loaded),
                            lambda work: job.merge(work, "torch"))
    gpu.run(len(job.units), read, nbytes, job.pool.budget, stages, job.finish)


def _work_of(spec: Method, unit: list[TensorPlan], loaded: list[Loaded]) -> list[Work]:
    """(plan, base, the tuned rows shared with the base) of each tensor of a unit that is
    merged (extra vocabulary rows stay the tuned model's)."""
    return [(plan, item.base,
             item.tuned if plan.shared_rows is None else item.tuned[: plan.shared_rows])
            for plan, item in zip(unit, loaded) if plan.base is not None and spec.reads_base]


def _check_finite(plan: TensorPlan, out: torch.Tensor, method: str) -> None:
    """MergeError when a tensor to be written, merged or copied, has NaN or Inf entries."""
    if not out.is_floating_point():
        return
    # A sum is NaN/Inf whenever an entry is, and costs ~1/10 of isfinite().all(); only when it
    # is not finite (or overflowed) is the exact check run.
    if math.isfinite(float(out.sum())) or bool(torch.isfinite(out).all()):
        return
    if plan.base is None:
        raise MergeError(f"tensor {plan.tuned} of the tuned model has NaN or Inf values; it is "
                         f"copied unchanged (vision tower, projector, …), so the checkpoint "
                         f"itself is damaged: re-download or rebuild it")
    raise MergeError(f"merged tensor {plan.tuned} has NaN or Inf values (method {method}"
                     f", output dtype {str(out.dtype).removeprefix('torch.')}); check that "
                     f"both inputs are finite and the parameters are sane")
