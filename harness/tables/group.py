"""Which records share a table, a row and a cell.

A table is one pair and suite *in one setup* (harness.tables.read: the evaluation and the
checkpoints); records of the same pair and suite in other setups get tables of their own, each
with a note naming the fields that split them. Within a table, a row is a method at one
configuration; records that also differ in the merge's variant (a draw definition, a method
revision) get rows of their own. What is left to pool is the seed: mean ± std over seeds.
The chosen configuration of a method is picked by a rule: `defaults`, `best_overall` or
`validation`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.errors import ConfigError
from harness.method_catalog import label

RULES = ("defaults", "best_overall", "validation")
VALIDATION_ORDER = "overall average (ties: language average, then configuration label)"


def differing(fields: list[dict[str, object]]) -> list[str]:
    """The keys whose values are not the same in every dict (a missing key counts as None)."""
    keys = sorted(set().union(*fields)) if fields else []
    return [k for k in keys if len({repr(f.get(k)) for f in fields}) > 1]


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe(fields: dict[str, object], keys: list[str]) -> str:
    """`k=v, ...` of `keys` in `fields`."""
    return ", ".join(f"{k}={_short(fields.get(k))}" for k in keys)


def split_by_setup(part: pd.DataFrame, setups: dict[str, dict], stem: str
                   ) -> list[tuple[str, pd.DataFrame, list[str]]]:
    """(stem, records, notes) of each table of one pair and suite: one per setup. One setup
    keeps `stem`; several get `stem_<setup digest>` and a note naming what split them."""
    groups = sorted(part.groupby("setup"), key=lambda g: g[0])
    if len(groups) == 1:
        return [(stem, part, [])]
    keys = differing([setups[s] for s, _ in groups])
    out = []
    for s, sub in groups:
        others = "; ".join(f"{stem}_{o[:6]}: {describe(setups[o], keys)}"
                           for o, _ in groups if o != s)
        out.append((f"{stem}_{s[:6]}", sub,
                    [f"Records of this pair and suite differ in their setup, so they are not "
                     f"pooled: this table has {describe(setups[s], keys)}; other tables: "
                     f"{others}."]))
    return out


def split_by_variant(part: pd.DataFrame, variants: dict[str, dict]) -> pd.DataFrame:
    """`part` with the configuration label of a (method, config) that comes in several merge
    variants extended by what differs, e.g. `density=0.5 [revision=2]`."""
    part = part.copy()
    for (method, config), sub in part.groupby(["method", "config"]):
        kinds = sorted(sub.variant.unique())
        if len(kinds) < 2:
            continue
        keys = differing([variants[v] for v in kinds])
        for v in kinds:
            rows = (part.method == method) & (part.config == config) & (part.variant == v)
            part.loc[rows, "config"] = f"{config} [{describe(variants[v], keys)}]"
    return part


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (method, config, column)."""
    g = frame.groupby(["method", "config", "column"])["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def choose(agg: pd.DataFrame, rule: str, defaults: dict[str, str]) -> dict[str, str]:
    """The chosen config of each method: `best_overall` (highest overall average) or `defaults`
    (the method's default configuration, falling back to best_overall when not run)."""
    chosen = {}
    for method, sub in agg.groupby("method"):
        configs = sorted(sub.config.unique())
        if rule == "defaults" and defaults.get(method) in configs:
            chosen[method] = defaults[method]
            continue
        overall = sub[sub.column == "all"].sort_values(["mean", "config"], ascending=[False, True])
        chosen[method] = overall.config.iloc[0] if len(overall) else configs[0]
    return chosen


def choose_on_validation(val_agg: pd.DataFrame) -> dict[str, str]:
    """Per method, the configuration with the best overall average on a validation suite's
    aggregate; ties go to the higher language average, then to the first configuration label."""
    wide = val_agg[val_agg.column.isin(["all", "language"])].pivot_table(
        index=["method", "config"], columns="column", values="mean").reset_index()
    wide = wide.reindex(columns=["method", "config", "all", "language"])  # a suite may lack one
    chosen = {}
    for method, sub in wide.groupby("method"):
        ranked = sub.sort_values(["all", "language", "config"], ascending=[False, False, True],
                                 na_position="last")
        chosen[method] = ranked.config.iloc[0]
    return chosen


def choose_by_validation(agg: pd.DataFrame, val_agg: pd.DataFrame, suite: str,
                         validation: str) -> tuple[dict[str, str], list[str]]:
    """Rule `validation` for a table on `suite`: each method's configuration chosen on
    `val_agg` (choose_on_validation), shown with its `suite` scores. Methods without
    hyperparameters need no validation run. Returns (chosen, notes on methods left out)."""
    return apply_choices(agg, choose_on_validation(val_agg), suite, validation,
                         f"no {validation} record to choose on")


def apply_choices(agg: pd.DataFrame, picks: dict[str, str], suite: str, validation: str,
                  unpicked: str) -> tuple[dict[str, str], list[str]]:
    """The configuration each method shows on `suite` when `picks` (method → configuration
    label) were chosen on `validation`: a pick without a `suite` record, and a method with
    hyperparameters but no pick (`unpicked` says why), are left out and named in the notes;
    methods without hyperparameters need no pick. Returns (chosen, notes)."""
    chosen, notes = {}, []
    for method, sub in agg.groupby("method"):
        name = label(method)
        if method in picks and picks[method] in set(sub.config):
            chosen[method] = picks[method]
        elif method in picks:
            notes.append(f"{name} left out: its configuration chosen on {validation} "
                         f"({picks[method]}) has no {suite} record")
        elif set(sub.config) == {"-"}:
            chosen[method] = "-"
        else:
            notes.append(f"{name} left out: {unpicked}")
    return chosen, notes


def select_rows(frame: pd.DataFrame, part: pd.DataFrame, agg: pd.DataFrame, pair: str,
                suite: str, select: str, defaults: dict[str, str], results: Path | None = None
                ) -> tuple[dict[str, str], str, list[str]]:
    """(chosen config per method, rule text, notes) of one main table under rule `select`.
    Rule `validation` takes the outcome of a selection run under `results` when there is one
    (harness/selection/), else reads the validation records of the same pair and checkpoints."""
    from harness.selection import choice, defaults_note, table_choice

    if select not in RULES:
        raise ConfigError(f"tables select={select!r} is not valid; choose one of "
                          f"{', '.join(RULES)}")
    if select != "validation":
        return choose(agg, select, defaults), select, defaults_note(pair, select)
    outcome = choice(results, pair, suite) if results is not None else None
    if outcome:
        return table_choice(agg, outcome, suite)
    validation = next((v for v in part.validation.dropna()), None)
    if validation is None:
        return (choose(agg, "best_overall", defaults),
                f"validation; {suite} names no validation suite, so best_overall", [])
    val_part = frame[(frame.pair == pair) & (frame.suite == validation)
                     & frame.checkpoints.isin(set(part.checkpoints))]
    chosen, notes = choose_by_validation(agg, aggregate(val_part), suite, validation)
    return chosen, f"validation, chosen on {validation} by {VALIDATION_ORDER}", notes
