"""`base`: the base LLM itself (the lower reference row of every table).

θ = θ_base
"""

from dataclasses import dataclass

import torch

from harness.merge.registry import register


@dataclass(frozen=True)
class BaseParams:
    """No parameters."""


def merge_base(base: torch.Tensor, tuned: torch.Tensor, p: BaseParams, ctx=None) -> torch.Tensor:
    """The base tensor, written over `tuned` (in the tuned dtype)."""
    return tuned.copy_(base)


register("base", BaseParams, merge_base)
