"""Evaluation cost: request counting from sample logs, the cost tables of `make tables`, and the
cost metrics mirrored to W&B."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.cost_table import write_cost_tables
from harness.eval.cost import checkpoint_dtype, count_requests
from harness.records import write_record
from harness.tracking import record_metrics

ROOT = Path(__file__).resolve().parent.parent


def _cost(tool, requests, seconds, batch=8):
    return {"tool": tool, "requests": requests, "docs": requests, "seconds": seconds,
            "requests_per_s": requests / seconds, "device": "cpu", "batch_size": batch,
            "dtype": "float32"}


def _record(run_id, method, cost, limit=None, pair="p"):
    return {"run_id": run_id, "experiment": "t", "pair": pair, "method": method, "params": {},
            "seed": 0, "eval_suite": "s", "eval_limit": limit, "status": "complete",
            "scores": {b: {"suite": "language", "tool": c["tool"], "task": b, "metric": "acc",
                           "value": 0.5, "percent": 50.0, "n": 4} for b, c in cost.items()},
            "averages": {"language": 50.0, "vision": None, "all": 50.0},
            "merge": {}, "cost": cost, "created_at": "2026-12-04T00:00:00+00:00"}


def test_requests_are_counted_once_per_doc_across_filters(tmp_path):
    # lm-eval logs a doc once per filter (gsm8k: strict-match and flexible-extract)
    rows = [{"doc_id": 0, "filter": "strict", "resps": [["a"]]},
            {"doc_id": 0, "filter": "flex", "resps": [["a"]]},
            {"doc_id": 1, "filter": "strict", "resps": [["b"]]},
            {"doc_id": 1, "filter": "flex", "resps": [["b"]]}]
    mc = [{"doc_id": i, "resps": [[-1.0], [-2.0], [-3.0], [-4.0]]} for i in range(3)]
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    assert count_requests([tmp_path / "gen.jsonl"]) == (2, 2)
    assert count_requests([tmp_path / "gen.jsonl", tmp_path / "mc.jsonl",
                           tmp_path / "absent.jsonl"]) == (5, 14)


def test_checkpoint_dtype_reads_either_config_key(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert checkpoint_dtype(tmp_path) == "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"dtype": "float16"}}))
    assert checkpoint_dtype(tmp_path) == "float16"
    assert checkpoint_dtype(tmp_path / "missing") == "unknown"


def test_cost_table_medians_totals_and_rates(tmp_path):
    recs = [_record("a", "base", {"mmlu": _cost("lm-eval", 400, 10.0),
                                  "mme": _cost("lmms-eval", 20, 40.0, batch=1)}),
            _record("b", "mllm", {"mmlu": _cost("lm-eval", 400, 14.0),
                                  "mme": _cost("lmms-eval", 20, 44.0, batch=1)}),
            _record("c", "ties", {"mmlu": _cost("lm-eval", 400, 30.0),
                                  "mme": _cost("lmms-eval", 20, 60.0, batch=1)}),
            # a limited run is another setting, never pooled with full runs
            _record("d", "base", {"mmlu": _cost("lm-eval", 40, 2.0)}, limit=10),
            _record("e", "dare", {})]
    files = write_cost_tables(recs, tmp_path)
    assert {f.name for f in files} == {"cost_p_s.md", "cost_p_s.csv"}
    csv = pd.read_csv(tmp_path / "cost_p_s.csv", keep_default_na=False)
    full = csv[csv.limit == ""].set_index("benchmark")
    assert list(full.index) == ["mmlu", "mme", "total"]
    assert full.loc["mmlu", "seconds"] == pytest.approx(14.0)        # median of 10, 14, 30
    assert full.loc["mmlu", "runs"] == 3
    assert full.loc["mme", "requests_per_s"] == pytest.approx(20 / 44.0)
    assert full.loc["total", "seconds"] == pytest.approx(58.0)
    assert full.loc["total", "requests"] == pytest.approx(420)
    limited = csv[csv.limit == "10"].set_index("benchmark")
    assert limited.loc["mmlu", "requests"] == 40 and limited.loc["total", "seconds"] == 2.0
    md = (tmp_path / "cost_p_s.md").read_text()
    assert "| mmlu | lm-eval | cpu | 8 | float32 | none | 3 | 400 | 14.0 | 28.57 |" in md
    assert "1 record(s) without cost information" in md


def test_make_tables_writes_the_cost_table(tmp_path):
    write_record(tmp_path / "runs" / "a",
                 _record("a", "base", {"lang_a": _cost("lm-eval", 12, 3.0)}))
    env = {**os.environ, "HARNESS_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "harness.tables", "--no-plots"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cost_p_s.md" in proc.stdout
    csv = pd.read_csv(tmp_path / "tables" / "cost_p_s.csv").set_index("benchmark")
    assert csv.loc["lang_a", "requests_per_s"] == pytest.approx(4.0)


def test_cost_metrics_for_wandb():
    rec = _record("a", "base", {"mmlu": _cost("lm-eval", 400, 10.0),
                                "mme": _cost("lmms-eval", 20, 40.0, batch=1)})
    metrics = record_metrics(rec)
    assert metrics["cost/mmlu/seconds"] == 10.0 and metrics["cost/mme/requests"] == 20
    assert metrics["cost/mmlu/requests_per_s"] == pytest.approx(40.0)
    assert metrics["cost/total_seconds"] == pytest.approx(50.0)


def test_benchmarks_are_dealt_heaviest_first_to_the_least_loaded_worker():
    from harness.eval.parallel import deal

    weights = {"mmlu": 50.0, "hellaswag": 40.0, "gsm8k": 30.0, "mme": 10.0, "pope": 5.0}
    groups = deal(list(weights), 2, weights)
    assert groups == [["mmlu", "mme", "pope"], ["hellaswag", "gsm8k"]]
    assert deal(["a", "b", "c"], 2) == [["a", "c"], ["b"]]       # equal weights: in turn
    assert deal(["a"], 4) == [["a"]]                               # no idle workers
