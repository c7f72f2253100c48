"""Where the harness keeps what it writes, in one place.

Two roots, each overridable by an environment variable:
- the results root (`HARNESS_RESULTS`, default `results`): `runs/` (one record per run),
  `merges/` (merged models), `tables/` (`make tables`), plus `hydra/`, `slurm/`, `bench/`,
  `analysis/` and `wandb/` beside them;
- the cache root (`HARNESS_CACHE`, default `.cache/harness`): built artefacts that are not
  results (the micro pair, the twins, bench checkpoints, weight fingerprints).
Relative roots are relative to the directory the command runs from (the repository root in
every README command). conf/paths/default.yaml reads them through the `harness_path` resolver
registered here, so the Hydra apps, `make tables`, the bench and the SLURM status agree.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

RESULTS_ENV = "HARNESS_RESULTS"
CACHE_ENV = "HARNESS_CACHE"
DEFAULT_RESULTS = "results"
DEFAULT_CACHE = ".cache/harness"
# sub-folders of the results root
RESULT_DIRS = {"runs": "runs", "merges": "merges", "tables": "tables"}


def results_root() -> Path:
    """The results root: `$HARNESS_RESULTS`, else `results`."""
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


def cache_root() -> Path:
    """The cache root: `$HARNESS_CACHE`, else `.cache/harness`."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def runs_dir(results: Path | None = None) -> Path:
    """`<results>/runs`: one directory per run, holding its result.json."""
    return Path(results if results is not None else results_root()) / RESULT_DIRS["runs"]


def merges_dir(results: Path | None = None) -> Path:
    """`<results>/merges`: one directory per merged model."""
    return Path(results if results is not None else results_root()) / RESULT_DIRS["merges"]


def tables_dir(results: Path | None = None) -> Path:
    """`<results>/tables`: what `make tables` writes."""
    return Path(results if results is not None else results_root()) / RESULT_DIRS["tables"]


def _resolve(kind: str, results: str | None = None) -> str:
    """`${harness_path:results}`, `${harness_path:cache}` or `${harness_path:runs,<results>}`
    (also merges, tables) in conf/."""
    if kind == "results":
        return str(results_root())
    if kind == "cache":
        return str(cache_root())
    if kind in RESULT_DIRS:
        return str(Path(results if results is not None else results_root()) / RESULT_DIRS[kind])
    raise ValueError(f"${{harness_path:{kind}}}: unknown path; choose results, cache, "
                     f"{', '.join(RESULT_DIRS)}")


def register_resolver() -> None:
    """Register `harness_path` with OmegaConf (idempotent; done when `harness` is imported)."""
    if not OmegaConf.has_resolver("harness_path"):
        OmegaConf.register_new_resolver("harness_path", _resolve)
