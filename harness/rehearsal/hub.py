"""Write one dataset repository in the Hugging Face Hub layout, so that
`datasets.load_dataset("<org>/<name>", "<config>")` reads it from a local folder of that name:

    <root>/<org>/<name>/README.md                    YAML front matter `configs:` (config_name,
                                                     data_files per split)
    <root>/<org>/<name>/data/<config>-<split>.parquet  written by Dataset.to_parquet, so the HF
                                                     feature types (Image, ClassLabel, ...) travel
                                                     in the parquet schema metadata
"""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import yaml
from datasets import Dataset

Configs = dict[str, dict[str, Dataset]]  # config_name -> split -> rows


def write_repo(root: Path, repo_id: str, configs: Configs) -> Path:
    """Write `configs` as the repository `repo_id` under `root`, replacing any earlier copy.

    Args:
        root: the mirror root (the working directory of a rehearsal run).
        repo_id: "<org>/<name>", as the task YAML's `dataset_path` spells it.
        configs: {config_name: {split: Dataset}}; the first config is the default one.

    Returns:
        The repository folder.
    """
    org, sep, name = repo_id.partition("/")
    if not (org and sep and name) or "/" in name:
        raise ValueError(f"repo id {repo_id!r} is not of the form '<org>/<name>'")
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
            card.append({"config_name": config, "data_files": _write_splits(repo, config, splits)})
    finally:
        if bars:
            datasets.enable_progress_bars()
    front = yaml.safe_dump({"configs": card}, sort_keys=False)
    (repo / "README.md").write_text(
        f"---\n{front}---\n\n# {repo_id} (rehearsal copy)\n\n"
        "Synthetic rows with the upstream schema, written by `python -m harness.rehearsal`.\n")
    return repo


def _write_splits(repo: Path, config: str, splits: dict[str, Dataset]) -> list[dict[str, str]]:
    """Write one parquet file per split of `config`; returns the card's `data_files` entries."""
    files = []
    for split, rows in splits.items():
        rel = f"data/{config}-{split}.parquet"
        rows.to_parquet(str(repo / rel))
        files.append({"split": split, "path": rel})
    return files
