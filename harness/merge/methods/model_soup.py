"""Model Soup (Wortsman et al., ICML 2022): a weighted average of the two models.

θ = (1 − α)·θ_base + α·θ_tuned,   i.e. w = α
"""

from dataclasses import dataclass

from harness.merge.registry import check_range, register


@dataclass(frozen=True)
class ModelSoupParams:
    """alpha: weight of the tuned model, in [0, 1].

    Defaults: chosen on eval=micro_val by +experiment=micro_select (docs/micro.md); they are
    the CLI's too (conf/method/*.yaml leaves each parameter null: its default here).
    """

    alpha: float = 0.7

    def __post_init__(self):
        check_range("model_soup", "alpha", self.alpha, 0.0, 1.0)


def weight(base, tuned, p: ModelSoupParams, ctx) -> float:
    """w = α for every entry."""
    return p.alpha


register("model_soup", ModelSoupParams, weight, label="Model Soup", row=20)
