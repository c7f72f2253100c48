"""DARE, Drop And REscale (Yu et al., ICML 2024).

Keep each entry of Δ with probability density (u < density, u ~ U[0,1) the entry's draw from the
tensor's seeded stream, see harness/merge/randomness.py), rescale the kept ones by 1/density.
θ = θ_base + scale·Δ',   Δ' = Δ ⊙ 1[u < density] / density
"""

from dataclasses import dataclass

import torch

from harness.merge.fused import fused_ok
from harness.merge.randomness import UniformStream, tensor_seed
from harness.merge.registry import check_range, register
from harness.merge.stream import MergeContext, lerp_into, scratch


@dataclass(frozen=True)
class DareParams:
    """density: keep probability, in (0, 1]; scale ≥ 0; seed: offset added to the run's seed."""

    density: float = 0.5
    scale: float = 1.0
    seed: int = 0

    def __post_init__(self):
        check_range("dare", "density", self.density, 0.0, 1.0, lo_open=True)
        check_range("dare", "scale", self.scale, 0.0, None)


def merge_dare(base: torch.Tensor, tuned: torch.Tensor, p: DareParams,
               ctx: MergeContext) -> torch.Tensor:
    """Written over `tuned`; u as in `uniform_like` of the whole tensor."""
    if fused_ok(base, tuned, ctx, "dare"):
        from harness.merge import kernels

        return kernels.dare(base, tuned, tensor_seed(ctx.seed + p.seed, ctx.name), p.density,
                            p.scale)
    u = UniformStream(ctx.seed + p.seed, ctx.name, base.device)

    def weight(lo, hi, fb, ft):
        keep = u.next(hi - lo) < p.density
        return torch.mul(keep, p.scale / p.density, out=scratch(3, hi - lo, fb.device))

    return lerp_into(base, tuned, weight, ctx)


register("dare", DareParams, merge_dare, fused="dare", stochastic=True)
