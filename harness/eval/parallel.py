"""`eval.gpus=N`: a suite's benchmarks spread over N processes, one device each.

Each worker is `python -m harness.eval.parallel SPEC OUT` with `CUDA_VISIBLE_DEVICES` set to its
own GPU (on CPU: its share of the threads), runs its benchmarks one tool call each
(harness/eval/calls.py) into the run's directory (every tool file is named by its task, so
workers never write the same file), and writes its score and cost entries to OUT. The parent
merges them in suite order: the record has the same form as a one-process record. Benchmarks are
dealt to workers longest first by `expected_seconds` (conf/eval `cost_hint`, else equal).
lm-eval's request cache (one SQLite file per shot count) is off in the workers: two processes
writing one SQLite file can fail on its lock.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from harness.errors import EvalError

log = logging.getLogger(__name__)


def deal(names: list[str], n: int, weights: dict[str, float] | None = None) -> list[list[str]]:
    """Benchmarks dealt to `n` workers, heaviest first to the least loaded (weights: expected
    seconds; equal when absent). Empty workers are dropped."""
    weights = weights or {}
    load = [0.0] * n
    out: list[list[str]] = [[] for _ in range(n)]
    for name in sorted(names, key=lambda x: -weights.get(x, 1.0)):
        i = min(range(n), key=lambda k: (load[k], k))
        out[i].append(name)
        load[i] += weights.get(name, 1.0)
    return [w for w in out if w]


def run_parallel(benches, eval_cfg, llm_dir: Path, mllm_dir: Path | None, run_dir: Path,
                 device: str, seed: int, n: int) -> tuple[dict, dict]:
    """(scores, costs) of `benches` evaluated by `n` worker processes."""
    groups = deal([b.name for b in benches], n, dict(eval_cfg.get("cost_hint") or {}))
    cfg = OmegaConf.to_container(eval_cfg, resolve=True)
    cfg["request_cache"] = False
    threads = max(1, (os.cpu_count() or 1) // len(groups))
    procs = []
    for i, names in enumerate(groups):
        spec = run_dir / f"_worker{i}.json"
        out = run_dir / f"_worker{i}.out.json"
        out.unlink(missing_ok=True)
        spec.write_text(json.dumps({"eval": cfg, "benchmarks": names, "llm_dir": str(llm_dir),
                                    "mllm_dir": str(mllm_dir) if mllm_dir else None,
                                    "run_dir": str(run_dir), "device": device, "seed": seed}))
        env = dict(os.environ)
        if device.startswith("cuda"):
            env["CUDA_VISIBLE_DEVICES"] = _visible(i)
        else:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        log.info("eval worker %d/%d: %s", i + 1, len(groups), ", ".join(names))
        with open(run_dir / f"_worker{i}.log", "w") as log_file:  # the child keeps its copy
            procs.append((i, out, subprocess.Popen(
                [sys.executable, "-m", "harness.eval.parallel", str(spec), str(out)], env=env,
                stdout=log_file, stderr=subprocess.STDOUT)))
    scores, costs, failed = {}, {}, []
    for i, out, proc in procs:
        proc.wait()
        if proc.returncode != 0 or not out.is_file():
            failed.append(f"worker {i} (exit {proc.returncode}; log: "
                          f"{run_dir / f'_worker{i}.log'})")
            continue
        res = json.loads(out.read_text())
        scores.update(res["scores"])
        costs.update(res["costs"])
    if failed:
        raise EvalError("eval.gpus: " + "; ".join(failed) + ". The log's last lines name the "
                        "benchmark and the error.")
    return scores, costs


def _visible(i: int) -> str:
    """The i-th GPU the parent may use (its own CUDA_VISIBLE_DEVICES, else index i)."""
    parent = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return parent[i] if i < len(parent) else str(i)


def worker(spec_path: Path, out_path: Path) -> None:
    """Run the benchmarks a spec names and write {scores, costs} to `out_path`."""
    from harness.eval import offline_defaults, task_managers
    from harness.eval.calls import run_benchmark
    from harness.eval.local_tasks import render_task_dirs
    from harness.eval.suite import data_root, load_benchmarks, task_paths

    spec = json.loads(Path(spec_path).read_text())
    eval_cfg = OmegaConf.create(spec["eval"])
    offline_defaults()
    run_dir = Path(spec["run_dir"])
    benches = [b for b in load_benchmarks(eval_cfg) if b.name in spec["benchmarks"]]
    task_dirs = render_task_dirs(task_paths(eval_cfg), run_dir / f"_tasks_{Path(out_path).stem}")
    managers = task_managers(benches, task_dirs)
    mllm = Path(spec["mllm_dir"]) if spec["mllm_dir"] else None
    scores, costs = {}, {}
    for b in benches:
        scores[b.name], costs[b.name] = run_benchmark(
            b, eval_cfg, Path(spec["llm_dir"]), mllm, run_dir, managers, spec["device"],
            int(spec["seed"]), data_root(eval_cfg))
    Path(out_path).write_text(json.dumps({"scores": scores, "costs": costs}))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
