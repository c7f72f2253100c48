"""The selection as a sequence of batches of runs, walked the same way locally and on SLURM.

A batch is one halving round on the validation suite (each method's surviving configurations,
`eval.limit` = that round's docs per task) or, last, each method's chosen configuration on the
experiment's own suite. `walk` hands each batch to an executor; the local one runs the points one
after another, the SLURM one returns the records that are complete and submits the rest as an
array job (then the walk stops, and the same command resumes it once the job is done). Points are
ordinary runs composed exactly as the command line would compose them, so complete records and
merges are always reused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError
from harness.selection.halving import (
    Budget,
    grid_points,
    grids_for,
    kept,
    label,
    ranked,
)

log = logging.getLogger(__name__)


@dataclass
class Point:
    """One run of a selection: a method's configuration on a suite at a doc limit."""

    method: str
    params: dict
    suite: str
    limit: int | None
    overrides: list[str]                  # the command line that runs it alone
    cfg: DictConfig = field(repr=False)   # that command line composed


@dataclass
class Batch:
    """A round of the halving (`round` 0, 1, ...) or the final test evaluations (`round` None)."""

    round: int | None
    points: list[Point]


@dataclass
class Outcome:
    """What a walk reached: the finished rounds ({method: [(label, overall, language)]}), the
    chosen configurations, and whether the final evaluations are complete."""

    rounds: list[dict] = field(default_factory=list)
    chosen: dict[str, dict] = field(default_factory=dict)
    done: bool = False


# An executor gets a batch and returns one complete record per point, or None to stop the walk.
Executor = Callable[[Batch], "list[dict] | None"]


def check(cfg: DictConfig) -> str:
    """The validation suite of the experiment's suite; ConfigError when a selection cannot run."""
    if cfg.stage != "all":
        raise ConfigError(f"stage={cfg.stage} cannot select hyperparameters: a selection needs "
                          f"the scores of every point; run it with stage=all (the default)")
    validation = cfg.eval.get("validation")
    if not validation:
        raise ConfigError(f"+experiment selection: eval={cfg.eval.name} names no validation "
                          f"suite (eval.validation); choose an eval suite that has one, e.g. "
                          f"eval=micro or eval=paper13")
    return str(validation)


def round_limit(docs: int | None, limit: int | None) -> int | None:
    """A round's `eval.limit`: its docs per task, never above a limit the command line set."""
    if docs is None:
        return limit
    return docs if limit is None else min(docs, int(limit))


def compose_point(overrides: list[str], method: str, params: dict, suite: str | None,
                  limit: int | None, set_limit: bool) -> Point:
    """The point's own command line (the selection's, `~selection`, then method, params, suite,
    limit) and its composed config (Hydra must be initialised)."""
    from hydra import compose

    own = [o for o in overrides if not o.lstrip("+~").startswith("selection")]
    extra = ["~selection", f"method={method}",
             *(f"method.params.{k}={v}" for k, v in params.items())]
    if suite:
        extra.append(f"eval={suite}")
    if set_limit:
        extra.append(f"eval.limit={'null' if limit is None else limit}")
    line = [*own, *extra]
    return Point(method, params, suite or "", limit, line, compose("config", overrides=line))


def invalid_points(overrides: list[str], grids: dict[str, list[dict]], suite: str) -> list[str]:
    """Why each grid point cannot run on `suite` (the strict check of its composed config), one
    line per invalid point; [] when every point can run."""
    from harness.cli import user_error
    from harness.config_check import config_problems

    out = []
    for method, points in grids.items():
        for params in points:
            try:
                point = compose_point(overrides, method, params, suite, None, False)
                why = "; ".join(config_problems(point.cfg))
            except Exception as err:  # a parameter the method's config file lacks does not compose
                found = user_error(err)
                if found is None:
                    raise
                why = found[0]
            if why:
                out.append(f"{method} {label(params)}: {why}")
    return out


def walk(cfg: DictConfig, overrides: list[str], execute: Executor,
         compose: Callable[..., Point] = compose_point) -> Outcome:
    """Walk the rounds and the final evaluations of the selection `cfg.selection`, handing each
    batch to `execute`; stops early when `execute` returns None."""
    validation = check(cfg)
    selection = OmegaConf.to_container(cfg.selection, resolve=True)
    budget = Budget.from_config(selection.get("budget"))
    grids = {m: grid_points(g) for m, g in grids_for(selection, cfg.pair.name).items()}
    invalid = invalid_points(overrides, grids, validation)
    if invalid:  # every point is checked before the first one runs
        raise ConfigError(f"selection.grids: {len(invalid)} point(s) are invalid: "
                          + " | ".join(invalid))
    user_limit = cfg.eval.get("limit")
    alive = {m: pts for m, pts in grids.items() if len(pts) > 1}
    outcome = Outcome(chosen={m: pts[0] for m, pts in grids.items() if len(pts) == 1})
    for r, docs in enumerate(budget.docs_per_round()):
        if not alive:
            break
        limit = round_limit(docs, user_limit)
        batch = Batch(r, [compose(overrides, m, p, validation, limit, docs is not None)
                          for m, pts in alive.items() for p in pts])
        log.info("selection round %d: %d configurations on %s, eval.limit=%s", r + 1,
                 len(batch.points), validation, limit)
        records = execute(batch)
        if records is None:
            return outcome
        scores: dict[str, list] = {}
        for point, rec in zip(batch.points, records):
            avg = rec.get("averages") or {}
            scores.setdefault(point.method, []).append(
                (point.params, label(point.params), avg.get("all"), avg.get("language")))
        outcome.rounds.append({"round": r + 1, "suite": validation, "limit": limit,
                               "scores": {m: [s[1:] for s in v] for m, v in scores.items()}})
        last = r == len(budget.docs_per_round()) - 1
        alive = {m: ranked(v)[:1 if last else kept(len(v), budget.keep)]
                 for m, v in scores.items()}
        # a lone survivor is the choice: another round could not change it
        outcome.chosen.update({m: pts[0] for m, pts in alive.items() if len(pts) == 1})
        alive = {m: pts for m, pts in alive.items() if len(pts) > 1}
    outcome.chosen.update({m: pts[0] for m, pts in alive.items()})
    outcome.chosen = {m: outcome.chosen[m] for m in grids if m in outcome.chosen}
    final = Batch(None, [compose(overrides, m, p, None, user_limit, False)
                         for m, p in outcome.chosen.items()])
    log.info("selection: each method's choice on %s: %s", cfg.eval.name,
             "; ".join(f"{m} {label(p)}" for m, p in outcome.chosen.items()))
    outcome.done = execute(final) is not None
    return outcome


def write_outcome(cfg: DictConfig, outcome: Outcome) -> Path:
    """`<results>/selection/<pair>_<suite>.json`: the budget, every round's scores and the
    chosen configurations; the tables' rule `validation` reads it (harness.selection.choice)."""
    from harness.records import write_json_atomic

    path = Path(cfg.paths.results) / "selection" / f"{cfg.pair.name}_{cfg.eval.name}.json"
    selection = OmegaConf.to_container(cfg.selection, resolve=True)
    write_json_atomic(path, {
        "pair": cfg.pair.name, "suite": cfg.eval.name, "validation": cfg.eval.validation,
        "experiment": cfg.experiment_name, "budget": selection.get("budget") or {},
        "rounds": outcome.rounds,
        "chosen": {m: label(p) for m, p in outcome.chosen.items()}})
    return path
