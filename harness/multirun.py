"""Sweeps (`python -m harness -m ...`): every point is checked before the first one runs, and a
local sweep runs every point even when some fail, then ends with a summary and exit code 1.

Hydra's basic launcher runs the points one after another in this process; a point that raises
is recorded here (`FAILED`) instead of ending the sweep. `CheckSweep` is a Hydra callback
(conf/config.yaml, hydra.callbacks) that composes and checks every point at the start of a
sweep: with the local launcher an invalid point is announced and fails on its turn; with any
other launcher (SLURM) nothing is submitted while a point is invalid. Hydra itself refuses a
whole sweep when a point cannot be composed at all (an unknown key given without `+`).
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError

log = logging.getLogger("harness")

FAILED: list[tuple[str, str]] = []  # (point label, one-line error) of the failed local points


def sweep_points(config: DictConfig) -> list[list[str]]:
    """The override list of every point of the sweep `config` describes (its sweeper params
    and command-line overrides, expanded as Hydra's basic sweeper expands them)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    args = [f"{k}={v}" for k, v in params.items()]
    args += list(OmegaConf.select(config, "hydra.overrides.task", default=None) or [])
    overrides = OverridesParser.create().parse_overrides(args)
    return [list(p) for batch in BasicSweeper.split_arguments(overrides, None) for p in batch]


def point_problems(overrides: list[str]) -> str | None:
    """Why the point composed from `overrides` is invalid (one line), or None."""
    from hydra import compose

    from harness.cli import user_error
    from harness.config_check import config_problems

    try:
        problems = config_problems(compose("config", overrides=overrides))
    except Exception as err:  # a point Hydra cannot compose
        found = user_error(err)
        if found is None:
            raise
        return found[0]
    return "; ".join(problems) or None


def is_local_sweep() -> bool:
    """True inside a point of a multirun on Hydra's basic (in-process) launcher."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hc = HydraConfig.get()
    return hc.mode == RunMode.MULTIRUN and hc.runtime.choices.get("hydra/launcher") == "basic"


def point_label() -> str:
    """'#<job number> <overrides>' of the running point."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return f"#{hc.job.num} {' '.join(hc.overrides.task)}".strip()


def summary() -> str:
    """The failed points, one per line, after a count."""
    lines = [f"{len(FAILED)} point(s) of the sweep failed:"]
    lines += [f"  {label}: {' '.join(message.split())}" for label, message in FAILED]
    return "\n".join(lines)


class CheckSweep(Callback):
    """Hydra callback: check every point of a sweep before the first one runs."""

    def on_multirun_start(self, config: DictConfig, **_: Any) -> None:
        """Compose and check each point; log the invalid ones (local launcher) or refuse the
        sweep (any other launcher: nothing is submitted)."""
        points = sweep_points(config)
        bad = [(i, p, why) for i, p in enumerate(points) if (why := point_problems(p))]
        if not bad:
            log.info("checked the %d points of the sweep: all valid", len(points))
            return
        launcher = OmegaConf.select(config, "hydra.runtime.choices", default={}) or {}
        lines = [f"#{i} {' '.join(p)}: {why}" for i, p, why in bad]
        if launcher.get("hydra/launcher", "basic") != "basic":
            raise ConfigError(f"{len(bad)} of {len(points)} sweep points are invalid, nothing "
                              f"was submitted: " + " | ".join(lines))
        for line in lines:
            log.error("invalid sweep point %s (it will fail; the others run)", line)
