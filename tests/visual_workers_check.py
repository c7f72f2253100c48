"""Build lmms-eval's real GQA task on a rehearsal mirror and print one line; run as a subprocess by
tests/test_visual_robust.py, with `datasets` imported from a copy outside site-packages (as a
`pip install --target DIR` + PYTHONPATH install has it):

    python tests/visual_workers_check.py MIRROR SCRATCH guarded|unguarded

GQA's process_docs maps its image column with `num_proc=8`: several worker processes. `guarded`
builds the task inside harness.eval.workers.modules_by_name (what the lmms-eval runner does).
Prints `DATASETS <file>`, then `WORKERS <n>` (map shards written) and `OK`, or the error.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


def main() -> None:
    """Build the gqa task in the mirror, with or without the harness's guard."""
    mirror, scratch, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(scratch / "hf"),
                      HF_DATASETS_CACHE=str(scratch / "datasets"),
                      LMMS_EVAL_DATASETS_CACHE=str(scratch / "lmms"))
    import datasets
    from lmms_eval.evaluator import _enable_reentrant_filelocks
    from lmms_eval.tasks import TaskManager, get_task_dict

    from harness.eval.mirror import working_directory
    from harness.eval.workers import modules_by_name

    print("DATASETS", datasets.__file__, flush=True)
    _enable_reentrant_filelocks()  # as simple_evaluate does before it builds tasks
    manager = TaskManager(model_name="llava_hf")
    guard = modules_by_name() if mode == "guarded" else contextlib.nullcontext()
    with working_directory(mirror), guard:
        task = get_task_dict(["gqa"], manager, task_type="chat")["gqa"]
    docs = task.test_docs()
    assert all(doc["image"] is not None for doc in docs)
    shards = {p.name for p in scratch.rglob("*_of_*.arrow")}
    print("WORKERS", max((int(n.rsplit("_of_", 1)[1].split(".")[0]) for n in shards),
                         default=1), flush=True)
    print("OK", len(docs), flush=True)


if __name__ == "__main__":
    main()
