"""Model Breadcrumbs (Davari & Belilovsky, ECCV 2024).

Drop the g = round(gamma·n) entries of Δ with the largest |Δ| (outliers), keep the next
k = round(density·n) largest, zero the rest.
θ = θ_base + scale·Δ_kept
"""

from dataclasses import dataclass

import torch

from harness.merge.registry import check_range, register
from harness.merge.select import topk_mask


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
                      gen=None) -> torch.Tensor:
    """base + scale·Δ on ranks [g, g + k) of |Δ| (descending), base elsewhere."""
    n = base.numel()
    g = int(round(p.gamma * n))
    k = int(round(p.density * n))
    mag = (tuned - base).abs_()
    keep = topk_mask(mag, min(n, g + k))
    if g > 0:
        keep &= ~topk_mask(mag, g)
    weight = keep.to(base.dtype).mul_(p.scale)
    return base.lerp_(tuned, weight)


register("breadcrumbs", BreadcrumbsParams, merge_breadcrumbs)
