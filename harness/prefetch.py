"""`python -m harness.prefetch pair=<pair> eval=<suite> [+dry_run=true] [--mirror DIR]`: download a
pair's models and a suite's datasets into the local HF cache, on a machine with internet, so that
compute nodes can run offline. Nothing else in the harness downloads.

With `--mirror DIR` the datasets are also written to DIR in the hub layout (one folder per dataset,
a README declaring its configs and splits, parquet files), which offline nodes read with
`eval.data_root=DIR` (harness/eval/mirror.py): a shared disk instead of a copied HF cache.
A suite that names a validation suite (paper13: paper13_val) brings that suite's data too.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.errors import HarnessError

log = logging.getLogger("harness.prefetch")


def suites(cfg: DictConfig) -> list:
    """The suite and, when it names one, its validation suite (composed: Hydra is running)."""
    if not cfg.eval.get("validation"):
        return [cfg.eval]
    from hydra import compose

    return [cfg.eval, compose("config", overrides=[f"eval={cfg.eval.validation}"]).eval]


def plan(cfg: DictConfig, evals: list | None = None) -> list[tuple[str, str, str | None]]:
    """What would be fetched: (kind, id, revision) for models and (tool, task, None) for data
    (of `evals`, default the run's suite)."""
    items = []
    if cfg.pair.get("source") == "hub":
        items.append(("model", cfg.pair.base, cfg.pair.get("base_revision")))
        items.append(("model", cfg.pair.mllm, cfg.pair.get("mllm_revision")))
    from harness.eval.suite import load_benchmarks

    for eval_cfg in evals or [cfg.eval]:
        for b in load_benchmarks(eval_cfg):
            items.append((b.tool, b.task, None))
    return items


def _task_dirs(evals: list, scratch: Path) -> list[Path]:
    """Every suite's local task folders, rendered under `scratch` (task variants of installed
    tasks are indexed with them)."""
    from harness.eval.local_tasks import render_task_dirs
    from harness.eval.suite import task_paths

    return [d for i, e in enumerate(evals)
            for d in render_task_dirs(task_paths(e), scratch / str(i))]


def fetch(items: list[tuple[str, str, str | None]], evals: list = ()) -> None:
    """Download every planned item (needs internet); `evals`' local task folders are indexed
    so that their variants of installed tasks load (and download) too."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(var, None)
    from huggingface_hub import snapshot_download

    lm_tasks = [t for kind, t, _ in items if kind == "lm-eval"]
    lmms_tasks = [t for kind, t, _ in items if kind == "lmms-eval"]
    for kind, ident, rev in items:
        if kind == "model":
            log.info("model %s@%s", ident, rev or "main")
            snapshot_download(ident, revision=rev)
    scratch = tempfile.TemporaryDirectory()
    paths = [str(d) for d in _task_dirs(list(evals), Path(scratch.name))] or None
    if lm_tasks:
        from lm_eval.tasks import TaskManager, get_task_dict

        log.info("lm-eval datasets: %s", ", ".join(lm_tasks))
        # building the tasks downloads their datasets
        get_task_dict(lm_tasks, TaskManager(include_path=paths))
    if lmms_tasks:
        from lmms_eval.tasks import TaskManager as LmmsTaskManager
        from lmms_eval.tasks import get_task_dict as lmms_get_task_dict

        log.info("lmms-eval datasets: %s", ", ".join(lmms_tasks))
        lmms_get_task_dict(lmms_tasks, LmmsTaskManager(include_path=paths,
                                                       model_name="llava_hf"))
    scratch.cleanup()


def write_mirror(eval_cfg, root: Path, more: list = ()) -> list[str]:
    """Write every dataset the suite's tasks (and those of the suites in `more`) read, each
    config with every split, to `root` in the hub layout; return the dataset ids written. Loads
    through `datasets` (the HF cache, or the hub when online). One call writes all of them
    because a dataset folder is written whole: paper13 and paper13_val read different configs
    of GQA."""
    from datasets import load_dataset

    from harness.eval import task_managers
    from harness.eval.mirror import suite_data_needs, write_repo
    from harness.eval.suite import load_benchmarks

    needs = []
    with tempfile.TemporaryDirectory() as scratch:
        for i, suite in enumerate([eval_cfg, *more]):
            benches = load_benchmarks(suite)
            task_dirs = _task_dirs([suite], Path(scratch) / str(i))
            needs += suite_data_needs(benches, task_managers(benches, task_dirs))
    repos: dict[str, dict] = {}
    for need in needs:
        configs = repos.setdefault(need.path, {})
        name = need.config or "default"
        if name not in configs:
            log.info("dataset %s (%s)", need.path, name)
            configs[name] = dict(load_dataset(need.path, need.config))
    for path, configs in repos.items():
        write_repo(root, path, configs)
    return sorted(repos)


def pop_mirror(argv: list[str]) -> Path | None:
    """Remove `--mirror DIR` (or `--mirror=DIR`) from argv, which Hydra parses; return DIR."""
    for i, arg in enumerate(argv):
        if arg == "--mirror":
            if i + 1 >= len(argv):
                raise SystemExit("error: --mirror needs a directory: --mirror DIR")
            value = argv[i + 1]
            del argv[i:i + 2]
            return Path(value).expanduser().resolve()
        if arg.startswith("--mirror="):
            del argv[i]
            return Path(arg.split("=", 1)[1]).expanduser().resolve()
    return None


MIRROR: list[Path] = []  # the --mirror directory, taken from argv before Hydra starts


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Print the plan; fetch it unless `+dry_run=true`."""
    try:
        evals = suites(cfg)
        items = plan(cfg, evals)
        for kind, ident, rev in items:
            print(f"{kind:9s} {ident}" + (f"@{rev}" if rev else ""))
        if not items:
            print("nothing to fetch (local pair and no hub benchmarks)")
        for root in MIRROR:
            print(f"mirror    every dataset above, written to {root} (eval.data_root={root})")
        if OmegaConf.select(cfg, "dry_run", default=False) or not items:
            return
        fetch(items, evals)
        print("done: the HF cache now holds everything above; copy HF_HOME to offline nodes")
        for root in MIRROR:
            for repo in write_mirror(evals[0], root, evals[1:]):
                print(f"wrote {root / repo}")
            print(f"done: offline nodes read it with eval.data_root={root}")
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    MIRROR.extend(p for p in [pop_mirror(sys.argv)] if p is not None)
    main()
