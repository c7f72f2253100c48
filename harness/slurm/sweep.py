"""Expand a Hydra sweep into points, exactly as `python -m harness -m ...` would launch them.

The expansion is Hydra's own: the master config is composed in MULTIRUN mode (so sweep overrides
are legal and the experiment's `hydra.sweeper.params` are read), then Hydra's BasicSweeper turns
`hydra.sweeper.params` + the command-line task overrides into one override list per job, and each
job is composed the way Hydra's launchers compose it (`ConfigLoader.load_sweep_config`: the master's
hydra overrides + the job's overrides, RUN mode). Each point carries its run id and merge id, and
whether its result (or, for `stage=merge`, its merge) is already complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness import records
from harness.config_check import config_problems
from harness.errors import ConfigError

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
CONFIG_NAME = "config"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# Overrides of these keys choose SLURM resources, not the run: they are used for the job script
# and left out of the manifest lines (the run id never depends on them).
RESOURCE_KEYS = ("slurm",)
# Set by the array task itself (one run per task, its own run dir); a sweep must not set them.
TASK_HYDRA_KEYS = ("hydra.mode", "hydra.run.dir")


@dataclass
class Point:
    """One point of a sweep: the overrides that select it and what identifies its result."""

    index: int
    overrides: list[str]
    run_id: str
    merge_id: str
    stage: str
    result_dir: str
    merge_dir: str
    complete: bool = False
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The point as a JSON-able dict (stored in the job's points.json)."""
        return dict(self.__dict__)


@dataclass
class Sweep:
    """The expanded sweep: every point, the resources config and the master config's names."""

    points: list[Point]
    resources: dict
    experiment: str
    argv: list[str]
    hydra_overrides: list[str]


def _key_of(override) -> str:
    key = override.key_or_group
    return key[1:] if key.startswith(("+", "~")) else key


def is_resource_override(text: str, parser: OverridesParser | None = None) -> bool:
    """Whether an override (string) selects SLURM resources (`slurm=...`, `slurm.x=...`)."""
    parser = parser or OverridesParser.create()
    key = _key_of(parser.parse_override(text))
    return any(key == k or key.startswith(f"{k}.") for k in RESOURCE_KEYS)


def _has_resources_group(config_dir: Path) -> bool:
    """Whether the primary config already puts the `slurm` group in its defaults list."""
    primary = OmegaConf.load(config_dir / f"{CONFIG_NAME}.yaml")
    for entry in primary.get("defaults", []):
        name = next(iter(entry)) if isinstance(entry, DictConfig) else str(entry)
        if name.split("@")[0].lstrip("/") == "slurm":
            return True
    return False


def _with_resources_default(argv: list[str], parser: OverridesParser,
                            config_dir: Path) -> list[str]:
    """Add `+slurm=default` (first, so an experiment's `slurm:` keys win) when conf/config.yaml
    does not list the slurm group and the command line does not choose one."""
    if _has_resources_group(config_dir):
        return list(argv)
    chosen = any(_key_of(parser.parse_override(a)) == "slurm" for a in argv)
    return list(argv) if chosen else ["+slurm=default", *argv]


def _compose_master(config_loader, argv: list[str]) -> DictConfig:
    try:
        return config_loader.load_configuration(
            config_name=CONFIG_NAME, overrides=argv, run_mode=RunMode.MULTIRUN, from_shell=False)
    except HydraException as err:
        raise ConfigError(f"the sweep {' '.join(argv)!r} does not compose: {err}") from err


def _job_overrides(master: DictConfig, parser: OverridesParser) -> list[list[str]]:
    sweeper = master.hydra.sweeper
    if sweeper.get("_target_") != BASIC_SWEEPER:
        raise ConfigError(
            f"hydra.sweeper is {sweeper.get('_target_')!r}; `python -m harness.slurm` expands "
            f"sweeps with Hydra's basic sweeper only (hydra/sweeper=basic). Optimising sweepers "
            f"need results between points; run them with `-m hydra/launcher=slurm` instead.")
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    task = list(OmegaConf.to_container(master.hydra.overrides.task, resolve=False))
    parsed = parser.parse_overrides(params + task)
    for ov in parsed:
        if ov.is_hydra_override() and ov.is_sweep_override():
            raise ConfigError(f"sweeping Hydra's own config is not supported: {ov.input_line!r}")
    # One batch: BasicSweeper's product over every swept key, later values of a key winning.
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


def _is_complete(cfg: DictConfig, run_dir: Path, merge_dir: Path) -> bool:
    if bool(cfg.get("force", False)):
        return False
    if cfg.stage == "merge":
        from harness.merge import load_merge_report
        return load_merge_report(merge_dir) is not None
    return records.load_record(run_dir) is not None


def expand(argv: list[str], config_dir: Path = CONF_DIR) -> Sweep:
    """Expand the command-line overrides `argv` (e.g. `["+experiment=baselines", "seed=0,1"]`)
    into the sweep's points, each with its run id and whether its result is already complete.

    Raises:
        ConfigError: the sweep or one of its points does not compose, or uses a sweeper other
            than Hydra's basic sweeper.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        config_loader = GlobalHydra.instance().config_loader()
        parser = OverridesParser.create(config_loader=config_loader)
        argv = _with_resources_default(argv, parser, Path(config_dir))
        master = _compose_master(config_loader, argv)
        hydra_overrides = [o for o in OmegaConf.to_container(master.hydra.overrides.hydra)
                           if _key_of(parser.parse_override(o)) not in TASK_HYDRA_KEYS]
        resources = OmegaConf.to_container(master.get("slurm") or {}, resolve=True)
        experiment = str(master.get("experiment_name", "adhoc"))
        points, invalid = [], []
        for index, job in enumerate(_job_overrides(master, parser)):
            try:
                cfg = config_loader.load_configuration(
                    config_name=CONFIG_NAME, overrides=hydra_overrides + job,
                    run_mode=RunMode.RUN, from_shell=False)
            except HydraException as err:
                raise ConfigError(f"sweep point {index} ({' '.join(job)}) does not compose: "
                                  f"{err}") from err
            problems = config_problems(cfg)  # every point is checked before any is submitted
            if problems:
                invalid.append(f"#{index} {' '.join(job)}: {'; '.join(problems)}")
                continue
            run_id, merge_id = records.run_id(cfg), records.merge_id(cfg)
            run_dir = Path(cfg.paths.runs) / run_id
            merge_dir = Path(cfg.paths.merges) / merge_id
            manifest = [o for o in job if not is_resource_override(o, parser)] + hydra_overrides
            points.append(Point(
                index=index, overrides=manifest, run_id=run_id, merge_id=merge_id,
                stage=str(cfg.stage), result_dir=str(run_dir), merge_dir=str(merge_dir),
                complete=_is_complete(cfg, run_dir, merge_dir)))
    GlobalHydra.instance().clear()
    if invalid:
        raise ConfigError(f"{len(invalid)} sweep point(s) are invalid, nothing was submitted: "
                          + " | ".join(invalid))
    log.info("sweep %s: %d points, %d complete", experiment, len(points),
             sum(p.complete for p in points))
    return Sweep(points=points, resources=resources, experiment=experiment, argv=list(argv),
                 hydra_overrides=hydra_overrides)
