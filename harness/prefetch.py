"""`python -m harness.prefetch pair=<pair> eval=<suite> [+dry_run=true]`: download a pair's models
and a suite's datasets into the local HF cache, on a machine with internet, so that compute nodes
can run offline. Nothing else in the harness downloads.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.errors import HarnessError

log = logging.getLogger("harness.prefetch")


def plan(cfg: DictConfig) -> list[tuple[str, str, str | None]]:
    """What would be fetched: (kind, id, revision) for models and (tool, task, None) for data."""
    items = []
    if cfg.pair.get("source") == "hub":
        items.append(("model", cfg.pair.base, cfg.pair.get("base_revision")))
        items.append(("model", cfg.pair.mllm, cfg.pair.get("mllm_revision")))
    from harness.eval.suite import load_benchmarks

    for b in load_benchmarks(cfg.eval):
        items.append((b.tool, b.task, None))
    return items


def fetch(items: list[tuple[str, str, str | None]]) -> None:
    """Download every planned item (needs internet)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(var, None)
    from huggingface_hub import snapshot_download

    lm_tasks = [t for kind, t, _ in items if kind == "lm-eval"]
    lmms_tasks = [t for kind, t, _ in items if kind == "lmms-eval"]
    for kind, ident, rev in items:
        if kind == "model":
            log.info("model %s@%s", ident, rev or "main")
            snapshot_download(ident, revision=rev)
    if lm_tasks:
        from lm_eval.tasks import TaskManager, get_task_dict

        log.info("lm-eval datasets: %s", ", ".join(lm_tasks))
        get_task_dict(lm_tasks, TaskManager())  # building the tasks downloads their datasets
    if lmms_tasks:
        from lmms_eval.tasks import TaskManager as LmmsTaskManager
        from lmms_eval.tasks import get_task_dict as lmms_get_task_dict

        log.info("lmms-eval datasets: %s", ", ".join(lmms_tasks))
        lmms_get_task_dict(lmms_tasks, LmmsTaskManager(model_name="llava_hf"))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Print the plan; fetch it unless `+dry_run=true`."""
    try:
        items = plan(cfg)
        for kind, ident, rev in items:
            print(f"{kind:9s} {ident}" + (f"@{rev}" if rev else ""))
        if not items:
            print("nothing to fetch (local pair and no hub benchmarks)")
        if OmegaConf.select(cfg, "dry_run", default=False) or not items:
            return
        fetch(items)
        print("done: the HF cache now holds everything above; copy HF_HOME to offline nodes")
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
