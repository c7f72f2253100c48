"""DELLA-Merging, magnitude-based sampling (Deep et al., 2024), with one tuned model.

Within each row (last dimension; a 1-D tensor is one row) rank the m entries by |Δ| ascending,
r = 0 … m−1, entries of equal |Δ| sharing their average rank r = (lo + hi − 1)/2 (lo, hi: the
numbers of the row's entries with |Δ| <, ≤ theirs): equal magnitudes get equal chances, the
merge does not depend on the order of a row's columns, and the row's mean p stays density.
Keep an entry with probability
    p_r = density − ε + 2ε·r/(m − 1)        (p = density when m = 1)
(u < p_r, u ~ U[0,1) the entry's draw from the tensor's seeded stream) and rescale kept
entries by 1/p_r.
θ = θ_base + scale·Δ',   Δ' = Δ ⊙ 1[u < p] / p,   i.e. w = scale/p·1[u < p]
"""

from dataclasses import dataclass

import torch

from harness.merge.randomness import UniformStream, tensor_seed
from harness.merge.registry import ChunkWeight, check_range, register
from harness.merge.stream import MergeContext, abs_delta


@dataclass(frozen=True)
class DellaParams:
    """density in (0, 1]; epsilon ≥ 0 with density − ε > 0 and density + ε ≤ 1; scale ≥ 0.

    Defaults: chosen on eval=micro_val by +experiment=micro_select (docs/micro.md); they are
    the CLI's too (conf/method/*.yaml leaves each parameter null: its default here).
    """

    density: float = 0.6
    epsilon: float = 0.1
    scale: float = 0.5
    seed: int = 0

    def __post_init__(self):
        check_range("della", "density", self.density, 0.0, 1.0, lo_open=True)
        check_range("della", "epsilon", self.epsilon, 0.0, None)
        check_range("della", "scale", self.scale, 0.0, None)
        if not (self.density - self.epsilon > 0 and self.density + self.epsilon <= 1):
            raise ValueError(
                f"parameter epsilon={self.epsilon} with density={self.density} gives keep "
                f"probabilities outside (0, 1]; need density - epsilon > 0 and "
                f"density + epsilon <= 1")


def rank_line(density: float, epsilon: float, m: int) -> tuple[float, float] | None:
    """(offset, step) of p = offset + step·(lo + hi − 1) in rows of m entries (lo + hi − 1 is
    twice the average rank), or None when every entry has p = density (m = 1 or ε = 0)."""
    if m == 1 or epsilon == 0:
        return None
    return density - epsilon, epsilon / (m - 1)


def keep_probability(mag: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """p per entry: linear in the entry's average rank by |Δ| within its row (float32 |Δ|)."""
    rows = mag.reshape(-1, mag.shape[-1]) if mag.dim() > 1 else mag.reshape(1, -1)
    line = rank_line(density, epsilon, rows.shape[-1])
    if line is None:
        return torch.full_like(mag, density)
    offset, step = line
    ordered = rows.sort(dim=-1).values
    lo = torch.searchsorted(ordered, rows)
    twice_rank = lo.add_(torch.searchsorted(ordered, rows, right=True)).sub_(1)  # lo + hi − 1
    return twice_rank.to(mag.dtype).mul_(step).add_(offset).reshape(mag.shape)


def stream_seed(p: DellaParams, ctx: MergeContext) -> int:
    """The seed of this tensor's draws: the run's seed plus the method's, and the tensor name."""
    return tensor_seed(ctx.seed + p.seed, ctx.name)


def weight(base: torch.Tensor, tuned: torch.Tensor, p: DellaParams,
           ctx: MergeContext) -> ChunkWeight:
    """scale/p where the entry's draw u < p, 0 elsewhere; chunks of whole rows."""
    u = UniformStream(stream_seed(p, ctx), base.device)

    def chunk(lo: int, hi: int, fb: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        prob = keep_probability(abs_delta(fb, ft), p.density, p.epsilon)
        return (u.next(prob.numel()).view(prob.shape) < prob).to(torch.float32).div_(prob) \
            .mul_(p.scale)

    return chunk


register("della", DellaParams, weight, rows=True, stochastic=True, revision="average-rank-ties",
         label="DELLA", row=70)
