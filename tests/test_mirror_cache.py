"""Data comes from the mirror named: two mirrors that differ only in content give each run its own
rows, through the harness, with one shared datasets cache (each mirror gets a cache of its own)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from harness.eval.mirror import in_mirror, write_repo

ROOT = Path(__file__).resolve().parent.parent
TWIN = "twin_llava_next_mistral_7b"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _rows(answer: str, n: int = 3) -> Dataset:
    return Dataset.from_list([{"question": f"What is {i} + 1?", "answer": answer}
                              for i in range(n)])


def test_each_mirror_loads_its_own_rows_from_one_cache(tmp_path):
    """Same repo id, same sizes, other content: `datasets` alone would hand mirror B the rows
    it cached from mirror A."""
    from datasets import load_dataset

    for name, answer in (("a", "#### 34"), ("b", "#### 35")):
        write_repo(tmp_path / name, "openai/gsm8k", {"main": {"test": _rows(answer)}})
    seen = []
    for name in ("a", "b", "a"):
        with in_mirror(tmp_path / name):
            seen.append(load_dataset("openai/gsm8k", "main")["test"]["answer"][0])
    assert seen == ["#### 34", "#### 35", "#### 34"]


def test_a_mirror_rewritten_in_place_is_not_read_from_its_old_cache(tmp_path):
    from datasets import load_dataset

    write_repo(tmp_path, "openai/gsm8k", {"main": {"test": _rows("#### 34")}})
    with in_mirror(tmp_path):
        assert load_dataset("openai/gsm8k", "main")["test"]["answer"][0] == "#### 34"
    write_repo(tmp_path, "openai/gsm8k", {"main": {"test": _rows("#### 12")}})  # same size
    with in_mirror(tmp_path):
        assert load_dataset("openai/gsm8k", "main")["test"]["answer"][0] == "#### 12"


def test_prefetch_writes_the_source_it_runs_in_not_a_cached_one(tmp_path, monkeypatch):
    """prefetch --mirror loads each dataset from its source (here a folder as working directory,
    as the hub would be online): a copy of another source cached earlier is not what it writes."""
    from datasets import load_dataset
    from omegaconf import OmegaConf

    from harness.prefetch import write_mirror

    for name, answer in (("old", "#### 1"), ("new", "#### 2")):
        write_repo(tmp_path / name, "openai/gsm8k", {"main": {"test": _rows(answer),
                                                              "train": _rows(answer, 5)}})
    monkeypatch.chdir(tmp_path / "old")
    assert load_dataset("openai/gsm8k", "main")["test"]["answer"][0] == "#### 1"  # now cached
    monkeypatch.chdir(tmp_path / "new")
    eval_cfg = OmegaConf.create({"name": "g", "task_paths": [], "benchmarks": {
        "gsm8k": {"suite": "language", "tool": "lm-eval", "task": "gsm8k",
                  "metric": "exact_match", "columns": ["question", "answer"]}}})
    write_mirror(eval_cfg, tmp_path / "out")
    monkeypatch.chdir(tmp_path / "out")
    written = load_dataset("openai/gsm8k", "main", cache_dir=str(tmp_path / "fresh"))
    assert set(written["test"]["answer"]) == {"#### 2"}


def _run(cmd: list[str], env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **OFFLINE, **env},
                          capture_output=True, text=True, timeout=timeout)


def _targets(results: Path, data: Path, cache: Path) -> list[str]:
    """The gsm8k targets of the per-sample log of one run on the mirror `data`."""
    env = {"HARNESS_RESULTS": str(results), "HARNESS_CACHE": str(cache),
           "HARNESS_WANDB_MODE": "disabled"}
    proc = _run([sys.executable, "-m", "harness", f"pair={TWIN}", "method=base",
                 "eval=generation", "~eval.benchmarks.triviaqa", "~eval.benchmarks.nq_open",
                 f"eval.data_root={data}", "eval.limit=2", "eval.max_new_tokens=4",
                 "eval.device=cpu", "eval.dtype=float32", "eval.batch_size=2",
                 "merge.progress=false"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (log,) = results.glob("runs/*/lm_eval/samples_gsm8k.jsonl")
    return [json.loads(line)["target"] for line in log.read_text().splitlines() if line]


@pytest.mark.slow
def test_two_mirrors_give_each_run_its_own_targets(tmp_path):
    """Mirror B is mirror A with every gsm8k answer changed; runs on A then B on one machine
    (one HF datasets cache) score B's run against B's answers."""
    import pyarrow.parquet as pq

    a, b = tmp_path / "a", tmp_path / "b"
    proc = _run([sys.executable, "-m", "harness.rehearsal", "--out", str(a), "--only", "gsm8k"],
                {}, 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(a, b)
    for path in (b / "openai" / "gsm8k").rglob("*.parquet"):
        table = pq.read_table(path).to_pandas()
        table["answer"] = [a.rsplit("####", 1)[0] + "#### 424242" for a in table["answer"]]
        Dataset.from_pandas(table, preserve_index=False).to_parquet(str(path))
    cache = tmp_path / "cache"
    first = _targets(tmp_path / "results_a", a, cache)
    second = _targets(tmp_path / "results_b", b, cache)
    assert first and not any("424242" in t for t in first)
    assert second and all(t.endswith("424242") for t in second), second
