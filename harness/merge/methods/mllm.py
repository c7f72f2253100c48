"""`mllm`: the unmerged tuned model (identity; the upper reference row of every table).

θ = θ_tuned
"""

from dataclasses import dataclass

from harness.merge.registry import TUNED, register


@dataclass(frozen=True)
class MllmParams:
    """No parameters."""


def weight(base, tuned, p: MllmParams, ctx) -> str:
    """The tuned tensor, exactly."""
    return TUNED


register("mllm", MllmParams, weight, reads_base=False, label="MLLM", row=10)
