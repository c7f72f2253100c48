"""`base`: the base LLM itself (the lower reference row of every table).

θ = θ_base
"""

from dataclasses import dataclass

import torch

from harness.merge.registry import register


@dataclass(frozen=True)
class BaseParams:
    """No parameters."""


def merge_base(base: torch.Tensor, tuned: torch.Tensor, p: BaseParams, gen=None) -> torch.Tensor:
    """Return the base tensor."""
    return base


register("base", BaseParams, merge_base)
