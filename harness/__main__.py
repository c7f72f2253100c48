"""`python -m harness ...`: compose the Hydra config, run one point (merge → eval → record), or
an experiment's hyperparameter selection (harness/selection/)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from harness.errors import HarnessError

log = logging.getLogger("harness")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: one run of the pipeline (or, for an experiment with a `selection`
    block, the grids on validation and the chosen points on test: harness/selection/)."""
    try:
        if cfg.get("selection"):
            from hydra.core.hydra_config import HydraConfig

            from harness.selection import run_selection

            run_selection(cfg, list(HydraConfig.get().overrides.task))
        else:
            from harness.pipeline import run

            run(cfg)
    except HarnessError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
