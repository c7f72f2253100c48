"""Evaluation stage: language benchmarks via lm-eval on out/llm, visual via lmms-eval on out/mllm.

    scores = evaluate(cfg.eval, llm_dir, mllm_dir, run_dir, seed)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from harness.errors import EvalError
from harness.eval.local_tasks import render_task_dirs
from harness.eval.suite import load_benchmarks, task_paths

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


def evaluate(eval_cfg, llm_dir: Path, mllm_dir: Path | None, run_dir: Path, seed: int = 0) -> dict:
    """Score every benchmark of the suite; return benchmark → score entry (see scores.py).

    Raises EvalError on any failure, including silent ones (empty generations).
    """
    benches = load_benchmarks(eval_cfg)
    if not benches:
        return {}
    offline_defaults()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task_dirs = render_task_dirs(task_paths(eval_cfg), run_dir / "_tasks")
    device = _device(eval_cfg)
    scores = {}
    language = [b for b in benches if b.tool == "lm-eval"]
    vision = [b for b in benches if b.tool == "lmms-eval"]
    if language:
        from harness.eval.lm_eval_runner import run_lm_eval

        cache = Path(llm_dir).parent / "eval_cache"  # one cache per checkpoint
        scores.update(run_lm_eval(language, Path(llm_dir), run_dir, task_dirs, eval_cfg,
                                  device, seed, cache))
    if vision:
        if mllm_dir is None:
            raise EvalError(f"eval={eval_cfg.name} has visual benchmarks "
                            f"({', '.join(b.name for b in vision)}) but the tuned model is not "
                            f"multimodal, so there is no out/mllm to evaluate")
        from harness.eval.lmms_eval_runner import run_lmms_eval

        scores.update(run_lmms_eval(vision, Path(mllm_dir), run_dir, task_dirs, eval_cfg,
                                    device, seed))
    return {b.name: scores[b.name] for b in benches}
