"""Hyperparameters chosen on validation data, within a budget, as one command:

    python -m harness +experiment=micro_select                        # micro pair, every doc
    python -m harness +experiment=paper_select pair=llava_next_llama3_8b
    python -m harness.selection submit +experiment=paper_select pair=...  # SLURM, round by round

The experiment's `selection.grids` gives each method's grid (`{param: [values]}`, all
combinations; `selection.pair_grids.<pair>` replaces a method's grid for one pair). Methods with
more than one configuration are searched on the suite's validation suite (`eval.validation`) by
successive halving under `selection.budget` (halving.py); each method's choice then runs once on
the experiment's own suite, the outcome is written to `<results>/selection/<pair>_<suite>.json`,
and `make tables`' output is written with the rule `validation`, which reads it. The plan
(evaluations per round, projected time from cost records: plan.py) is printed first;
`+selection.plan_only=true` stops there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.selection.halving import Budget, grid_points, grids_for
from harness.selection.walk import Batch, check, walk, write_outcome

__all__ = ["choice", "defaults_note", "grid_points", "print_plan", "run_selection",
           "table_choice"]

log = logging.getLogger(__name__)


def print_plan(cfg: DictConfig) -> list[str]:
    """Print (and return) the plan of the selection `cfg` describes; nothing runs."""
    from hydra import compose

    from harness.eval.suite import load_benchmarks
    from harness.selection.plan import plan_lines

    validation = check(cfg)
    selection = OmegaConf.to_container(cfg.selection, resolve=True)
    val_cfg = compose("config", overrides=[f"eval={validation}"]).eval
    sizes = {m: len(grid_points(g)) for m, g in grids_for(selection, cfg.pair.name).items()}
    lines = plan_lines(cfg.pair.name, Path(cfg.paths.runs), validation,
                       [b.name for b in load_benchmarks(val_cfg)], cfg.eval.name,
                       [b.name for b in load_benchmarks(cfg.eval)], sizes,
                       Budget.from_config(selection.get("budget")), cfg.eval.get("limit"))
    print("\n".join(lines), flush=True)
    return lines


def run_selection(cfg: DictConfig, overrides: list[str]) -> dict[str, dict]:
    """Print the plan, run the halving rounds and the chosen points here, one after another,
    and write the outcome and the tables; returns {method: chosen params}. `overrides` are the
    command line's."""
    from harness.pipeline import run
    from harness.tables import build_tables

    check(cfg)
    print_plan(cfg)
    if cfg.selection.get("plan_only"):
        return {}

    def execute(batch: Batch) -> list[dict]:
        out = []
        for i, point in enumerate(batch.points, 1):
            log.info("selection %s %d/%d on %s: %s %s",
                     "final" if batch.round is None else f"round {batch.round + 1}", i,
                     len(batch.points), point.cfg.eval.name, point.method, point.params)
            out.append(run(point.cfg))
        return out

    outcome = walk(cfg, overrides, execute)
    log.info("wrote %s", write_outcome(cfg, outcome))
    for path in build_tables(Path(cfg.paths.results), select="validation"):
        log.info("wrote %s", path)
    return outcome.chosen


def choice(results: Path, pair: str, suite: str) -> dict | None:
    """The outcome a selection wrote for (pair, suite) (`chosen`: method → configuration
    label, `rounds`, `budget`, `validation`), or None."""
    path = Path(results) / "selection" / f"{pair}_{suite}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def choice_rule(outcome: dict) -> str:
    """How a selection outcome chose, for the note under a table."""
    rounds = outcome.get("rounds") or []
    limits = ", ".join("all" if r.get("limit") is None else str(r["limit"]) for r in rounds)
    budget = outcome.get("budget") or {}
    how = (f"successive halving over {len(rounds)} round(s) at {limits} docs per task, keeping "
           f"{budget.get('keep', 0.5)} per round" if len(rounds) > 1 else
           f"one round at {limits or 'all'} docs per task")
    return f"{how}; best by overall average (ties: language average, then configuration label)"


def table_choice(agg, outcome: dict, suite: str) -> tuple[dict[str, str], str, list[str]]:
    """(chosen configuration per method, rule text, notes) of a main table on `suite` whose
    methods a selection chose (`outcome`: `choice`); `agg` is the table's aggregate frame.
    A method the selection chose but whose choice has no `suite` record is left out and named."""
    from harness.tables.group import apply_choices

    validation = outcome.get("validation")
    chosen, notes = apply_choices(agg, outcome.get("chosen") or {}, suite, validation,
                                  f"the selection on {validation} did not search it")
    return chosen, f"validation, chosen on {validation} by {choice_rule(outcome)}", notes


def defaults_note(pair: str, rule: str) -> list[str]:
    """Under rule `defaults`, where the method defaults come from when they were not chosen on
    `pair` (conf/tables/default.yaml `defaults_chosen_on`): a note for the table."""
    from harness.tables import load_rule

    origin = load_rule().get("defaults_chosen_on")
    if rule != "defaults" or not origin or pair == origin.get("pair"):
        return []
    note = (f"Method defaults (conf/method/) are {origin.get('pair')}-derived: chosen on "
            f"{origin.get('suite')} by +experiment={origin.get('experiment')}, not on {pair}'s "
            f"data. +experiment=paper_select pair={pair} chooses each method's configuration on "
            f"this pair's validation suite; make tables --select validation then shows it.")
    return [note]
