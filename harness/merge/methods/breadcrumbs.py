"""Model Breadcrumbs (Davari & Belilovsky, ECCV 2024), with one tuned model.

Rank the entries of Δ by |Δ| (descending; ties: lower flat index first); drop the g =
round(gamma·n) largest (outliers), keep the next k = round(density·n), zero the rest.
θ = θ_base + scale·Δ_kept,   i.e. w = scale·1[g ≤ rank < g + k]
"""

from dataclasses import dataclass

import torch

from harness.merge.registry import ChunkWeight, check_range, register
from harness.merge.select import DeltaTopK
from harness.merge.stream import MergeContext, abs_delta


@dataclass(frozen=True)
class BreadcrumbsParams:
    """density in (0, 1]; gamma (share of top outliers dropped) in [0, 1); scale ≥ 0.

    Defaults: chosen on eval=micro_val by +experiment=micro_select (docs/micro.md); they are
    the CLI's too (conf/method/*.yaml leaves each parameter null: its default here).
    """

    density: float = 0.2
    gamma: float = 0.01
    scale: float = 1.0

    def __post_init__(self):
        check_range("breadcrumbs", "density", self.density, 0.0, 1.0, lo_open=True)
        check_range("breadcrumbs", "gamma", self.gamma, 0.0, 1.0, hi_open=True)
        check_range("breadcrumbs", "scale", self.scale, 0.0, None)


def band(p: BreadcrumbsParams, n: int) -> tuple[int, int]:
    """(g, min(n, g + k)): the ranks of |Δ| (0 = largest) in [g, g + k) keep their Δ."""
    g = int(round(p.gamma * n))
    return g, min(n, g + int(round(p.density * n)))


def weight(base: torch.Tensor, tuned: torch.Tensor, p: BreadcrumbsParams,
           ctx: MergeContext) -> ChunkWeight:
    """scale on ranks [g, g + k) of |Δ|, 0 elsewhere: in the top g + k and not in the top g
    (one read-only pass finds both thresholds)."""
    dropped, end = band(p, base.numel())
    top = DeltaTopK(base, tuned, [end, dropped], ctx)

    def chunk(lo: int, hi: int, fb: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        mag = abs_delta(fb, ft)
        return top.mask(0, mag).logical_and_(top.mask(1, mag).logical_not_()).float() \
            .mul_(p.scale)

    return chunk


register("breadcrumbs", BreadcrumbsParams, weight, label="Breadcrumbs", row=60)
