"""The streaming merge executor: the only code that reads shards, schedules tensors, writes
shards and the merge.json manifest.

Work proceeds one unit at a time — a tensor, or for Neuron-Fusion one layer's FFN or attention
group — so peak memory is bounded by the largest unit, not the model. A reader thread prefetches
the next unit while the current one is merged (float32, on the chosen device), and a writer
thread saves full shards, so reading, computing and writing overlap.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.errors import ConfigError, MergeError
from harness.merge.neurons import parse_role
from harness.merge.outputs import (
    check_free_disk,
    write_llm_files,
    write_mllm_files,
)
from harness.merge.registry import get_method, make_params
from harness.merge.report import MERGE_JSON, identity_digest, load_merge_report, merge_lock
from harness.models.checkpoint import CheckpointReader, PlannedWriter
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
                      shard_size_mb: int = 2000, progress: bool = True) -> dict:
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
        progress: show a progress bar.

    Returns:
        The merge report (what merge.json holds).
    """
    if out is None:
        raise ConfigError("merge_checkpoints needs out=<directory>")
    spec = get_method(method)
    p = make_params(spec, params)
    base_dir, tuned_dir = resolve_model(base), resolve_model(mllm)
    dev = pick_device(device)
    out = Path(out)
    base_reader, tuned_reader = CheckpointReader(base_dir), CheckpointReader(tuned_dir)
    identity = {
        "method": method, "params": dataclasses.asdict(p), "seed": int(seed),
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
                              shard_size_mb, progress)
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
             dev: torch.device, seed: int, shard_size_mb: int, progress: bool) -> dict:
    start = time.perf_counter()
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
    llm_bytes = sum(_nbytes(tuned_reader, pl.tuned) for pl in plans if pl.llm_name)
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
    located: dict[str, dict[str, list[int]]] = {}
    bar = tqdm(total=tuned_reader.nbytes(), unit="B", unit_scale=True, disable=not progress,
               desc=f"merge {spec.name}", dynamic_ncols=True)
    n_done = 0
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
            pending = pool.submit(_load_unit, base_reader, tuned_reader, units[0], dev)
            for i, unit in enumerate(units):
                loaded = pending.result()
                if i + 1 < len(units):
                    pending = pool.submit(_load_unit, base_reader, tuned_reader, units[i + 1], dev)
                results = _merge_unit(spec, p, unit, loaded, seed, located)
                for plan, tensor in results:
                    if mllm_writer is not None:
                        mllm_writer.add(plan.tuned, tensor)
                    if plan.llm_name is not None:
                        llm_writer.add(plan.llm_name, tensor)
                    bar.update(tensor.numel() * tensor.element_size())
                n_done += len(unit)
                bar.set_postfix(tensors=f"{n_done}/{len(plans)}")
                del loaded, results
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
        "device": str(dev),
        "bytes_read": base_reader.nbytes() + tuned_reader.nbytes(),
        "versions": library_versions(),
    }


def _nbytes(reader: CheckpointReader, name: str) -> int:
    n = 1
    for d in reader.shape(name):
        n *= d
    return n * {"F64": 8, "F32": 4, "I64": 8, "I32": 4}.get(reader.dtype_name(name), 2)


def _vocab_rows(reader: CheckpointReader, plans: list[TensorPlan]) -> int | None:
    for pl in plans:
        if pl.llm_name == "model.embed_tokens.weight":
            return reader.shape(pl.tuned)[0]
    return None


def _load_unit(base_reader, tuned_reader, unit: list[TensorPlan], dev: torch.device):
    """Read one unit's tensors: (base float32 on dev | None, tuned raw, tuned float32 | None)."""
    loaded = []
    for plan in unit:
        tuned_raw = tuned_reader.get(plan.tuned)
        if plan.base is None:
            loaded.append((None, tuned_raw, None))
            continue
        base = base_reader.get(plan.base)
        tuned = tuned_raw
        if plan.shared_rows is not None:
            tuned = tuned_raw[: plan.shared_rows]
        # `base` is a fresh buffer from the reader, so methods may work in place in it
        loaded.append((base.to(dev, torch.float32, non_blocking=True), tuned_raw,
                       tuned.to(dev, torch.float32, non_blocking=True)))
    return loaded


def _finish(plan: TensorPlan, merged: torch.Tensor, tuned_raw: torch.Tensor,
            method: str) -> torch.Tensor:
    """Check, cast to the tuned dtype, move to CPU, append extra vocab rows from the tuned model."""
    out = merged.to(tuned_raw.dtype)
    # A sum is NaN/Inf whenever an entry is, and costs ~1/10 of isfinite().all(); only when it
    # is not finite (or overflowed) is the exact check run.
    if out.is_floating_point() and not math.isfinite(float(out.sum())) \
            and not bool(torch.isfinite(out).all()):
        raise MergeError(f"merged tensor {plan.tuned} has NaN or Inf values (method {method}"
                         f", output dtype {str(out.dtype).removeprefix('torch.')}); check that "
                         f"both inputs are finite and the parameters are sane")
    out = out.cpu()
    if plan.shared_rows is not None:
        out = torch.cat([out, tuned_raw[plan.shared_rows:]], dim=0)
    return out


def _merge_unit(spec, p, unit, loaded, seed: int, located: dict) -> list:
    """Merge one unit; returns [(plan, output tensor)]."""
    if spec.kind == "group" and unit[0].base and parse_role(unit[0].base):
        from harness.merge.methods.neuron_fusion import merge_neuron_fusion
        roles = {parse_role(pl.base)[1]: (pl, ld) for pl, ld in zip(unit, loaded)}
        merged, loc = merge_neuron_fusion({r: ld[0] for r, (_, ld) in roles.items()},
                                          {r: ld[2] for r, (_, ld) in roles.items()}, p)
        layer = str(parse_role(unit[0].base)[0])
        located.setdefault(layer, {}).update(loc)
        return [(pl, _finish(pl, merged[r], ld[1], spec.name)) for r, (pl, ld) in roles.items()]
    results = []
    for plan, (base, tuned_raw, tuned) in zip(unit, loaded):
        if base is None:
            results.append((plan, tuned_raw))
            continue
        merged = spec.fn(base, tuned, p, (seed, plan.base))
        results.append((plan, _finish(plan, merged, tuned_raw, spec.name)))
    return results
