"""A local sweep (`-m`) checks every point first, runs every point even when one fails, and ends
with a summary of the failed points and exit code 1. Its outputs are group-readable."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_bad_first_point_does_not_stop_the_others(tmp_path, micro_cache):
    results = tmp_path / "results"
    env = {**os.environ, "HARNESS_RESULTS": str(results), "HARNESS_CACHE": str(micro_cache),
           "HARNESS_WANDB_MODE": "disabled"}
    before = os.umask(0o022)
    try:
        proc = subprocess.run([sys.executable, "-m", "harness", "-m", "method=base",
                               "seed=abc,0", "eval=none", "merge.progress=false"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=600, check=False)
    finally:
        os.umask(before)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = proc.stderr[proc.stderr.index("1 point(s) of the sweep failed:"):]
    assert "#0 method=base seed=abc" in summary and "seed=abc: must be a whole number" in summary
    # checked before the first point ran, and the good point ran after the bad one
    out = proc.stdout + proc.stderr
    assert out.index("invalid sweep point #0") < out.index("Launching 2 jobs locally")
    (record,) = results.glob("runs/*/result.json")
    assert json.loads(record.read_text())["seed"] == 0
    # records and merges are written with the user's umask: group-readable
    written = [p for p in (results / "runs").rglob("*") if p.is_file()]
    written += [p for p in (results / "merges").rglob("*") if p.is_file()]
    assert record in written and len(written) > 3
    unreadable = [p for p in written if not stat.S_IMODE(p.stat().st_mode) & stat.S_IRGRP]
    assert unreadable == []
