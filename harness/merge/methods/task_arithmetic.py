"""Task Arithmetic (Ilharco et al., ICLR 2023): add a scaled task vector to the base.

θ = θ_base + scale·Δ,   Δ = θ_tuned − θ_base,   i.e. w = scale
"""

from dataclasses import dataclass

from harness.merge.registry import check_range, register


@dataclass(frozen=True)
class TaskArithmeticParams:
    """scale: multiplier of Δ, ≥ 0.

    Defaults: chosen on eval=micro_val by +experiment=micro_select (docs/micro.md); they are
    the CLI's too (conf/method/*.yaml leaves each parameter null: its default here).
    """

    scale: float = 0.7

    def __post_init__(self):
        check_range("task_arithmetic", "scale", self.scale, 0.0, None)


def weight(base, tuned, p: TaskArithmeticParams, ctx) -> float:
    """w = scale for every entry."""
    return p.scale


register("task_arithmetic", TaskArithmeticParams, weight, label="Task Arithmetic", row=30)
