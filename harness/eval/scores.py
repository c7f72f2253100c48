"""Turning a tool's result dict into the harness's score entries (one place for filter suffixes)."""

from __future__ import annotations

import math

from harness.errors import EvalError
from harness.eval.suite import Benchmark


def strip_filter(key: str) -> str:
    """'acc,none' → 'acc'; 'exact_match,strict-match' → 'exact_match'."""
    return key.split(",", 1)[0]


def score_entry(bench: Benchmark, task_results: dict | None, n: int) -> dict:
    """{suite, tool, task, metric, value, percent, n} for one benchmark; EvalError if absent."""
    if not task_results or bench.result_key not in task_results:
        have = sorted(k for k in (task_results or {}) if "," in k and "stderr" not in k)
        raise EvalError(f"{bench.tool} reported no {bench.result_key!r} for task {bench.task} "
                        f"(benchmark {bench.name}); it reported: {have or 'nothing'}. Fix the "
                        f"metric/filter of the benchmark in the suite file.")
    value = task_results[bench.result_key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise EvalError(f"{bench.tool} reported {bench.result_key}={value!r} for task "
                        f"{bench.task}: not a number")
    return {"suite": bench.suite, "tool": bench.tool, "task": bench.task,
            "metric": strip_filter(bench.result_key), "value": float(value),
            "percent": float(value) * bench.percent_scale, "n": int(n)}
