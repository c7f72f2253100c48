"""What a benchmark costs to evaluate: wall seconds, docs, model requests, and the settings that
set the speed (device, batch size, dtype).

The evaluation stage calls each tool once per benchmark (harness/eval/__init__.py), so a
benchmark's `seconds` is the wall time of its own tool call: model load, task building, every
request, scoring and the sample logs. Requests are counted from the tool's per-sample logs (one
`resps` entry per model request; lm-eval logs a doc once per filter, so docs are deduplicated).
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.eval.suite import Benchmark

# lmms-eval's chat llava_hf asserts one request per batch (lmms_eval/models/chat/llava_hf.py):
# the runner always passes 1.
LMMS_BATCH_SIZE = 1


def count_requests(sample_files: list[Path]) -> tuple[int, int]:
    """(docs, requests) in a tool's `samples_<task>.jsonl` files; a missing file counts 0."""
    docs = requests = 0
    for path in sample_files:
        if not path.is_file():
            continue
        per_doc: dict = {}
        with open(path) as fh:
            for line in fh:
                row = json.loads(line)
                per_doc.setdefault(row.get("doc_id"), len(row.get("resps") or ()))
        docs += len(per_doc)
        requests += sum(per_doc.values())
    return docs, requests


def checkpoint_dtype(model_dir: Path) -> str:
    """The dtype a checkpoint declares in config.json (what `dtype=auto` loads), or 'unknown'."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    for node in (cfg, cfg.get("text_config") or {}):
        dtype = node.get("dtype") or node.get("torch_dtype")
        if dtype:
            return str(dtype)
    return "unknown"


def resolved_dtype(tool: str, eval_cfg, device: str, model_dir: Path) -> str:
    """The dtype a tool loads the model in under `eval.dtype` (the runners' own rules)."""
    dtype = str(eval_cfg.get("dtype", "auto"))
    if dtype != "auto":
        return dtype
    if tool == "lmms-eval":
        return "float32" if device == "cpu" else "bfloat16"
    return checkpoint_dtype(model_dir)


def batch_size(tool: str, eval_cfg):
    """The batch size a tool runs with (lm-eval: `eval.batch_size`, which may be 'auto')."""
    if tool == "lmms-eval":
        return LMMS_BATCH_SIZE
    size = eval_cfg.get("batch_size", 8)
    return size if isinstance(size, str) else int(size)


def sample_files(bench: Benchmark, run_dir: Path, leaves: list[str]) -> list[Path]:
    """The per-sample logs of a benchmark's leaf tasks in a run directory."""
    folder = "lm_eval" if bench.tool == "lm-eval" else "lmms_eval"
    return [Path(run_dir) / folder / f"samples_{leaf}.jsonl" for leaf in leaves]


def cost_entry(bench: Benchmark, seconds: float, run_dir: Path, leaves: list[str], eval_cfg,
               device: str, model_dir: Path) -> dict:
    """{seconds, docs, requests, requests_per_s, device, batch_size, dtype, tool} of one
    benchmark evaluated in one tool call of `seconds`."""
    docs, requests = count_requests(sample_files(bench, run_dir, leaves))
    return {"seconds": round(float(seconds), 3), "docs": docs, "requests": requests,
            "requests_per_s": round(requests / seconds, 3) if seconds > 0 else None,
            "device": device, "batch_size": batch_size(bench.tool, eval_cfg),
            "dtype": resolved_dtype(bench.tool, eval_cfg, device, model_dir),
            "tool": bench.tool}


def leaves_of(bench: Benchmark, run_dir: Path) -> list[str]:
    """The leaf tasks a benchmark stood for in its tool call (an lm-eval group such as mmlu
    stands for its subjects), read from the call's dumped result."""
    if bench.tool != "lm-eval":
        return [bench.task]
    from harness.eval.lm_eval_runner import leaf_tasks, results_path

    path = results_path(Path(run_dir) / "lm_eval", bench.shots, [bench.task])
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return [bench.task]
    return leaf_tasks(res, bench.task)


def total_seconds(cost: dict) -> float:
    """Sum of the benchmarks' seconds of a record's `cost`."""
    return float(sum(c.get("seconds") or 0.0 for c in cost.values()))
