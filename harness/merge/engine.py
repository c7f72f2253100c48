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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import resource
import shutil
import threading
import time
from collections.abc import Callable, Container
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.errors import ConfigError, MergeError
from harness.merge import accel
from harness.merge.buffers import MEMORY_MB, BufferPool
from harness.merge.identity import method_identity
from harness.merge.neurons import parse_role
from harness.merge.outputs import (
    check_free_disk,
    write_llm_files,
    write_mllm_files,
)
from harness.merge.registry import BASE, TUNED, Method, get_method, make_params
from harness.merge.report import (
    MERGE_JSON,
    identity_digest,
    load_merge_report,
    merge_lock,
)
from harness.merge.sanity import PairCheck
from harness.merge.stream import MergeContext, lerp_into, release_scratch
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
        params: the method's parameters; missing ones take their defaults.
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
    dev = pick_device(device)
    if kernels not in accel.KERNEL_SETTINGS:
        raise ConfigError(f"merge.kernels={kernels!r} is not valid; choose one of "
                          f"{', '.join(accel.KERNEL_SETTINGS)}")
    out = Path(out)
    base_reader, tuned_reader = CheckpointReader(base_dir), CheckpointReader(tuned_dir)
    identity = {
        **method_identity(method, params, seed),
        "base": {"path": str(base_dir), "files": base_reader.identity()},
        "mllm": {"path": str(tuned_dir), "files": tuned_reader.identity()},
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
            report = _execute(base_reader, tuned_reader, spec, p, tmp, dev, int(seed),
                              shard_size_mb, progress, memory_mb, kernels,
                              bool(allow_unrelated))
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


def _units(plans: list[TensorPlan], grouped: bool) -> list[list[TensorPlan]]:
    """Work units in file order: single tensors, or a layer's FFN / attention group."""
    units, by_key = [], {}
    for plan in plans:
        role = parse_role(plan.base) if (grouped and plan.base) else None
        if role is None:
            units.append([plan])
            continue
        layer, r = role
        key = (layer, "ffn" if r in ("gate", "up", "down") else "attn")
        if key not in by_key:
            by_key[key] = []
            units.append(by_key[key])
        by_key[key].append(plan)
    return units


def _execute(base_reader: CheckpointReader, tuned_reader: CheckpointReader, spec, p, out: Path,
             dev: torch.device, seed: int, shard_size_mb: int, progress: bool,
             memory_mb: int, kernels: str, allow_unrelated: bool) -> dict:
    start = time.perf_counter()
    if kernels == "auto" and dev.type == "cpu":  # loads while the merge starts on the torch path
        accel.preload(spec, {TORCH_DTYPES.get(tuned_reader.dtype_name(n))
                                  for n in tuned_reader.names()},
                      sum(math.prod(tuned_reader.shape(n)) for n in tuned_reader.names()))
    base_cfg, tuned_cfg = read_config(base_reader.directory), read_config(tuned_reader.directory)
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

    shard_bytes = int(shard_size_mb) * 1024 * 1024
    units = _units(plans, spec.kind == "group")
    order = [pl for unit in units for pl in unit]  # shards follow the order tensors are produced
    spec_of = {pl.tuned: (tuned_reader.shape(pl.tuned), tuned_reader.dtype_name(pl.tuned))
               for pl in order}
    llm_writer = PlannedWriter(out / "llm", [(pl.llm_name, *spec_of[pl.tuned]) for pl in order
                                             if pl.llm_name is not None], shard_bytes)
    mllm_writer = PlannedWriter(out / "mllm", [(pl.tuned, *spec_of[pl.tuned]) for pl in order],
                                shard_bytes) if multimodal else None
    pool = BufferPool(int(memory_mb) * 1024 * 1024, pin=dev.type == "cuda")
    ctx = MergeContext(seed=seed)
    check = PairCheck(allow_unrelated, where) if spec.reads_base else None
    located: dict[str, dict[str, list[int]]] = {}
    bar = tqdm(total=tuned_reader.nbytes(), unit="B", unit_scale=True, disable=not progress,
               desc=f"merge {spec.name}", dynamic_ncols=True)
    n_done = 0

    def finish(i: int, loaded: list[_Loaded], finite: Container[str] = ()) -> None:
        """Unit i is merged: check it (unless the GPU found it finite), hand it to the writers."""
        nonlocal n_done
        for plan, item in zip(units[i], loaded):
            if plan.tuned not in finite:
                _check_finite(plan, item.tuned, spec.name)
            if item.base_buf is not None:
                pool.give(item.base_buf)
            users = [w for w, name in ((mllm_writer, plan.tuned), (llm_writer, plan.llm_name))
                     if w is not None and name is not None]
            release = _release_after(len(users), pool, item.tuned_buf)
            for w in users:
                w.add(plan.tuned if w is mllm_writer else plan.llm_name, item.tuned, release)
            bar.update(item.tuned_buf.numel())
        n_done += len(units[i])
        bar.set_postfix(tensors=f"{n_done}/{len(plans)}")

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as prefetch:
            def read(i: int) -> Future:
                return prefetch.submit(_load_unit, pool, base_reader, tuned_reader, units[i],
                                       spec.reads_base, check)

            try:
                if dev.type == "cuda":
                    _merge_on_cuda(spec, p, units, read, pool, ctx, dev, located, finish,
                                   base_reader, tuned_reader)
                else:
                    pending = read(0)
                    for i, unit in enumerate(units):
                        loaded = pending.result()
                        if i + 1 < len(units):
                            pending = read(i + 1)
                        _merge_unit(spec, p, unit, loaded, ctx, located, kernels)
                        finish(i, loaded)
                        del loaded
                if check is not None:  # a model with fewer matrices than the sample
                    check.decide()
            except BaseException:
                pool.close()  # a prefetch waiting for buffers must not wait forever
                raise
        llm_writer.close()
        if mllm_writer is not None:
            mllm_writer.close()
    except BaseException:
        llm_writer.abort()
        if mllm_writer is not None:
            mllm_writer.abort()
        raise
    finally:
        bar.close()
        pool.clear()
        release_scratch()

    write_llm_files(out / "llm", tuned_reader.directory, base_reader.directory, tuned_cfg,
                    multimodal, _vocab_rows(tuned_reader, plans))
    if multimodal:
        write_mllm_files(out / "mllm", tuned_reader.directory)
    if located:
        (out / "neurons_located.json").write_text(json.dumps(located))
    counts = {"matched": sum(1 for pl in plans if pl.base),
              "copied": sum(1 for pl in plans if not pl.base),
              "unmatched": len(unmatched)}
    log.info("tensors: %(matched)d matched, %(copied)d copied, %(unmatched)d unmatched", counts)
    from harness.versions import library_versions
    return {
        "method": spec.name, "params": dataclasses.asdict(p), "seed": seed,
        "layout": layout, "multimodal": multimodal,
        "counts": counts, "unmatched": unmatched[:50],
        "neurons_located": {layer: {g: len(ix) for g, ix in groups.items()}
                            for layer, groups in located.items()},
        "outputs": {"llm": "llm", "mllm": "mllm" if multimodal else None},
        "seconds": round(time.perf_counter() - start, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_buffers_mb": round(pool.peak / 2**20, 1),
        "device": str(dev),
        "pair_check": check.summary() if check is not None else None,
        "bytes_read": base_reader.nbytes() + tuned_reader.nbytes(),
        "versions": library_versions(),
    }


def _vocab_rows(reader: CheckpointReader, plans: list[TensorPlan]) -> int | None:
    for pl in plans:
        if pl.llm_name == "model.embed_tokens.weight":
            return reader.shape(pl.tuned)[0]
    return None


@dataclasses.dataclass
class _Loaded:
    """One tensor of a unit as read: pool buffers and typed views of them (CPU)."""

    tuned_buf: torch.Tensor
    tuned: torch.Tensor                    # the whole tuned tensor; the merge is written over it
    base_buf: torch.Tensor | None = None
    base: torch.Tensor | None = None


def _load_unit(pool: BufferPool, base_reader: CheckpointReader, tuned_reader: CheckpointReader,
               unit: list[TensorPlan], reads_base: bool,
               check: PairCheck | None = None) -> list[_Loaded]:
    """Read one unit's tensors into pool buffers (runs on the prefetch thread) and show the
    matched ones to the pair check (which refuses an unrelated base here, before the merge of
    the first matrices)."""
    loaded, held = [], 0
    for plan in unit:
        n = tuned_reader.nbytes_of(plan.tuned)
        buf = pool.take(n, held)
        held += n
        item = _Loaded(buf, tuned_reader.read_into(plan.tuned, buf))
        if plan.base is not None and reads_base:
            n = base_reader.nbytes_of(plan.base)
            item.base_buf = pool.take(n, held)
            held += n
            item.base = base_reader.read_into(plan.base, item.base_buf)
            if check is not None:
                shared = item.tuned if plan.shared_rows is None else item.tuned[: plan.shared_rows]
                check.observe(plan.base, item.base, shared)
        loaded.append(item)
    return loaded


def _release_after(n_users: int, pool: BufferPool, buf: torch.Tensor):
    """A callback that returns `buf` to the pool on its n_users-th call (now if n_users = 0)."""
    if n_users == 0:
        pool.give(buf)
        return None
    left = [n_users]
    lock = threading.Lock()

    def written() -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            pool.give(buf)

    return written


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


def _work_of(spec: Method, unit: list[TensorPlan],
             loaded: list[_Loaded]) -> list[tuple[TensorPlan, torch.Tensor, torch.Tensor]]:
    """(plan, base, the tuned rows shared with the base) of each tensor of a unit that is
    merged (extra vocabulary rows stay the tuned model's)."""
    return [(plan, item.base,
             item.tuned if plan.shared_rows is None else item.tuned[: plan.shared_rows])
            for plan, item in zip(unit, loaded) if plan.base is not None and spec.reads_base]


def _merge_work(spec: Method, p, work: list[tuple[TensorPlan, torch.Tensor, torch.Tensor]],
                ctx: MergeContext, located: dict, kernels: str) -> None:
    """Merge one unit's work (from _work_of, all on one device), each result written over its
    tuned tensor."""
    if not work:
        return
    if spec.kind == "group" and parse_role(work[0][0].base):
        layer = parse_role(work[0][0].base)[0]
        roles = {parse_role(pl.base)[1]: (b, t) for pl, b, t in work}
        found = merge_group(spec, {r: b for r, (b, _) in roles.items()},
                            {r: t for r, (_, t) in roles.items()}, p, ctx)
        located.setdefault(str(layer), {}).update(found)
    else:
        for plan, base, tuned in work:
            merge_tensor(spec, base, tuned, p, dataclasses.replace(ctx, name=plan.base), kernels)


def _merge_unit(spec: Method, p, unit: list[TensorPlan], loaded: list[_Loaded],
                ctx: MergeContext, located: dict, kernels: str) -> None:
    """Merge one unit on the CPU, in its read buffers."""
    _merge_work(spec, p, _work_of(spec, unit, loaded), ctx, located, kernels)


def _merge_on_cuda(spec: Method, p, units: list[list[TensorPlan]],
                   read: Callable[[int], Future], pool: BufferPool, ctx: MergeContext,
                   dev: torch.device, located: dict, finish: Callable[..., None],
                   base_reader: CheckpointReader, tuned_reader: CheckpointReader) -> None:
    """Every unit through the CUDA pipeline (harness/merge/gpu.py): read, upload, merge,
    download and finish, overlapped."""
    from harness.merge import gpu

    nbytes = [sum(tuned_reader.nbytes_of(pl.tuned)
                  + (base_reader.nbytes_of(pl.base) if pl.base is not None and spec.reads_base
                     else 0) for pl in unit) for unit in units]
    stages = gpu.CudaStages(dev, lambda i, loaded: _work_of(spec, units[i], loaded),
                            lambda work: _merge_work(spec, p, work, ctx, located, "torch"))
    gpu.run(len(units), read, nbytes, pool.budget, stages, finish)


def merge_tensor(spec: Method, base: torch.Tensor, tuned: torch.Tensor, p, ctx: MergeContext,
                 kernels: str = "torch") -> torch.Tensor:
    """One tensor of a `tensor` method (or outside the groups of a `group` one), written over
    `tuned`: the accelerator when `kernels` allows and it takes the pair, else the method's
    weight and the chunked lerp (harness/merge/stream.py)."""
    if accel.try_merge(spec, base, tuned, p, ctx, kernels):
        return tuned
    return apply_weight(base, tuned, spec.weight(base, tuned, p, ctx), ctx, spec.rows)


def merge_group(spec: Method, bases: dict[str, torch.Tensor], tuneds: dict[str, torch.Tensor],
                p, ctx: MergeContext) -> dict:
    """One neuron group of a `group` method (role → tensor), each role written over its tuned
    tensor with its per-row or per-column weights; returns what the method located."""
    weights, found = spec.group_weight(bases, tuneds, p, ctx)
    for role, base in bases.items():
        w = weights[role]
        if isinstance(w, tuple):
            vector, axis = w

            def w(lo, hi, fb, ft, vector=vector, axis=axis):
                return (vector[lo:hi, None] if axis == 0 else vector[None, :]).expand_as(fb)

            lerp_into(base, tuneds[role], w, ctx, rows=True)
        else:
            apply_weight(base, tuneds[role], w, ctx)
    return found


def apply_weight(base: torch.Tensor, tuned: torch.Tensor, w, ctx: MergeContext,
                 rows: bool = False) -> torch.Tensor:
    """tuned ← lerp(base, tuned, w) for a method's weight w (a float, a chunk weight, BASE or
    TUNED; harness/merge/registry.py)."""
    if isinstance(w, str):
        if w == BASE:
            return tuned.copy_(base)
        if w == TUNED:
            return tuned
        raise MergeError(f"unknown weight {w!r} for {ctx.name}")
    return lerp_into(base, tuned, w, ctx, rows=rows)
