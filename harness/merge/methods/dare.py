"""DARE, Drop And REscale (Yu et al., ICML 2024).

Keep each entry of Δ with probability density (u < density, u ~ U[0,1) the entry's draw from the
tensor's seeded stream, see harness/merge/randomness.py), rescale the kept ones by 1/density.
θ = θ_base + scale·Δ',   Δ' = Δ ⊙ 1[u < density] / density,
i.e. w = scale/density·1[u < density]
"""

from dataclasses import dataclass

import torch

from harness.merge.randomness import UniformStream, tensor_seed
from harness.merge.registry import ChunkWeight, check_range, register
from harness.merge.stream import MergeContext


@dataclass(frozen=True)
class DareParams:
    """density: keep probability, in (0, 1]; scale ≥ 0; seed: offset added to the run's seed.

    Defaults: chosen on eval=micro_val by +experiment=micro_select (docs/micro.md); they are
    the CLI's too (conf/method/*.yaml leaves each parameter null: its default here).
    """

    density: float = 0.5
    scale: float = 0.5
    seed: int = 0

    def __post_init__(self):
        check_range("dare", "density", self.density, 0.0, 1.0, lo_open=True)
        check_range("dare", "scale", self.scale, 0.0, None)


def stream_seed(p: DareParams, ctx: MergeContext) -> int:
    """The seed of this tensor's draws: the run's seed plus the method's, and the tensor name."""
    return tensor_seed(ctx.seed + p.seed, ctx.name)


def kept_weight(p: DareParams) -> float:
    """w of a kept entry: scale/density."""
    return p.scale / p.density


def weight(base: torch.Tensor, tuned: torch.Tensor, p: DareParams,
           ctx: MergeContext) -> ChunkWeight:
    """scale/density where the entry's draw u < density, 0 elsewhere."""
    u = UniformStream(stream_seed(p, ctx), base.device)
    w = kept_weight(p)

    def chunk(lo: int, hi: int, fb: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        return (u.next(hi - lo) < p.density).float().mul_(w)

    return chunk


register("dare", DareParams, weight, stochastic=True, label="DARE", row=50)
