"""Model Soup (Wortsman et al., ICML 2022): a weighted average of the two models.

θ = (1 − α)·θ_base + α·θ_tuned
"""

from dataclasses import dataclass

import torch

from harness.merge.registry import check_range, register
from harness.merge.stream import MergeContext, lerp_into


@dataclass(frozen=True)
class ModelSoupParams:
    """alpha: weight of the tuned model, in [0, 1]."""

    alpha: float = 0.5

    def __post_init__(self):
        check_range("model_soup", "alpha", self.alpha, 0.0, 1.0)


def merge_model_soup(base: torch.Tensor, tuned: torch.Tensor, p: ModelSoupParams,
                     ctx: MergeContext) -> torch.Tensor:
    """(1 − α)·base + α·tuned, written over `tuned` (lerp: exact at α = 0 and α = 1)."""
    return lerp_into(base, tuned, p.alpha, ctx)


register("model_soup", ModelSoupParams, merge_model_soup)
