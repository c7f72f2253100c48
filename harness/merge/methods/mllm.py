"""`mllm`: the unmerged tuned model (identity; the upper reference row of every table).

θ = θ_tuned
"""

from dataclasses import dataclass

import torch

from harness.merge.registry import register


@dataclass(frozen=True)
class MllmParams:
    """No parameters."""


def merge_mllm(base: torch.Tensor, tuned: torch.Tensor, p: MllmParams, ctx=None) -> torch.Tensor:
    """Return the tuned tensor."""
    return tuned


register("mllm", MllmParams, merge_mllm, reads_base=False)
