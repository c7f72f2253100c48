"""Model Breadcrumbs (Davari & Belilovsky, ECCV 2024).

Drop the g = round(gamma·n) entries of Δ with the largest |Δ| (outliers), keep the next
k = round(density·n) largest, zero the rest.
θ = θ_base + scale·Δ_kept
"""

from dataclasses import dataclass

import torch

from harness.merge.fused import fused_ok
from harness.merge.registry import check_range, register
from harness.merge.select import DeltaTopK
from harness.merge.stream import MergeContext, abs_delta, lerp_into, scratch


@dataclass(frozen=True)
class BreadcrumbsParams:
    """density in (0, 1]; gamma (share of top outliers dropped) in [0, 1); scale ≥ 0."""

    density: float = 0.2
    gamma: float = 0.01
    scale: float = 1.0

    def __post_init__(self):
        check_range("breadcrumbs", "density", self.density, 0.0, 1.0, lo_open=True)
        check_range("breadcrumbs", "gamma", self.gamma, 0.0, 1.0, hi_open=True)
        check_range("breadcrumbs", "scale", self.scale, 0.0, None)


def merge_breadcrumbs(base: torch.Tensor, tuned: torch.Tensor, p: BreadcrumbsParams,
                      ctx: MergeContext) -> torch.Tensor:
    """base + scale·Δ on ranks [g, g + k) of |Δ| (descending), base elsewhere (written over
    `tuned`); both thresholds come from one selection pass."""
    n = base.numel()
    g = int(round(p.gamma * n))
    k = int(round(p.density * n))
    if fused_ok(base, tuned, ctx, "topk"):
        from harness.merge import kernels

        return kernels.topk_band_merge(base, tuned, min(n, g + k), g, p.scale)
    top = DeltaTopK(base, tuned, [min(n, g + k), g], ctx)

    def weight(lo, hi, fb, ft):
        mag = abs_delta(fb, ft)
        w = top.mask(0, mag, out=scratch(3, fb.numel(), fb.device))
        if g > 0:  # in the top g + k and not in the top g
            w.sub_(top.mask(1, mag, out=scratch(5, fb.numel(), fb.device)))
        return w if p.scale == 1.0 else w.mul_(p.scale)

    return lerp_into(base, tuned, weight, ctx)


register("breadcrumbs", BreadcrumbsParams, merge_breadcrumbs, fused="topk")
