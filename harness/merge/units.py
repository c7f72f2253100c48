"""A merge's units and their buffers: which tensors are merged together, reading a unit into
buffers of the pool (harness/merge/buffers.py) on the prefetch thread, and handing a buffer
back once every writer is done with it. Used by the engine (harness/merge/engine.py).
"""

from __future__ import annotations

import dataclasses
import threading

import torch

from harness.merge.buffers import BufferPool
from harness.merge.neurons import parse_role
from harness.merge.sanity import PairCheck
from harness.models.checkpoint import CheckpointReader
from harness.models.keymap import TensorPlan


def plan_units(plans: list[TensorPlan], grouped: bool) -> list[list[TensorPlan]]:
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


@dataclasses.dataclass
class Loaded:
    """One tensor of a unit as read: pool buffers and typed views of them (CPU)."""

    tuned_buf: torch.Tensor
    tuned: torch.Tensor                    # the whole tuned tensor; the merge is written over it
    base_buf: torch.Tensor | None = None
    base: torch.Tensor | None = None


def load_unit(pool: BufferPool, base_reader: CheckpointReader, tuned_reader: CheckpointReader,
               unit: list[TensorPlan], reads_base: bool,
               check: PairCheck | None = None) -> list[Loaded]:
    """Read one unit's tensors into pool buffers (runs on the prefetch thread) and show the
    matched ones to the pair check (which refuses an unrelated base here, before the merge of
    the first matrices)."""
    loaded, held = [], 0
    for plan in unit:
        n = tuned_reader.nbytes_of(plan.tuned)
        buf = pool.take(n, held)
        held += n
        item = Loaded(buf, tuned_reader.read_into(plan.tuned, buf))
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


def release_after(n_users: int, pool: BufferPool, buf: torch.Tensor):
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


def vocab_rows(reader: CheckpointReader, plans: list[TensorPlan]) -> int | None:
    """Rows of the tuned model's embedding (None without one): the vocabulary the LLM keeps."""
    for pl in plans:
        if pl.llm_name == "model.embed_tokens.weight":
            return reader.shape(pl.tuned)[0]
    return None
