"""`python -m harness.prefetch pair=<pair> eval=<suite> [+dry_run=true] [--mirror DIR]`: download a
pair's models and a suite's datasets into the local HF cache, on a machine with internet, so that
compute nodes can run offline. Nothing else in the harness downloads.

Of each model repository only the files the harness reads are fetched (harness/models/hub_files.py:
one weight format, configs, tokenizer, processor, chat templates), chosen from the repository's
file list on the hub. `+dry_run=true` prints that choice, file by file with sizes and totals, and
downloads nothing (it still asks the hub for the file lists). The hub is the one HF_ENDPOINT names;
gated repositories need HF_TOKEN.

With `--mirror DIR` the datasets are also written to DIR in the hub layout (one folder per dataset,
a README declaring its configs and splits, parquet files), which offline nodes read with
`eval.data_root=DIR` (harness/eval/mirror.py): a shared disk instead of a copied HF cache.
A suite that names a validation suite (paper13: paper13_val) brings that suite's data too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.cli import defer_errors
from harness.errors import HarnessError, UsageError
from harness.models.hub_files import human_size, select_files

log = logging.getLogger("harness.prefetch")


@dataclass(frozen=True)
class ModelFiles:
    """What is fetched of one model repository: file → size, and the size of the rest."""

    repo: str
    revision: str | None
    sha: str
    files: dict[str, int]
    skipped_bytes: int

    @property
    def nbytes(self) -> int:
        """Total size of the chosen files."""
        return sum(self.files.values())


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


def _online() -> None:
    """Undo the offline switches the harness sets for compute nodes: prefetch is the one online
    command (the hub client reads them when it is first imported)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(var, None)


def list_repo(repo: str, revision: str | None) -> tuple[str, dict[str, int]]:
    """(commit sha, {path: size in bytes}) of model repository `repo` at `revision` on the hub."""
    _online()
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo}@{revision or 'main'}"
    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except GatedRepoError:
        raise HarnessError(f"{repo} is gated: accept its licence on {constants.ENDPOINT}/{repo} "
                           f"while logged in, then set HF_TOKEN (or run `hf auth login`) and "
                           f"rerun") from None
    except RevisionNotFoundError:
        raise HarnessError(f"{where}: the revision does not exist on {constants.ENDPOINT}; fix "
                           f"the pair's base_revision / mllm_revision") from None
    except RepositoryNotFoundError:
        raise HarnessError(f"{repo} is not a model repository on {constants.ENDPOINT} (or it "
                           f"is private: set HF_TOKEN); fix the pair's base / mllm") from None
    except Exception as err:  # the client raises many network error types
        first = (str(err).splitlines() or [""])[0][:160]
        raise HarnessError(f"cannot list the files of {where} on {constants.ENDPOINT} "
                           f"({type(err).__name__}: {first}): prefetch needs internet") from None
    return str(info.sha), {s.rfilename: int(s.size or 0) for s in info.siblings or []}


def choose_model_files(items: list[tuple[str, str, str | None]]) -> list[ModelFiles]:
    """The files to fetch of every model in a plan, with their sizes (asks the hub)."""
    chosen = []
    for kind, ident, rev in items:
        if kind == "model":
            sha, files = list_repo(ident, rev)
            names = select_files(files, ident)
            chosen.append(ModelFiles(ident, rev, sha, {f: files[f] for f in names},
                                     sum(files.values()) - sum(files[f] for f in names)))
    return chosen


def print_plan(items: list[tuple[str, str, str | None]], models: list[ModelFiles]) -> None:
    """The plan, each model with its files and sizes, then the total download size."""
    for m in models:
        print(f"model     {m.repo}@{m.revision or 'main'} (commit {m.sha[:12]})")
        for name, size in m.files.items():
            print(f"          {human_size(size):>10}  {name}")
        print(f"          {len(m.files)} files, {human_size(m.nbytes)} "
              f"(left out: {human_size(m.skipped_bytes)} of other files)")
    for kind, ident, rev in items:
        if kind != "model":
            print(f"{kind:9s} {ident}" + (f"@{rev}" if rev else ""))
    if models:
        total = sum(m.nbytes for m in models)
        print(f"total     {sum(len(m.files) for m in models)} model files, {human_size(total)}")


def fetch(items: list[tuple[str, str, str | None]], models: list[ModelFiles],
          evals: list = ()) -> None:
    """Download every planned item (needs internet): of each model only the chosen files;
    `evals`' local task folders are indexed so that their variants of installed tasks load (and
    download) too."""
    _online()
    from huggingface_hub import snapshot_download

    lm_tasks = [t for kind, t, _ in items if kind == "lm-eval"]
    lmms_tasks = [t for kind, t, _ in items if kind == "lmms-eval"]
    for m in models:
        log.info("model %s@%s: %d files", m.repo, m.revision or "main", len(m.files))
        # exact names as patterns; the revision as configured, so the cache maps it (e.g.
        # `main`) to the snapshot that resolve_model later finds offline
        snapshot_download(m.repo, revision=m.revision, allow_patterns=list(m.files))
    with tempfile.TemporaryDirectory() as scratch:
        paths = [str(d) for d in _task_dirs(list(evals), Path(scratch))] or None
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


def write_mirror(eval_cfg, root: Path, more: list = ()) -> list[str]:
    """Write every dataset the suite's tasks (and those of the suites in `more`) read, each
    config with every split, to `root` in the hub layout; return the dataset ids written. Loads
    through `datasets` (the HF cache, or the hub when online). One call writes all of them
    because a dataset folder is written whole: paper13 and paper13_val read different configs
    of GQA."""
    from datasets import load_dataset

    from harness.eval import task_managers
    from harness.eval.mirror import (datasets_cache, mirror_cache_dir, suite_data_needs,
                                     write_repo)
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
            # a source folder (a mirror as working directory) gets a datasets cache of its own
            source = Path(need.path)
            with (datasets_cache(mirror_cache_dir(source)) if source.is_dir()
                  else contextlib.nullcontext()):
                configs[name] = dict(load_dataset(need.path, need.config))
    for path, configs in repos.items():
        write_repo(root, path, configs)
    return sorted(repos)


def pop_mirror(argv: list[str]) -> Path | None:
    """Remove `--mirror DIR` (or `--mirror=DIR`) from argv, which Hydra parses; return DIR."""
    for i, arg in enumerate(argv):
        if arg == "--mirror":
            if i + 1 >= len(argv):
                raise UsageError("--mirror needs a directory: --mirror DIR")
            value = argv[i + 1]
            del argv[i:i + 2]
            return Path(value).expanduser().resolve()
        if arg.startswith("--mirror="):
            del argv[i]
            return Path(arg.split("=", 1)[1]).expanduser().resolve()
    return None


MIRROR: list[Path] = []  # the --mirror directory, taken from argv before Hydra starts


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@defer_errors
def main(cfg: DictConfig) -> None:
    """Print the plan; fetch it unless `+dry_run=true`."""
    for name in ("httpx", "httpx2"):  # one INFO line per hub request would bury the plan
        logging.getLogger(name).setLevel(logging.WARNING)
    evals = suites(cfg)
    items = plan(cfg, evals)
    models = choose_model_files(items)
    print_plan(items, models)
    if not items:
        print("nothing to fetch (local pair and no hub benchmarks)")
    for root in MIRROR:
        print(f"mirror    every dataset above, written to {root} (eval.data_root={root})")
    if OmegaConf.select(cfg, "dry_run", default=False) or not items:
        return
    fetch(items, models, evals)
    print("done: the HF cache now holds everything above; copy HF_HOME to offline nodes")
    for root in MIRROR:
        for repo in write_mirror(evals[0], root, evals[1:]):
            print(f"wrote {root / repo}")
        print(f"done: offline nodes read it with eval.data_root={root}")


def cli() -> None:
    """Take `--mirror DIR` from the command line, then run the Hydra entry point."""
    MIRROR.extend(p for p in [pop_mirror(sys.argv)] if p is not None)
    main()


if __name__ == "__main__":
    from harness.cli import run_main

    sys.argv.append("hydra/help=prefetch")  # this command's own --help page
    run_main(cli)
