"""Evaluation stage: language benchmarks via lm-eval on out/llm, visual via lmms-eval on out/mllm.

    scores = evaluate(cfg.eval, llm_dir, mllm_dir, run_dir, seed)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from harness.errors import EvalError
from harness.eval.calls import run_benchmark
from harness.eval.local_tasks import render_task_dirs
from harness.eval.mirror import check_mirror, suite_data_needs
from harness.eval.suite import data_root, load_benchmarks, task_paths

log = logging.getLogger(__name__)


def _device(eval_cfg) -> str:
    device = eval_cfg.get("device", "auto")
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def offline_defaults() -> None:
    """Never reach a hub unless the user asked for it (prefetch is the online step)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def task_managers(benches, task_dirs: list[Path]) -> dict:
    """tool → its task index, for the tools `benches` use (EvalError for an unknown task)."""
    from harness.eval import lm_eval_runner, lmms_eval_runner

    runners = {"lm-eval": lm_eval_runner, "lmms-eval": lmms_eval_runner}
    return {tool: runner.task_manager([b for b in benches if b.tool == tool], task_dirs)
            for tool, runner in runners.items() if any(b.tool == tool for b in benches)}


def n_workers(eval_cfg, device: str) -> int:
    """`eval.gpus`: processes the suite's benchmarks are spread over (ConfigError when invalid
    or when the machine has fewer GPUs)."""
    from harness.errors import ConfigError

    n = eval_cfg.get("gpus", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"eval.gpus={n!r} is not valid; give the number of GPUs (processes) "
                          f"to spread the benchmarks over, 1 or more")
    if n > 1 and device.startswith("cuda"):
        import torch

        if torch.cuda.device_count() < n:
            raise ConfigError(f"eval.gpus={n} but {torch.cuda.device_count()} GPU(s) are "
                              f"visible; lower eval.gpus or request more GPUs")
    return n


def evaluate(eval_cfg, llm_dir: Path, mllm_dir: Path | None, run_dir: Path, seed: int = 0,
             cost: dict | None = None) -> dict:
    """Score every benchmark of the suite; return benchmark → score entry (see scores.py).
    A `cost` dict receives benchmark → cost entry (seconds, requests, ...: cost.py).

    With `eval.data_root` the tasks read their datasets from that local mirror (mirror.py).
    Raises EvalError on any failure, including silent ones (empty generations) and data the
    mirror lacks (before any model loads).
    """
    benches = load_benchmarks(eval_cfg)
    if not benches:
        return {}
    offline_defaults()
    root = data_root(eval_cfg)
    # absolute: the evaluators may run with the mirror as working directory
    llm_dir = Path(llm_dir).resolve()
    mllm_dir = Path(mllm_dir).resolve() if mllm_dir is not None else None
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    task_dirs = render_task_dirs(task_paths(eval_cfg), run_dir / "_tasks")
    device = _device(eval_cfg)
    language = [b for b in benches if b.tool == "lm-eval"]
    vision = [b for b in benches if b.tool == "lmms-eval"]
    if vision and mllm_dir is None:
        raise EvalError(f"eval={eval_cfg.name} has visual benchmarks "
                        f"({', '.join(b.name for b in vision)}) but the tuned model is not "
                        f"multimodal, so there is no out/mllm to evaluate")
    # every task and every dataset is checked before the first model loads
    managers = task_managers(benches, task_dirs)
    if root is not None:
        check_mirror(root, suite_data_needs(benches, managers), eval_cfg.name)
    scores, costs = {}, {}
    workers = n_workers(eval_cfg, device)
    if workers > 1:
        from harness.eval.parallel import run_parallel

        scores, costs = run_parallel(language + vision, eval_cfg, llm_dir, mllm_dir, run_dir,
                                     device, seed, workers)
    else:
        # one tool call per benchmark, so that each benchmark's seconds are its own (cost.py);
        # a benchmark that fails is named and the others still run
        failed: dict[str, str] = {}
        for b in language + vision:
            try:
                scores[b.name], costs[b.name] = run_benchmark(b, eval_cfg, llm_dir, mllm_dir,
                                                              run_dir, managers, device, seed,
                                                              root)
            except EvalError as err:
                failed[b.name] = str(err)
                log.error("%s", err)
        if failed:
            done = [b.name for b in benches if b.name not in failed]
            raise EvalError(
                f"{len(failed)} of {len(benches)} benchmarks failed: "
                + "; ".join(f"{name}: {msg}" for name, msg in failed.items())
                + (f". The others ({', '.join(done)}) were scored; their raw results are in "
                   f"{run_dir}" if done else ""))
    if cost is not None:
        cost.update({b.name: costs[b.name] for b in benches})
    return {b.name: scores[b.name] for b in benches}
