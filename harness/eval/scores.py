"""Turning a tool's result dict into the harness's score entries (one place for filter suffixes)."""

from __future__ import annotations

import math

from harness.errors import EvalError
from harness.eval.suite import Benchmark


def strip_filter(key: str) -> str:
    """'acc,none' → 'acc'; 'exact_match,strict-match' → 'exact_match'."""
    return key.split(",", 1)[0]


def score_entry(bench: Benchmark, task_results: dict | None, n: int,
                version=None, limited: bool = False) -> dict:
    """{suite, tool, task, metric, value, percent, n, task_version[, extra]} for one benchmark;
    EvalError if the metric or one of its `extra_metrics` is absent or not a number. Under an
    `eval.limit` (`limited`) the first docs may not cover an extra metric (MME's cognition
    categories): it is then left out of `extra` and named in `extra_missing`, never zero."""
    if not task_results or bench.result_key not in task_results:
        have = sorted(k for k in (task_results or {}) if "," in k and "stderr" not in k)
        raise EvalError(f"{bench.tool} reported no {bench.result_key!r} for task {bench.task} "
                        f"(benchmark {bench.name}); it reported: {have or 'nothing'}. Fix the "
                        f"metric/filter of the benchmark in the suite file.")
    value = _number(bench, task_results, bench.result_key)
    entry = {"suite": bench.suite, "tool": bench.tool, "task": bench.task,
             "metric": strip_filter(bench.result_key), "value": value,
             "percent": value * bench.percent_scale, "n": int(n), "task_version": version}
    extra, missing = {}, []
    for metric in bench.extra_metrics:
        key = metric if "," in metric else f"{metric},{bench.filter}"
        if key in task_results:
            extra[strip_filter(key)] = _number(bench, task_results, key)
        elif limited:
            missing.append(strip_filter(key))
        else:
            raise EvalError(f"{bench.tool} reported no {key!r} for task {bench.task} (benchmark "
                            f"{bench.name}, extra_metrics); fix the suite file")
    if extra:
        entry["extra"] = extra
    if missing:
        entry["extra_missing"] = missing
    return entry


def _number(bench: Benchmark, task_results: dict, key: str) -> float:
    value = task_results[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise EvalError(f"{bench.tool} reported {key}={value!r} for task {bench.task}: "
                        f"not a number")
    return float(value)
