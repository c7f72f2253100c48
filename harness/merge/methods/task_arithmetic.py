"""Task Arithmetic (Ilharco et al., ICLR 2023): add a scaled task vector to the base.

θ = θ_base + scale·Δ,   Δ = θ_tuned − θ_base
"""

from dataclasses import dataclass

import torch

from harness.merge.registry import check_range, register


@dataclass(frozen=True)
class TaskArithmeticParams:
    """scale: multiplier of Δ, ≥ 0."""

    scale: float = 0.5

    def __post_init__(self):
        check_range("task_arithmetic", "scale", self.scale, 0.0, None)


def merge_task_arithmetic(base: torch.Tensor, tuned: torch.Tensor, p: TaskArithmeticParams,
                          gen=None) -> torch.Tensor:
    """base + scale·(tuned − base), in place in `base` (lerp: exact at scale 0 and 1)."""
    return base.lerp_(tuned, p.scale)


register("task_arithmetic", TaskArithmeticParams, merge_task_arithmetic)
