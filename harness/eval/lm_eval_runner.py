"""Language benchmarks through lm-eval's Python API on out/llm (text-only causal LM)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from harness.errors import EvalError
from harness.eval.dtype import eval_dtype
from harness.eval.failures import check_generations, tool_error
from harness.eval.mirror import in_mirror
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
            fh.writelines(json.dumps(row, default=str) + "\n" for row in rows)


def cache_dir(llm_dir: Path, eval_cfg, device: str = "cpu") -> Path:
    """lm-eval's request cache for one checkpoint loaded one way: `<merge>/eval_cache/<backend>-
    <dtype>` (the dtype used on `device`). lm-eval keys a cached response by the request alone
    (prompt, continuation, generation arguments), never by the model or how it was loaded, so
    a cache shared between checkpoints, backends or dtypes would hand one the answers of
    another. A merge redone replaces its whole directory, this cache with it."""
    backend, dtype = eval_cfg.get("backend", "hf"), eval_dtype(eval_cfg, device)
    return Path(llm_dir).parent / "eval_cache" / f"{backend}-{dtype}"


def results_path(out_dir: Path, shots: int, tasks: list[str]) -> Path:
    """Where one lm-eval call's result dict is dumped (one call per benchmark: harness.eval)."""
    return Path(out_dir) / f"results_{shots}shot_{'+'.join(sorted(tasks))}.json"


def leaf_tasks(res: dict, task: str) -> list[str]:
    """The leaf tasks a task or group of lm-eval's result dict stands for (itself if a leaf)."""
    subtasks = res.get("group_subtasks", {}).get(task)
    if not subtasks:
        return [task]
    return [leaf for sub in subtasks for leaf in leaf_tasks(res, sub)]


def task_manager(benches: list[Benchmark], task_dirs: list[Path]):
    """lm-eval's task index with the suite's local task folders; EvalError for unknown tasks."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(p) for p in task_dirs] or None)
    check_known_tasks("lm-eval", set(manager.all_tasks), benches)
    return manager


def run_lm_eval(benches: list[Benchmark], llm_dir: Path, run_dir: Path, manager,
                eval_cfg, device: str, seed: int, cache_dir: Path,
                data_root: Path | None = None) -> dict:
    """Evaluate `benches` (all lm-eval) on `llm_dir` with the tasks of `manager`
    (`task_manager`); return benchmark → score entry. With a `data_root` the tasks read their
    datasets from that mirror (checked beforehand: mirror.check_mirror)."""
    from lm_eval import simple_evaluate

    max_new = eval_cfg.get("max_new_tokens")
    gen_kwargs = {"max_gen_toks": int(max_new)} if max_new else None
    backend = eval_cfg.get("backend", "hf")
    dtype = eval_dtype(eval_cfg, device)
    if backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise EvalError("eval.backend=vllm needs vLLM (GPU only): pip install -e '.[vllm]'"
                            ) from None
        model_args = {"pretrained": str(llm_dir), "dtype": dtype, "seed": seed}
    elif backend == "hf":
        model_args = {"pretrained": str(llm_dir), "dtype": dtype, "device": device}
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
            with in_mirror(data_root):
                res = simple_evaluate(
                    model=backend, model_args=model_args, tasks=tasks, num_fewshot=shots,
                    batch_size=eval_cfg.get("batch_size", 8), limit=eval_cfg.get("limit"),
                    task_manager=manager, log_samples=True, random_seed=seed,
                    numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                    use_cache=str(cache_dir / f"lm_eval_{shots}shot")
                    if eval_cfg.get("request_cache", True) else None, gen_kwargs=gen_kwargs,
                    apply_chat_template=bool(eval_cfg.get("chat_template", False)),
                )
        except EvalError:
            raise
        except Exception as err:
            raise tool_error("lm-eval", tasks, llm_dir, err, eval_cfg.name) from err
        if res is None:
            raise EvalError(f"lm-eval returned no result for {', '.join(tasks)}")
        samples = res.pop("samples", {})
        _dump(res, results_path(out_dir, shots, tasks))
        _write_samples(samples, out_dir)
        for b in group:
            empty = n = 0
            for leaf in leaf_tasks(res, b.task):
                leaf_samples = samples.get(leaf, [])
                n += len(leaf_samples)
                if res.get("configs", {}).get(leaf, {}).get("output_type") == "generate_until":
                    empty += check_generations("lm-eval", leaf, leaf_samples, [])
            scores[b.name] = score_entry(b, res["results"].get(b.task), n,
                                         res.get("versions", {}).get(b.task),
                                         limited=eval_cfg.get("limit") is not None)
            scores[b.name].update(empty=empty, dtype=dtype, device=device)
    return scores
