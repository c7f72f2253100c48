"""Scores pinned to the locked environment: the micro Base LLM, MLLM and Task Arithmetic (at its
default) evaluated through the real lm-eval and lmms-eval must give exactly the committed
scores of this CPU vendor (tests/data/micro_expected_scores.json: MKL's reproducible branch is
Intel's only, so AMD machines train another micro pair; harness/numerics.py), and the README's
micro table must show the scores of the vendor it names.

A change of a dependency (requirements.lock) or of the CPU numerics that moves a score fails
here instead of silently changing the paper-style tables. When such a change is deliberate:
`HARNESS_UPDATE_EXPECTED=1 make test ARGS=tests/test_micro_scores.py` rewrites the file, then
`make demo` and copy its table into README.md and docs/micro.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import numerics

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "tests" / "data" / "micro_expected_scores.json"
RUNS = {"Base LLM": ["method=base"], "MLLM": ["method=mllm"],
        "Task Arithmetic": ["method=task_arithmetic"]}


def _record(cache: Path, results: Path, overrides: list[str]) -> dict:
    env = {**os.environ, "HARNESS_CACHE": str(cache), "HARNESS_RESULTS": str(results),
           "HARNESS_WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "harness", "eval=micro", "merge.progress=false",
                           *overrides], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    method = overrides[0].split("=", 1)[1]
    (rec,) = [json.loads(p.read_text()) for p in (results / "runs").glob("*/result.json")
              if json.loads(p.read_text())["method"] == method]
    return rec


def _readme_rows() -> dict[str, list[str]]:
    """Rows of the README's micro table: {label: [cell, ...]} and the header under ""."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| Method | facts"):
            rows[""] = [c.strip() for c in line.strip("|").split("|")][1:]
        elif line.startswith("| ") and "" in rows and not line.startswith("|---"):
            cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        elif rows and not line.startswith("|"):
            break
    return rows


@pytest.mark.slow
def test_micro_scores_are_the_committed_ones(micro_cache, tmp_path):
    got = {}
    for label, overrides in RUNS.items():
        rec = _record(micro_cache, tmp_path, overrides)
        got[label] = {bench: s["percent"] for bench, s in rec["scores"].items()}
        got[label].update({f"avg_{k}": v for k, v in rec["averages"].items()})
    vendor = numerics.cpu_vendor()
    data = json.loads(EXPECTED.read_text())
    if os.environ.get("HARNESS_UPDATE_EXPECTED") == "1":
        lock = hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()[:16]
        data["by_vendor"][vendor] = {"requirements_lock_sha256": lock,
                                     "cpu_numerics": rec["cpu_numerics"], "scores": got}
        EXPECTED.write_text(json.dumps(data, indent=1) + "\n")
        pytest.skip(f"wrote the {vendor} scores of {EXPECTED}")
    assert vendor in data["by_vendor"], (
        f"{EXPECTED.name} has no micro scores for {vendor} CPUs (it has "
        f"{', '.join(data['by_vendor'])}); record them with HARNESS_UPDATE_EXPECTED=1")
    expected = data["by_vendor"][vendor]["scores"]
    moved = [f"{label} {bench}: expected {want}, got {got[label].get(bench)}"
             for label, scores in expected.items() for bench, want in scores.items()
             if got[label].get(bench) != pytest.approx(want, abs=1e-6)]
    assert not moved, (
        "the micro scores moved (a dependency, the lock or the CPU numerics changed?):\n  "
        + "\n  ".join(moved) + f"\nIf the change is deliberate, rewrite {EXPECTED.name} with "
        "HARNESS_UPDATE_EXPECTED=1 and regenerate the README table with `make demo`.")


def test_readme_micro_table_shows_the_committed_scores():
    data = json.loads(EXPECTED.read_text())
    expected = data["by_vendor"][data["readme_vendor"]]["scores"]
    rows = _readme_rows()
    header = rows.pop("")
    columns = {"Lang. avg": "avg_language", "Vis. avg": "avg_vision", "Overall avg": "avg_all"}
    for label, scores in expected.items():
        assert label in rows, f"README.md's micro table has no row {label!r}"
        for name, cell in zip(header, rows[label]):
            want = scores[columns.get(name, name)]
            assert float(cell) == pytest.approx(want, abs=0.051), (label, name, cell, want)
