"""TIES-Merging (Yadav et al., NeurIPS 2023), with one tuned model.

Trim: keep the k = round(density·n) entries of Δ with the largest |Δ| in each tensor, zero the
rest. Elect sign / disjoint merge: with a single tuned model these are the identity.
θ = θ_base + scale·Δ_kept
"""

from dataclasses import dataclass

import torch

from harness.merge.registry import check_range, register
from harness.merge.select import topk_mask


@dataclass(frozen=True)
class TiesParams:
    """density: share of entries kept, in (0, 1]; scale: multiplier of the kept Δ, ≥ 0."""

    density: float = 0.2
    scale: float = 1.0

    def __post_init__(self):
        check_range("ties", "density", self.density, 0.0, 1.0, lo_open=True)
        check_range("ties", "scale", self.scale, 0.0, None)


def merge_ties(base: torch.Tensor, tuned: torch.Tensor, p: TiesParams, gen=None) -> torch.Tensor:
    """base + scale·Δ on the top-k |Δ| entries, base elsewhere (in place in `base`)."""
    k = int(round(p.density * base.numel()))
    keep = topk_mask((tuned - base).abs_(), k)
    weight = keep.to(base.dtype).mul_(p.scale)
    return base.lerp_(tuned, weight)


register("ties", TiesParams, merge_ties)
