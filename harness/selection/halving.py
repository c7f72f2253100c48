"""Successive halving over sample sizes: the budget, the rounds, and who survives a round.

Round 0 evaluates every configuration of a method's grid on the first `docs` docs of each
validation task (`eval.limit`); each later round keeps the best `keep` fraction (at least one) and
evaluates it on `growth` times as many docs; the best configuration of the last round (or the
lone survivor of an earlier one) is the method's choice. A method with one configuration (base,
mllm) has nothing to choose and is not evaluated on validation. Configurations are ranked like
the tables' rule `validation`: overall average, ties to the higher language average, then to the
first configuration label.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from harness.errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """How much validation a selection spends: `rounds` rounds, the first on `docs` docs per
    task (None: every doc, then one round only), `growth` times more each round, `keep` the
    fraction of configurations that go on."""

    rounds: int = 1
    docs: int | None = None
    growth: int = 4
    keep: float = 0.5

    def __post_init__(self) -> None:
        where = "selection.budget"
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ConfigError(f"{where}.rounds={self.rounds!r}: use an integer >= 1")
        if self.docs is None and self.rounds > 1:
            raise ConfigError(f"{where}.docs=null evaluates every doc in the first round, so "
                              f"rounds={self.rounds} has nothing to grow into; set docs (e.g. 16) "
                              f"or rounds=1")
        if self.docs is not None and (not isinstance(self.docs, int) or self.docs < 1):
            raise ConfigError(f"{where}.docs={self.docs!r}: use an integer >= 1 or null (all)")
        if not isinstance(self.growth, int) or self.growth < 1:
            raise ConfigError(f"{where}.growth={self.growth!r}: use an integer >= 1")
        if not 0 < float(self.keep) <= 1:
            raise ConfigError(f"{where}.keep={self.keep!r}: use a fraction in (0, 1]")

    @classmethod
    def from_config(cls, node) -> Budget:
        """The budget of a `selection.budget` mapping (absent: one round on every doc)."""
        node = dict(node or {})
        unknown = sorted(set(node) - {"rounds", "docs", "growth", "keep"})
        if unknown:
            raise ConfigError(f"selection.budget.{unknown[0]} is not a budget key; use rounds, "
                              f"docs, growth, keep")
        return cls(**node)

    def docs_per_round(self) -> list[int | None]:
        """The docs per validation task (`eval.limit`) of each round."""
        if self.docs is None:
            return [None]
        return [self.docs * self.growth ** r for r in range(self.rounds)]


def grid_points(grid: dict | None) -> list[dict]:
    """Every combination of a grid `{param: [values]}` (sorted by parameter name); [{}] when the
    method has no grid."""
    grid = dict(grid or {})
    names = sorted(grid)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in (grid[n] for n in names)]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def grids_for(selection: dict, pair: str) -> dict[str, dict]:
    """Each method's grid for `pair`: `selection.grids`, with a method's grid replaced by
    `selection.pair_grids.<pair>.<method>` where the experiment gives one."""
    grids = dict(selection.get("grids") or {})
    grids.update((selection.get("pair_grids") or {}).get(pair) or {})
    if not grids:
        raise ConfigError("selection.grids is empty: give each method a grid {param: [values]} "
                          "({} for a method without hyperparameters)")
    return grids


def kept(n: int, keep: float) -> int:
    """How many of `n` configurations go on to the next round (at least one)."""
    return max(1, math.ceil(n * keep - 1e-9))


def ranked(scores: list[tuple[dict, str, float | None, float | None]]) -> list[dict]:
    """Configurations best first, from (params, label, overall, language) tuples; a missing
    average ranks last (the tables' rule `validation`)."""
    def key(entry):
        _, label, overall, language = entry
        return (overall is None, -(overall or 0.0), language is None, -(language or 0.0), label)

    return [params for params, *_ in sorted(scores, key=key)]


def schedule(sizes: dict[str, int], budget: Budget) -> list[dict[str, int]]:
    """Configurations per method in each round, from each method's grid size; a method with one
    configuration left is not evaluated again (nothing is left to choose)."""
    rounds, now = [], {m: n for m, n in sizes.items() if n > 1}
    for _ in budget.docs_per_round():
        if not now:
            break
        rounds.append(dict(now))
        now = {m: k for m, n in now.items() if (k := kept(n, budget.keep)) > 1}
    return rounds


def label(params: dict) -> str:
    """A configuration's label as the tables print it (`density=0.2, scale=1.0`; `-`: none)."""
    def fmt(v):
        return "+".join(map(str, v)) if isinstance(v, list) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in sorted((params or {}).items())
                     if k != "seed") or "-"
