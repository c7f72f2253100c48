"""Local dataset mirrors: the real installed tasks reading their data from a folder, offline.

`eval.data_root=DIR` points every benchmark of a suite at a hub-layout mirror: `DIR/<org>/<name>/`
holds a `README.md` whose YAML front matter declares the configs and the data files of each split
(the layout of a hub dataset repository), and the data files (parquet). The tasks stay the real,
installed ones: the same task ids, YAML, utils code and metric keys as a hub run.

Mechanism: the evaluators run with the mirror as working directory. `datasets.load_dataset`
(datasets 5.x) resolves an id such as `cais/mmlu` to the folder `./cais/mmlu` before it tries the
hub, so every `load_dataset` call of a task finds the mirror, including calls inside a task's own
code (GQA's `process_docs` loads its images by a hard-coded id). Model, output and cache paths are
made absolute before the directory changes.

`datasets` caches what it loads under a key that does not say which folder it came from, so
each mirror gets a datasets cache of its own (`in_mirror`): `<HF_DATASETS_CACHE>/harness_mirrors/
<mirror digest>-<stamp of the files' modification times>`. A run inside mirror B never sees rows
cached from mirror A, nor from an earlier state of B.

Before any model loads, `check_mirror` compares the mirror with what each task reads: the repo
folder, the config (`dataset_name`), every split the task names, and the columns the suite file
declares for the benchmark (`columns`, and `extra_data` for data a task's code loads itself). Any
gap is an EvalError naming the benchmark, the task, the path and what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.errors import EvalError
from harness.eval.suite import Benchmark

# read at call time: `datasets` (through datasets.config), lmms-eval (its own cache_dir argument)
CACHE_ENV = ("HF_DATASETS_CACHE", "LMMS_EVAL_DATASETS_CACHE")
SPLIT_KEYS = ("test_split", "validation_split", "training_split", "fewshot_split")
# packaged `datasets` builders: a task naming one reads local files, not a hub dataset
DATA_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "imagefolder",
                 "audiofolder", "webdataset"}


@dataclass(frozen=True)
class DataNeed:
    """One dataset config a benchmark's task reads: the splits it names, the columns it needs."""

    benchmark: str
    task: str
    path: str                  # hub id, e.g. cais/mmlu
    config: str | None         # dataset_name (None: the repo's only or default config)
    splits: tuple[str, ...]
    columns: tuple[str, ...] = field(default=())


def _split_names(cfg: dict) -> tuple[str, ...]:
    names = []
    for key in SPLIT_KEYS:
        value = cfg.get(key)
        if isinstance(value, str) and value not in names:
            names.append(value)
    return tuple(names)


def _lm_eval_leaves(manager, name: str, seen: set[str]) -> list[dict]:
    """The task configs under an lm-eval task, group or tag (includes resolved, functions not)."""
    from lm_eval.tasks._index import Kind

    if name in seen:
        return []
    seen.add(name)
    entry = manager.task_index.get(name)
    if entry is None:
        return []
    if entry.kind == Kind.TAG:
        return [c for other, e in sorted(manager.task_index.items()) if name in e.tags
                for c in _lm_eval_leaves(manager, other, seen)]
    cfg = entry.cfg or {}
    if entry.kind == Kind.GROUP:
        from lm_eval.tasks._factory import GROUP_FIELD_NAMES

        members = cfg.get("task") or []
        members = members if isinstance(members, list) else [members]
        out = []
        for member in members:
            if isinstance(member, str):
                out += _lm_eval_leaves(manager, member, seen)
            elif isinstance(member, dict) and isinstance(member.get("task"), str):
                leaves = _lm_eval_leaves(manager, member["task"], seen)
                out += [{**leaf, **member} for leaf in leaves] or [member]
        # a group's own task keys (a variant's `test_split: validation`) reach every leaf
        pushed = {k: v for k, v in cfg.items() if k not in GROUP_FIELD_NAMES}
        return [{**leaf, **pushed} for leaf in out]
    return [cfg]


def _lmms_eval_leaves(manager, name: str) -> list[dict]:
    """The task configs under an lmms-eval task or group."""
    from lmms_eval.utils import load_yaml_config

    entry = manager.task_index.get(name)
    if entry is None or not entry.get("yaml_path"):
        return []
    cfg = load_yaml_config(entry["yaml_path"], mode="simple")
    members = cfg.get("task")
    if isinstance(members, list):
        return [c for m in members if isinstance(m, str) for c in _lmms_eval_leaves(manager, m)]
    return [cfg]


def data_needs(bench: Benchmark, manager) -> list[DataNeed]:
    """What `bench` reads, from its tool's installed task configs and the suite's declarations."""
    leaves = (_lm_eval_leaves(manager, bench.task, set()) if bench.tool == "lm-eval"
              else _lmms_eval_leaves(manager, bench.task))
    needs = {}
    for cfg in leaves:
        path = cfg.get("dataset_path")
        if not isinstance(path, str) or path.startswith(("/", ".")) or path in DATA_BUILDERS:
            continue  # a local file or a packaged builder (json, parquet): not a hub dataset
        config = cfg.get("dataset_name")
        key = (path, config)
        splits = _split_names(cfg)
        old = needs.get(key)
        if old:
            splits = old.splits + tuple(s for s in splits if s not in old.splits)
        needs[key] = DataNeed(bench.name, cfg.get("task", bench.task), path, config, splits,
                              tuple(bench.columns))
    extra = [DataNeed(bench.name, bench.task, e["path"], e.get("config"),
                      tuple(e.get("splits") or ()), tuple(e.get("columns") or ()))
             for e in bench.extra_data]
    return list(needs.values()) + extra


def suite_data_needs(benches: list[Benchmark], managers: dict) -> list[DataNeed]:
    """What every benchmark of a suite reads; `managers` maps each tool to its task index
    (harness.eval.task_managers)."""
    return [n for b in benches for n in data_needs(b, managers[b.tool])]


def _front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if not text.startswith("---"):
        return {}
    try:
        return yaml.safe_load(text.split("---", 2)[1]) or {}
    except (yaml.YAMLError, IndexError):
        return {}


def _config_files(card: dict) -> dict[str, dict[str, list[str]]]:
    """config name → split → data file patterns, from a dataset card's `configs`."""
    out: dict[str, dict[str, list[str]]] = {}
    for entry in card.get("configs") or []:
        files = entry.get("data_files") or []
        splits: dict[str, list[str]] = {}
        if isinstance(files, str):
            splits["train"] = [files]
        elif isinstance(files, dict):
            splits = {k: v if isinstance(v, list) else [v] for k, v in files.items()}
        else:
            for item in files:
                paths = item.get("path")
                splits[item.get("split", "train")] = paths if isinstance(paths, list) else [paths]
        out[entry.get("config_name", "default")] = splits
    return out


def _columns(repo: Path, patterns: list[str]) -> list[str] | None:
    """Column names of the first parquet file matching `patterns` (None: not parquet)."""
    import pyarrow.parquet as pq

    for pattern in patterns:
        for path in sorted(repo.glob(pattern)):
            if path.suffix == ".parquet":
                return list(pq.read_schema(path).names)
    return None


def check_mirror(root: Path, needs: list[DataNeed], suite: str) -> None:
    """EvalError unless the mirror at `root` has every repo, config, split and column `needs`
    lists. The message names the benchmark, task and what is missing, and how to fix it."""
    fix = (f"Write the data with `python -m harness.prefetch eval={suite} --mirror {root}` on a "
           f"machine with internet (or `python -m harness.rehearsal --out {root}` for the "
           f"rehearsal's mini datasets)")
    for need in needs:
        where = f"benchmark {need.benchmark} (task {need.task})"
        repo = root / need.path
        if not repo.is_dir():
            raise EvalError(f"{where} reads dataset {need.path}, but the mirror "
                            f"eval.data_root={root} has no folder {repo}. {fix}")
        configs = _config_files(_front_matter(repo / "README.md"))
        if not configs:
            raise EvalError(f"{where}: {repo / 'README.md'} declares no `configs:` in its front "
                            f"matter, so the configs and splits of {need.path} are unknown. {fix}")
        name = need.config or ("default" if "default" in configs or len(configs) != 1
                               else next(iter(configs)))
        if name not in configs:
            raise EvalError(f"{where} reads config {name!r} of {need.path}, but "
                            f"{repo / 'README.md'} declares only {sorted(configs)}. {fix}")
        for split in need.splits:
            patterns = configs[name].get(split)
            if not patterns:
                raise EvalError(f"{where} reads split {split!r} of {need.path} (config {name}), "
                                f"but {repo / 'README.md'} declares only "
                                f"{sorted(configs[name])}. {fix}")
            if not any(any(repo.glob(p)) for p in patterns):
                raise EvalError(f"{where}: the data files {patterns} of split {split!r} of "
                                f"{need.path} (config {name}) are missing under {repo}. {fix}")
            have = _columns(repo, patterns)
            missing = [c for c in need.columns if have is not None and c not in have]
            if missing:
                raise EvalError(f"{where} reads column(s) {', '.join(missing)} of {need.path} "
                                f"(config {name}, split {split}), which "
                                f"{repo / patterns[0]} lacks (it has {', '.join(have)}). {fix}")


Configs = dict[str, dict]  # config name -> split name -> datasets.Dataset


def write_repo(root: Path, repo_id: str, configs: Configs, about: str = "") -> Path:
    """Write one dataset in the hub layout, replacing any earlier copy:
    `root/<org>/<name>/data/<config>-<split>.parquet` (`Dataset.to_parquet`, so the feature types
    such as Image or ClassLabel travel in the schema) and a README.md whose front matter declares
    every config and split (the first config is the default one), followed by `about`.
    Returns the dataset folder."""
    import datasets

    org, sep, name = repo_id.partition("/")
    if not (org and sep and name) or "/" in name:
        raise ValueError(f"dataset id {repo_id!r} is not of the form '<org>/<name>'")
    if not configs or any(not splits for splits in configs.values()):
        raise ValueError(f"{repo_id}: every config needs at least one split: {list(configs)}")
    repo = Path(root) / org / name
    if repo.exists():
        shutil.rmtree(repo)  # a stale parquet of a removed config would otherwise linger
    (repo / "data").mkdir(parents=True)
    card = []
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one "Creating parquet" bar per file drowns the output
    try:
        for config, splits in configs.items():
            files = []
            for split, rows in splits.items():
                rel = f"data/{config}-{split}.parquet"
                rows.to_parquet(str(repo / rel))
                files.append({"split": split, "path": rel})
            card.append({"config_name": config, "data_files": files})
    finally:
        if bars:
            datasets.enable_progress_bars()
    front = yaml.safe_dump({"configs": card}, sort_keys=False)
    (repo / "README.md").write_text(f"---\n{front}---\n" + (f"\n{about}\n" if about else ""))
    return repo


def mirror_digest(root: Path) -> str:
    """A short hash of a mirror: every data file's relative name and size, and the text of every
    dataset card (real datasets are large, so data files count by size, not content)."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        extra = path.read_bytes() if path.name == "README.md" else b""
        digest.update(f"{rel}\0{path.stat().st_size}\0".encode() + extra)
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def working_directory(path: Path | None) -> Iterator[None]:
    """Run the block with `path` as working directory (no change when `path` is None)."""
    if path is None:
        yield
        return
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def files_stamp(root: Path) -> str:
    """A short hash of the relative name and modification time of every file under `root`."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            digest.update(f"{rel}\0{path.stat().st_mtime_ns}\0".encode())
    return digest.hexdigest()[:12]


def mirror_cache_dir(root: Path) -> Path:
    """The datasets cache of the mirror (or dataset folder) `root`: keyed by its digest and by
    its files' modification times, under the current datasets cache."""
    import datasets.config

    base = Path(datasets.config.HF_DATASETS_CACHE)
    return base / "harness_mirrors" / f"{mirror_digest(root)}-{files_stamp(root)}"


@contextlib.contextmanager
def datasets_cache(cache: Path) -> Iterator[Path]:
    """`datasets` (and lmms-eval) read and write their dataset cache in `cache` for the block.
    datasets.config reads HF_DATASETS_CACHE once, when `datasets` is imported; its attribute is
    what `load_dataset` consults, so that is what changes here (the variables too, for
    lmms-eval, which reads them itself)."""
    import datasets.config

    before = datasets.config.HF_DATASETS_CACHE
    env = {name: os.environ.get(name) for name in CACHE_ENV}
    Path(cache).mkdir(parents=True, exist_ok=True)
    datasets.config.HF_DATASETS_CACHE = Path(cache)
    os.environ.update({name: str(cache) for name in CACHE_ENV})
    try:
        yield Path(cache)
    finally:
        datasets.config.HF_DATASETS_CACHE = before
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def in_mirror(root: Path | None) -> Iterator[None]:
    """Run the block with the mirror `root` as working directory and a datasets cache of its
    own (`mirror_cache_dir`); nothing changes when `root` is None."""
    if root is None:
        yield
        return
    with datasets_cache(mirror_cache_dir(root)), working_directory(root):
        yield
