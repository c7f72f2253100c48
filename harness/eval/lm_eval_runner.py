"""Language benchmarks through lm-eval's Python API on out/llm (text-only causal LM)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from harness.errors import EvalError
from harness.eval.failures import check_generations, tool_error
from harness.eval.scores import score_entry
from harness.eval.suite import Benchmark, check_known_tasks

log = logging.getLogger(__name__)


def _dump(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))


def _write_samples(samples: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for task, rows in samples.items():
        with open(out / f"samples_{task}.jsonl", "w") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=str) + "\n")


def run_lm_eval(benches: list[Benchmark], llm_dir: Path, run_dir: Path, task_dirs: list[Path],
                eval_cfg, device: str, seed: int, cache_dir: Path) -> dict:
    """Evaluate `benches` (all lm-eval) on `llm_dir`; return benchmark → score entry."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(p) for p in task_dirs] or None)
    check_known_tasks("lm-eval", set(manager.all_tasks), benches)
    backend = eval_cfg.get("backend", "hf")
    if backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise EvalError("eval.backend=vllm needs vLLM (GPU only): pip install -e '.[vllm]'"
                            ) from None
        model_args = {"pretrained": str(llm_dir), "dtype": eval_cfg.get("dtype", "auto"),
                      "seed": seed}
    elif backend == "hf":
        model_args = {"pretrained": str(llm_dir), "dtype": eval_cfg.get("dtype", "auto"),
                      "device": device}
    else:
        raise EvalError(f"eval.backend={backend!r} is not valid; choose hf or vllm")
    out_dir = run_dir / "lm_eval"
    scores = {}
    by_shots: dict[int, list[Benchmark]] = {}
    for b in benches:
        by_shots.setdefault(b.shots, []).append(b)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for shots, group in sorted(by_shots.items()):
        tasks = sorted({b.task for b in group})
        log.info("lm-eval: %s (%d-shot) on %s", ", ".join(tasks), shots, llm_dir)
        try:
            res = simple_evaluate(
                model=backend, model_args=model_args, tasks=tasks, num_fewshot=shots,
                batch_size=eval_cfg.get("batch_size", 8), limit=eval_cfg.get("limit"),
                task_manager=manager, log_samples=True, random_seed=seed,
                numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                use_cache=str(cache_dir / f"lm_eval_{shots}shot"),
                apply_chat_template=bool(eval_cfg.get("chat_template", False)),
            )
        except EvalError:
            raise
        except Exception as err:
            raise tool_error("lm-eval", tasks, llm_dir, err, eval_cfg.name) from err
        if res is None:
            raise EvalError(f"lm-eval returned no result for {', '.join(tasks)}")
        samples = res.pop("samples", {})
        _dump(res, out_dir / f"results_{shots}shot.json")
        _write_samples(samples, out_dir)
        for b in group:
            task_samples = samples.get(b.task, [])
            empty = 0
            if res.get("configs", {}).get(b.task, {}).get("output_type") == "generate_until":
                empty = check_generations("lm-eval", b.task, task_samples, [])
            scores[b.name] = score_entry(b, res["results"].get(b.task), len(task_samples))
            scores[b.name]["empty"] = empty
    return scores
