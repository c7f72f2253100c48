"""`base`: the base LLM itself (the lower reference row of every table).

θ = θ_base
"""

from dataclasses import dataclass

from harness.merge.registry import BASE, register


@dataclass(frozen=True)
class BaseParams:
    """No parameters."""


def weight(base, tuned, p: BaseParams, ctx) -> str:
    """The base tensor, exactly (stored in the tuned dtype)."""
    return BASE


register("base", BaseParams, weight, label="Base LLM", row=0)
