"""The merge step of one unit: a method's weight applied to tensors already in memory.

The engine (harness/merge/engine.py) calls `merge_work` for every unit, on the CPU in the read
buffers or on the GPU (harness/merge/gpu.py) on device copies: the same code on both. A tensor
of a `tensor` method goes to the accelerator when it takes it (harness/merge/accel.py, the one
dispatch point), else through the method's weight and the chunked lerp
(harness/merge/stream.py); a layer's neuron group of a `group` method gets per-row or
per-column weights.
"""

from __future__ import annotations

import dataclasses

import torch

import harness.merge.accel as accel
from harness.errors import MergeError
from harness.merge.gpu import Work
from harness.merge.neurons import parse_role
from harness.merge.registry import BASE, TUNED, Method
from harness.merge.stream import MergeContext, lerp_into


def merge_work(spec: Method, p, work: list[Work], ctx: MergeContext, located: dict,
               kernels: str) -> None:
    """Merge one unit's work (all on one device), each result written over its tuned tensor;
    a group method's located neurons go into `located` (layer → group → indices)."""
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
