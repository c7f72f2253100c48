"""A run is named by what it evaluated: a local checkpoint rebuilt at the same path gives a new
run with fresh scores, end to end through `python -m harness`; the old record stays as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _harness(results: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_RESULTS": str(results), "HARNESS_CACHE": str(cache),
           "HARNESS_WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "harness", "merge.progress=false",
                           "tracking.wandb.mode=disabled", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def _samples(run_dir: Path) -> list:
    path = run_dir / "lm_eval" / "samples_harness_smoke_mc.jsonl"
    return [json.loads(line)["resps"] for line in path.read_text().splitlines()]


def test_a_checkpoint_rebuilt_at_the_same_path_is_a_new_run(tmp_path, tiny_llama):
    from harness.models.tiny import build_tiny_tuned_llm

    mllm = build_tiny_tuned_llm(tmp_path / "tuned", tiny_llama, seed=1)
    results, cache = tmp_path / "results", tmp_path / "cache"
    args = ["pair=local", f"pair.base={tiny_llama}", f"pair.mllm={mllm}", "pair.name=mine",
            "method=task_arithmetic", "eval=smoke", "eval.limit=3",
            "~eval.benchmarks.smoke_color"]
    first = _harness(results, cache, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    (old,) = sorted((results / "runs").glob("*/result.json"))
    old_text = old.read_text()
    again = _harness(results, cache, *args)
    assert again.returncode == 0 and "is complete" in again.stderr + again.stdout

    build_tiny_tuned_llm(mllm, tiny_llama, seed=2)  # same path, same shapes, other weights
    second = _harness(results, cache, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "is complete" not in second.stderr + second.stdout
    records = sorted((results / "runs").glob("*/result.json"))
    assert len(records) == 2 and old.read_text() == old_text
    (new,) = [p for p in records if p != old]
    rec_old, rec_new = json.loads(old_text), json.loads(new.read_text())
    fp_old = rec_old["identity"]["merge"]["pair"]["mllm"]["fingerprint"]
    fp_new = rec_new["identity"]["merge"]["pair"]["mllm"]["fingerprint"]
    assert fp_old != fp_new  # the record shows what it evaluated
    assert rec_old["merge"]["dir"] != rec_new["merge"]["dir"]  # and merged again
    # fresh scores: the new run's log-likelihoods come from the rebuilt weights
    assert _samples(new.parent) != _samples(old.parent)
