"""`python -m harness ...`: compose the Hydra config, check it (harness/config_check.py), run one
point (merge → eval → record), or an experiment's hyperparameter selection
(harness/selection/). A sweep (`-m`) runs as harness/multirun.py describes."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from harness.cli import defer_errors

log = logging.getLogger("harness")


def run_point(cfg: DictConfig) -> None:
    """Check the configuration, then run the pipeline (or the selection) on it."""
    from harness.config_check import check_config

    check_config(cfg)
    if cfg.get("selection"):
        from hydra.core.hydra_config import HydraConfig

        from harness.selection import run_selection

        run_selection(cfg, list(HydraConfig.get().overrides.task))
    else:
        from harness.pipeline import run

        run(cfg)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@defer_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point: one run of the pipeline (or, for an experiment with a `selection`
    block, the rounds on validation and the chosen points on test: harness/selection/)."""
    from harness import multirun

    if not multirun.is_local_sweep():
        run_point(cfg)
        return
    # a local sweep: a failed point is recorded, the next one runs
    from harness.cli import debug, user_error

    try:
        run_point(cfg)
    except Exception as err:
        found = user_error(err)
        if found is None or debug():
            log.exception("point %s failed", multirun.point_label())
        message = found[0] if found else f"{type(err).__name__}: {err}"
        log.error("point %s failed: %s", multirun.point_label(), message)
        multirun.FAILED.append((multirun.point_label(), message))


def cli() -> int:
    """`main`, then the summary of a local sweep's failed points (exit code 1 when any)."""
    from harness import multirun

    main()
    if multirun.FAILED:
        print(multirun.summary(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from harness.cli import run_main

    run_main(cli)
