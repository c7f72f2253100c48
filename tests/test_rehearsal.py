"""The rehearsal end to end: a twin of a paper pair, merged, scored on all 13 real paper13 tasks
(lm-eval and lmms-eval, installed task code) over the rehearsal's mini datasets, offline; then
the tables. A mirror lacking a column a task reads fails the run before scores, with no record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TWIN = "twin_llava_next_llama3_8b"
TWINS = ["twin_llava_next_llama3_8b", "twin_llava_next_mistral_7b", "twin_llava15_vicuna_7b"]
PAPER13 = ["mmlu", "gsm8k", "arc_challenge", "hellaswag", "winogrande", "truthfulqa_mc2",
           "mme", "mmbench", "seedbench", "pope", "textvqa", "scienceqa_img", "gqa"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run(cmd: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **OFFLINE, **env},
                          capture_output=True, text=True, timeout=timeout)


def _harness(results: Path, cache: Path, data: Path, *args: str, twin: str = TWIN,
             timeout: int = 1800):
    env = {"HARNESS_RESULTS": str(results), "HARNESS_CACHE": str(cache),
           "HARNESS_WANDB_MODE": "disabled", "HF_HOME": str(cache / "hf")}
    return _run([sys.executable, "-m", "harness", "+experiment=rehearsal", "hydra.mode=RUN",
                 f"pair={twin}", f"eval.data_root={data}", "merge.progress=false", *args],
                env, timeout)


@pytest.fixture(scope="module")
def rehearsal_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rehearsal") / "data"
    proc = _run([sys.executable, "-m", "harness.rehearsal", "--out", str(out)], {}, 600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
@pytest.mark.parametrize("twin", TWINS)
def test_twin_runs_all_13_benchmarks_and_the_table_has_13_columns(tmp_path, rehearsal_data,
                                                                   cache, twin):
    results = tmp_path / "results"
    proc = _harness(results, cache, rehearsal_data, "method=neuron_fusion", twin=twin)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (path,) = sorted((results / "runs").glob("*/result.json"))
    record = json.loads(path.read_text())
    assert record["status"] == "complete" and record["pair"] == twin
    scores = record["scores"]
    assert sorted(scores) == sorted(PAPER13)
    for name, entry in scores.items():
        assert entry["n"] > 0, (name, entry)
        assert entry["task_version"] is not None, (name, entry)
    assert scores["mmlu"]["task"] == "mmlu" and scores["gqa"]["task"] == "gqa"
    assert "mme_cognition_score" in scores["mme"]["extra"]
    assert set(record["averages"]) >= {"language", "vision", "all"}
    run_dir = path.parent
    lm_logs = {p.name for p in (run_dir / "lm_eval").glob("samples_*.jsonl")}
    lmms_logs = {p.name for p in (run_dir / "lmms_eval").glob("samples_*.jsonl")}
    assert {"samples_gsm8k.jsonl", "samples_mmlu_anatomy.jsonl"} <= lm_logs
    assert {f"samples_{t}.jsonl" for t in ("mme", "mmbench_en_dev_static", "seedbench", "pope",
                                            "textvqa_val", "scienceqa_img", "gqa")} <= lmms_logs
    assert not (ROOT / "submissions").exists() and not (rehearsal_data / "submissions").exists()
    counts = record["merge"]["counts"]
    assert counts["unmatched"] == 0 and counts["matched"] > 0, counts

    tables = _run([sys.executable, "-m", "harness.tables", "--results", str(results),
                   "--no-plots"], {}, 300)
    assert tables.returncode == 0, tables.stderr[-2000:]
    import pandas as pd

    table = pd.read_csv(results / "tables" / f"main_{twin}_paper13.csv")
    assert len([c for c in table.columns if c.lower() in {b.lower() for b in PAPER13}]) == 13, \
        list(table.columns)


@pytest.mark.slow
def test_twin_generation_suite_is_classified_into_a_table(tmp_path, rehearsal_data, cache):
    """The generation suite (triviaqa, nq_open, gsm8k: real lm-eval tasks on the mirror) on a
    twin; its answers land in the generation table (random weights: only the plumbing)."""
    results = tmp_path / "results"
    for method in ("base", "mllm"):
        proc = _harness(results, cache, rehearsal_data, f"method={method}", "eval=generation")
        assert proc.returncode == 0, proc.stderr[-4000:]
    tables = _run([sys.executable, "-m", "harness.tables", "--results", str(results),
                   "--no-plots"], {}, 300)
    assert tables.returncode == 0, tables.stderr[-2000:]
    import pandas as pd

    shares = pd.read_csv(results / "tables" / f"generation_{TWIN}_generation.csv")
    assert list(shares.columns[:5]) == ["method", "correct", "not_known",
                                        "context_hallucination", "other_error"]
    assert len(shares) == 2
    assert (shares.iloc[:, 1:5].sum(axis=1).round(6) == 100).all()


@pytest.mark.slow
def test_a_missing_column_fails_before_scores_and_writes_no_record(tmp_path, rehearsal_data,
                                                                    cache):
    import pyarrow.parquet as pq

    broken = tmp_path / "broken"
    shutil.copytree(rehearsal_data, broken)
    part = broken / "lmms-lab-encoder" / "textvqa" / "data" / "default-validation.parquet"
    pq.write_table(pq.read_table(part).drop_columns(["answers"]), part)
    results = tmp_path / "results"
    proc = _harness(results, cache, broken, "method=mllm", timeout=900)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "benchmark textvqa" in proc.stderr and "answers" in proc.stderr, proc.stderr[-3000:]
    assert not list((results / "runs").glob("*/result.json"))
