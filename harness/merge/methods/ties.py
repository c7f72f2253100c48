"""TIES-Merging (Yadav et al., NeurIPS 2023), with one tuned model.

Trim: keep the k = round(density·n) entries of Δ with the largest |Δ| in each tensor, zero the
rest. Elect sign / disjoint merge: with a single tuned model these are the identity.
θ = θ_base + scale·Δ_kept
"""

from dataclasses import dataclass

import torch

from harness.merge.fused import fused_ok
from harness.merge.registry import check_range, register
from harness.merge.select import DeltaTopK
from harness.merge.stream import MergeContext, abs_delta, lerp_into, scratch


@dataclass(frozen=True)
class TiesParams:
    """density: share of entries kept, in (0, 1]; scale: multiplier of the kept Δ, ≥ 0."""

    density: float = 0.2
    scale: float = 1.0

    def __post_init__(self):
        check_range("ties", "density", self.density, 0.0, 1.0, lo_open=True)
        check_range("ties", "scale", self.scale, 0.0, None)


def merge_ties(base: torch.Tensor, tuned: torch.Tensor, p: TiesParams,
               ctx: MergeContext) -> torch.Tensor:
    """base + scale·Δ on the top-k |Δ| entries, base elsewhere (written over `tuned`)."""
    k = int(round(p.density * base.numel()))
    if fused_ok(base, tuned, ctx, "topk"):
        from harness.merge import kernels

        return kernels.topk_band_merge(base, tuned, k, 0, p.scale)
    top = DeltaTopK(base, tuned, [k], ctx)

    def weight(lo, hi, fb, ft):
        w = top.mask(0, abs_delta(fb, ft), out=scratch(3, fb.numel(), fb.device))
        return w if p.scale == 1.0 else w.mul_(p.scale)

    return lerp_into(base, tuned, weight, ctx)


register("ties", TiesParams, merge_ties, fused="topk")
