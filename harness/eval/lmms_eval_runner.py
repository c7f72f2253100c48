"""Visual benchmarks through lmms-eval's Python API with `llava_hf` on out/mllm."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from harness.errors import EvalError
from harness.eval.failures import check_generations, tool_error
from harness.eval.lm_eval_runner import _dump, _write_samples
from harness.eval.mirror import working_directory
from harness.eval.scores import score_entry
from harness.eval.suite import Benchmark, check_known_tasks

log = logging.getLogger(__name__)


def task_manager(benches: list[Benchmark], task_dirs: list[Path]):
    """lmms-eval's task index (llava_hf) with the suite's local task folders; EvalError for
    unknown tasks."""
    from lmms_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(p) for p in task_dirs] or None,
                          model_name="llava_hf")
    check_known_tasks("lmms-eval", set(manager.all_tasks), benches)
    return manager


def run_lmms_eval(benches: list[Benchmark], mllm_dir: Path, run_dir: Path, manager,
                  eval_cfg, device: str, seed: int, data_root: Path | None = None) -> dict:
    """Evaluate `benches` (all lmms-eval) on `mllm_dir` with the tasks of `manager`
    (`task_manager`); return benchmark → score entry. With a `data_root` the tasks read their
    datasets from that mirror (checked beforehand: mirror.check_mirror).

    llava_hf swallows generation errors (logs them, answers ""), so a loguru sink collects
    ERROR records during the run; a logged generation error fails the run (failures.py).
    Files a task writes itself (submissions) go to the run's lmms_eval/ folder.
    """
    from lmms_eval.evaluator import simple_evaluate
    from loguru import logger

    max_new = eval_cfg.get("max_new_tokens")
    out_dir = run_dir / "lmms_eval"
    cli_args = argparse.Namespace(output_path=str(out_dir), process_with_media=True)
    dtype = eval_cfg.get("dtype", "auto")
    dtype = "float32" if dtype == "auto" and device == "cpu" else ("bfloat16" if dtype == "auto"
                                                                   else dtype)
    # model_args must be a string for llava_hf; device_map must be set
    model_args = f"pretrained={mllm_dir},device_map={device},dtype={dtype}"
    errors: list[str] = []
    sink = logger.add(lambda m: errors.append(m.record["message"]), level="ERROR")
    tasks = sorted({b.task for b in benches})
    log.info("lmms-eval: %s on %s", ", ".join(tasks), mllm_dir)
    try:
        with working_directory(data_root):
            res = simple_evaluate(model="llava_hf", model_args=model_args, tasks=tasks,
                                  batch_size=1, limit=eval_cfg.get("limit"), device=device,
                                  task_manager=manager, log_samples=True, random_seed=seed,
                                  numpy_random_seed=seed, torch_random_seed=seed,
                                  fewshot_random_seed=seed, cli_args=cli_args,
                                  gen_kwargs=f"max_new_tokens={int(max_new)}" if max_new
                                  else None)
    except EvalError:
        raise
    except Exception as err:
        raise tool_error("lmms-eval", tasks, mllm_dir, err, eval_cfg.name) from err
    finally:
        logger.remove(sink)
    if not res:
        raise EvalError(f"lmms-eval returned no result for {', '.join(tasks)}"
                        + (f"; it logged: {errors[0]}" if errors else ""))
    samples = res.pop("samples", {})
    _dump(res, out_dir / f"results_{'+'.join(tasks)}.json")
    _write_samples(samples, out_dir)
    gen_errors = [e for e in errors if "generat" in e.lower()]
    scores = {}
    for b in benches:
        task_samples = samples.get(b.task, [])
        empty = check_generations("lmms-eval", b.task, task_samples, gen_errors)
        scores[b.name] = score_entry(b, res["results"].get(b.task), len(task_samples),
                                     res.get("versions", {}).get(b.task),
                                         limited=eval_cfg.get("limit") is not None)
        scores[b.name]["empty"] = empty
    return scores
