"""TIES-Merging (Yadav et al., NeurIPS 2023), with one tuned model.

Trim: keep the k = round(density·n) entries of Δ with the largest |Δ| in each tensor (ties at
the threshold: lower flat index first), zero the rest. Elect sign / disjoint merge: with a
single tuned model these are the identity.
θ = θ_base + scale·Δ_kept,   i.e. w = scale·1[|Δ| in the top k]
"""

from dataclasses import dataclass

import torch

from harness.merge.registry import ChunkWeight, check_range, register
from harness.merge.select import DeltaTopK
from harness.merge.stream import MergeContext, abs_delta


@dataclass(frozen=True)
class TiesParams:
    """density: share of entries kept, in (0, 1]; scale: multiplier of the kept Δ, ≥ 0.

    Defaults: chosen on eval=micro_val by +experiment=micro_select (docs/micro.md); they are
    the CLI's too (conf/method/*.yaml leaves each parameter null: its default here).
    """

    density: float = 0.2
    scale: float = 1.0

    def __post_init__(self):
        check_range("ties", "density", self.density, 0.0, 1.0, lo_open=True)
        check_range("ties", "scale", self.scale, 0.0, None)


def kept(p: TiesParams, n: int) -> int:
    """k: how many of a tensor's n entries keep their Δ."""
    return int(round(p.density * n))


def weight(base: torch.Tensor, tuned: torch.Tensor, p: TiesParams,
           ctx: MergeContext) -> ChunkWeight:
    """scale on the top-k |Δ| entries, 0 elsewhere (one read-only pass finds the threshold)."""
    top = DeltaTopK(base, tuned, [kept(p, base.numel())], ctx)

    def chunk(lo: int, hi: int, fb: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        return top.mask(0, abs_delta(fb, ft)).float().mul_(p.scale)

    return chunk


register("ties", TiesParams, weight, label="TIES", row=40)
