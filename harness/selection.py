"""Hyperparameters chosen on validation data, as one command:

    python -m harness +experiment=micro_select

The experiment's `selection.grids` gives each method's grid (`{param: [values]}`, all
combinations). Every point of every grid runs on the suite's validation suite (`eval.validation`,
micro_val for micro); each method's best point by the tables' rule `validation` (overall average,
ties: language average, then configuration label) then runs on the experiment's own suite, and
`make tables`' output is written with that rule. Points are ordinary runs composed exactly as the
command line would compose them, so complete records and merges are reused.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError

log = logging.getLogger(__name__)


def grid_points(grid: dict | None) -> list[dict]:
    """Every combination of a grid `{param: [values]}` (sorted by parameter name); [{}] when the
    method has no grid."""
    grid = dict(grid or {})
    names = sorted(grid)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in (grid[n] for n in names)]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _point(overrides: list[str], method: str, params: dict, suite: str | None) -> DictConfig:
    from hydra import compose

    extra = [f"method={method}", *(f"method.params.{k}={v}" for k, v in params.items())]
    return compose("config", overrides=[*overrides, *extra, *([f"eval={suite}"] if suite else [])])


def _point_problems(overrides: list[str], method: str, params: dict, suite: str) -> str:
    """Why a point cannot run, in one line ('' when it can)."""
    from harness.cli import user_error
    from harness.config_check import config_problems

    try:
        return "; ".join(config_problems(_point(overrides, method, params, suite)))
    except Exception as err:  # a parameter the method's config file lacks does not compose
        found = user_error(err)
        if found is None:
            raise
        return found[0]


def run_selection(cfg: DictConfig, overrides: list[str]) -> dict[str, dict]:
    """Run the grids on the validation suite, the chosen points on the test suite, and write the
    tables; returns {method: chosen params}. `overrides` are the command line's."""
    from harness.pipeline import run
    from harness.tables import aggregate, build_tables, choose_on_validation, long_frame

    if cfg.stage != "all":
        raise ConfigError(f"stage={cfg.stage} cannot select hyperparameters: a selection needs "
                          f"the scores of every point; run it with stage=all (the default)")
    validation = cfg.eval.get("validation")
    if not validation:
        raise ConfigError(f"+experiment selection: eval={cfg.eval.name} names no validation "
                          f"suite (eval.validation); choose an eval suite that has one, e.g. "
                          f"eval=micro")
    grids = OmegaConf.to_container(cfg.selection.grids, resolve=True)
    points = [(m, p) for m, grid in grids.items() for p in grid_points(grid)]
    invalid = [f"{m} {p}: {why}" for m, p in points
               if (why := _point_problems(overrides, m, p, validation))]
    if invalid:  # every point is checked before the first one runs
        raise ConfigError(f"selection.grids: {len(invalid)} point(s) are invalid: "
                          + " | ".join(invalid))
    log.info("selection: %d points on %s, then each method's best on %s", len(points),
             validation, cfg.eval.name)
    val_records = []
    for i, (method, params) in enumerate(points, 1):
        log.info("selection %d/%d on %s: %s %s", i, len(points), validation, method, params)
        val_records.append(run(_point(overrides, method, params, validation)))
    chosen_labels = choose_on_validation(aggregate(long_frame(val_records)))
    chosen: dict[str, dict] = {}
    for (method, params), rec in zip(points, val_records):
        if long_frame([rec]).config.iloc[0] == chosen_labels.get(method):
            chosen.setdefault(method, params)
    for i, (method, params) in enumerate(chosen.items(), 1):
        log.info("selection: chosen %s %s; running it on %s (%d/%d)", method, params,
                 cfg.eval.name, i, len(chosen))
        run(_point(overrides, method, params, None))
    for path in build_tables(Path(cfg.paths.results), select="validation"):
        log.info("wrote %s", path)
    return chosen
