"""Visual benchmarks through lmms-eval's Python API with `llava_hf` on out/mllm.

The model loads once; each task then runs in its own `simple_evaluate` call, so a task that fails
(its data, its processing, its scoring or its writers) is named in the error and does not take the
other tasks with it: they are scored and their results written before the run fails.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from harness.errors import EvalError
from harness.eval.answers import guard_answers
from harness.eval.dtype import eval_dtype
from harness.eval.failures import check_generations, short, tool_error
from harness.eval.lm_eval_runner import _dump, _write_samples
from harness.eval.mirror import in_mirror
from harness.eval.scores import score_entry
from harness.eval.suite import Benchmark, check_known_tasks
from harness.eval.workers import modules_by_name

log = logging.getLogger(__name__)


def task_manager(benches: list[Benchmark], task_dirs: list[Path]):
    """lmms-eval's task index (llava_hf) with the suite's local task folders; EvalError for
    unknown tasks."""
    from lmms_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(p) for p in task_dirs] or None,
                          model_name="llava_hf")
    check_known_tasks("lmms-eval", set(manager.all_tasks), benches)
    return manager


def load_model(mllm_dir: Path, eval_cfg, device: str):
    """llava_hf on `mllm_dir` (an lmms-eval model object), loaded once for every task; EvalError
    when it cannot load."""
    from lmms_eval.models import get_model

    # model_args must be a string for llava_hf; device_map must be set
    model_args = f"pretrained={mllm_dir},device_map={device},dtype={eval_dtype(eval_cfg, device)}"
    try:
        return get_model("llava_hf").create_from_arg_string(
            model_args, {"batch_size": 1, "max_batch_size": None, "device": device})
    except Exception as err:
        raise tool_error("lmms-eval", ["loading llava_hf"], mllm_dir, err, eval_cfg.name) from err


def _evaluate_task(lm, task: str, manager, eval_cfg, device: str, seed: int,
                   data_root: Path | None, out_dir: Path, errors: list[str]) -> dict:
    """One task through simple_evaluate; its result dict (EvalError naming the task when the
    tool raises or returns nothing)."""
    from lmms_eval.evaluator import simple_evaluate

    max_new = eval_cfg.get("max_new_tokens")
    cli_args = argparse.Namespace(output_path=str(out_dir), process_with_media=True)
    try:
        # the mirror as working directory and datasets cache: every load_dataset of the task
        # finds it (mirror.py); modules_by_name: the task's worker processes get modules by
        # name (workers.py)
        with in_mirror(data_root), modules_by_name():
            res = simple_evaluate(model=lm, tasks=[task], batch_size=1,
                                  limit=eval_cfg.get("limit"), device=device,
                                  task_manager=manager, log_samples=True, random_seed=seed,
                                  numpy_random_seed=seed, torch_random_seed=seed,
                                  fewshot_random_seed=seed, cli_args=cli_args,
                                  gen_kwargs=f"max_new_tokens={int(max_new)}" if max_new
                                  else None)
    except EvalError:
        raise
    except Exception as err:
        raise tool_error("lmms-eval", [task], "its own evaluation; the other tasks still run",
                         err, eval_cfg.name) from err
    if not res or task not in res.get("results", {}):
        raise EvalError(f"lmms-eval returned no result for {task}"
                        + (f"; it logged: {short(errors[0])}" if errors else ""))
    return res


def _merge_results(parts: dict[str, dict]) -> dict:
    """The per-task result dicts as one (results, versions, configs, n-samples, ...)."""
    merged: dict = {}
    for res in parts.values():
        for key, value in res.items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged.setdefault(key, value)
    return merged


def _evaluate_tasks(lm, tasks: list[str], manager, eval_cfg, device: str, seed: int,
                    data_root: Path | None, out_dir: Path) -> tuple[dict, dict, dict, dict]:
    """Every task in turn, each in its own simple_evaluate call; (result dict per scored task,
    error message per failed task, samples per scored task, empty answers per scored task)."""
    from loguru import logger

    parts: dict[str, dict] = {}
    failed: dict[str, str] = {}
    samples: dict[str, list] = {}
    empties: dict[str, int] = {}
    for task in tasks:
        errors: list[str] = []
        sink = logger.add(lambda m, errors=errors: errors.append(m.record["message"]),
                          level="ERROR")
        try:
            res = _evaluate_task(lm, task, manager, eval_cfg, device, seed, data_root, out_dir,
                                 errors)
            task_samples = res.pop("samples", {}).get(task, [])
            gen_errors = [e for e in errors if "generat" in e.lower()]
            empties[task] = check_generations("lmms-eval", task, task_samples, gen_errors)
        except EvalError as err:
            failed[task] = str(err)
            log.error("%s", err)
            continue
        finally:
            logger.remove(sink)
        parts[task] = res
        samples[task] = task_samples
    return parts, failed, samples, empties


def run_lmms_eval(benches: list[Benchmark], mllm_dir: Path, run_dir: Path, manager,
                  eval_cfg, device: str, seed: int, data_root: Path | None = None) -> dict:
    """Evaluate `benches` (all lmms-eval) on `mllm_dir` with the tasks of `manager`
    (`task_manager`); return benchmark → score entry. With a `data_root` the tasks read their
    datasets from that mirror (checked beforehand: mirror.check_mirror).

    llava_hf swallows generation errors (logs them, answers ""), so a loguru sink collects
    ERROR records during each task; a logged generation error fails that task (failures.py).
    Answers pass through answers.guard_answers (characters no file writer accepts removed,
    counted). Every task runs even when another fails; then an EvalError names each failed task
    and its cause. Files a task writes itself (submissions) go to the run's lmms_eval/ folder.
    """
    import lmms_eval.evaluator  # noqa: F401  (importing lmms_eval.models removes loguru's sinks)

    out_dir = run_dir / "lmms_eval"
    dtype = eval_dtype(eval_cfg, device)
    tasks = sorted({b.task for b in benches})
    log.info("lmms-eval: %s on %s", ", ".join(tasks), mllm_dir)
    lm = load_model(mllm_dir, eval_cfg, device)
    cleaned = guard_answers(lm)
    # simple_evaluate ends with lm.clean(), which deletes the model: keep it for the next task
    free = lm.clean
    lm.clean = lambda: None
    try:
        parts, failed, samples, empties = _evaluate_tasks(lm, tasks, manager, eval_cfg, device,
                                                         seed, data_root, out_dir)
    finally:
        free()
    merged = _merge_results(parts)
    merged["failed"] = failed
    _dump(merged, out_dir / f"results_{'+'.join(tasks)}.json")
    _write_samples(samples, out_dir)
    if failed:
        done = [t for t in tasks if t not in failed]
        raise EvalError(
            f"lmms-eval: {len(failed)} of {len(tasks)} visual tasks failed: "
            + "; ".join(failed.values())
            + (f". The other tasks ({', '.join(done)}) were scored; their results are in "
               f"{out_dir}" if done else ""))
    scores = {}
    for b in benches:
        res = parts[b.task]
        scores[b.name] = score_entry(b, res["results"].get(b.task), len(samples[b.task]),
                                     res.get("versions", {}).get(b.task),
                                     limited=eval_cfg.get("limit") is not None)
        scores[b.name].update(empty=empties[b.task], cleaned=cleaned.get(b.task, 0),
                              dtype=dtype, device=device)
    return scores
