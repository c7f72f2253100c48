"""One timed tool call per benchmark: the unit the evaluation stage, the evaluation benchmark
(harness/bench_eval.py) and the multi-process split share."""

from __future__ import annotations

import time
from pathlib import Path

from harness.eval.cost import cost_entry, leaves_of
from harness.eval.suite import Benchmark


def run_benchmark(bench: Benchmark, eval_cfg, llm_dir: Path, mllm_dir: Path | None,
                  run_dir: Path, managers: dict, device: str, seed: int,
                  root: Path | None) -> tuple[dict, dict]:
    """Evaluate one benchmark in its own call of its tool; return (score entry, cost entry).
    `managers`: tool → task index (harness.eval.task_managers); `root`: the data mirror."""
    from harness.eval import lm_eval_runner, lmms_eval_runner

    start = time.perf_counter()
    if bench.tool == "lm-eval":
        model_dir = llm_dir
        cache = lm_eval_runner.cache_dir(llm_dir, eval_cfg, device)
        scores = lm_eval_runner.run_lm_eval([bench], llm_dir, run_dir, managers["lm-eval"],
                                            eval_cfg, device, seed, cache, root)
    else:
        model_dir = mllm_dir
        scores = lmms_eval_runner.run_lmms_eval([bench], mllm_dir, run_dir,
                                                managers["lmms-eval"], eval_cfg, device, seed,
                                                root)
    seconds = time.perf_counter() - start
    return scores[bench.name], cost_entry(bench, seconds, run_dir, leaves_of(bench, run_dir),
                                          eval_cfg, device, model_dir)
