"""Task Arithmetic (Ilharco et al., ICLR 2023): add a scaled task vector to the base.

θ = θ_base + scale·Δ,   Δ = θ_tuned − θ_base
"""

from dataclasses import dataclass

import torch

from harness.merge.registry import check_range, register
from harness.merge.stream import MergeContext, lerp_into


@dataclass(frozen=True)
class TaskArithmeticParams:
    """scale: multiplier of Δ, ≥ 0."""

    scale: float = 0.5

    def __post_init__(self):
        check_range("task_arithmetic", "scale", self.scale, 0.0, None)


def merge_task_arithmetic(base: torch.Tensor, tuned: torch.Tensor, p: TaskArithmeticParams,
                          ctx: MergeContext) -> torch.Tensor:
    """base + scale·(tuned − base), written over `tuned` (lerp: exact at scale 0 and 1)."""
    return lerp_into(base, tuned, p.scale, ctx)


register("task_arithmetic", TaskArithmeticParams, merge_task_arithmetic)
