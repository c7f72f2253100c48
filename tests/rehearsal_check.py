"""Run the installed lm-eval / lmms-eval task code on a rehearsal mirror, offline, and print one
JSON object. Run as a subprocess by tests/test_rehearsal_data.py so that the working directory
(the mirror root), the offline flags and the fresh caches hold from the first import on:

    python tests/rehearsal_check.py lm-eval   TASK=SHOTS,... [SCRATCH]  # model "dummy", limit 2
    python tests/rehearsal_check.py lmms-eval TASK,... [SCRATCH]  # first doc's inputs as llava_hf
                                                                  # sees them, then a full run with
                                                                  # a chat model that answers right

SCRATCH (default: a new temporary folder) receives the caches and lmms-eval's submission files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

# lmms-eval task -> the right answer of a doc, as a model would say it (default: doc["answer"])
ORACLE = {
    "textvqa_val": lambda d: d["answers"][0],
    "scienceqa_img": lambda d: "ABCDE"[d["answer"]],
}


def _answer(doc: dict) -> str:
    return doc["answer"]


def _scalar_metrics(res: dict) -> dict:
    return {k: float(v) for k, v in res.items()
            if "," in k and "stderr" not in k and isinstance(v, (int, float))}


def lm_eval_run(specs: list[str]) -> dict:
    """simple_evaluate(model="dummy", limit=2) per TASK=SHOTS; {task: {metric: value}}."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    tm, out = TaskManager(), {}
    for spec in specs:
        task, shots = spec.split("=")
        r = lm_eval.simple_evaluate(model="dummy", tasks=[task], num_fewshot=int(shots), limit=2,
                                    task_manager=tm)
        out[task] = _scalar_metrics(r["results"][task])
    return out


def lmms_docs(tasks: list[str]) -> tuple[dict, dict]:
    """Build chat tasks as for llava_hf; (tasks built, {task: {rows, visuals, message_images,
    text}} of each first doc)."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    tm, out = TaskManager(model_name="llava_hf"), {}
    built = get_task_dict(tasks, tm, task_type="chat")
    for name in tasks:
        task = built[name]
        docs = task.test_docs()
        doc = docs[0]
        msgs = task.doc_to_messages(doc)
        out[name] = {
            "rows": len(docs),
            "visuals": [type(v).__name__ for v in task.doc_to_visual(doc)],
            "message_images": [type(c["url"]).__name__ for m in msgs for c in m["content"]
                               if c.get("type") == "image"],
            "text": task.doc_to_text(doc),
        }
    return built, out


def lmms_eval_run(built: dict, scratch: str) -> dict:
    """simple_evaluate with a chat model that answers every doc right; {task: {metric: value}}."""
    from lmms_eval.api.model import lmms
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    class Oracle(lmms):
        is_simple = False

        def generate_until(self, requests):
            out = []
            for req in requests:
                _, doc_to_messages, _, doc_id, task, split = req.arguments
                doc = self.task_dict[task][split][doc_id]
                msgs = doc_to_messages(doc)
                if not any(c.get("type") == "image" for m in msgs for c in m["content"]):
                    raise AssertionError(f"{task} doc {doc_id}: no image in doc_to_messages")
                out.append(ORACLE.get(task, _answer)(doc))
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    r = simple_evaluate(model=Oracle(), tasks=list(built.values()),
                        task_manager=TaskManager(model_name="llava_hf"),
                        log_samples=False, cli_args=argparse.Namespace(output_path=scratch,
                                                               process_with_media=False))
    return {t: _scalar_metrics(r["results"][t]) for t in built}


def main() -> None:
    """Set the offline environment, then run the requested check on the working directory."""
    kind, names = sys.argv[1], sys.argv[2].split(",")
    scratch = sys.argv[3] if len(sys.argv) > 3 else tempfile.mkdtemp(prefix="rehearsal_check_")
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=f"{scratch}/hf",
                      HF_DATASETS_CACHE=f"{scratch}/datasets",
                      LMMS_EVAL_DATASETS_CACHE=f"{scratch}/lmms")
    if kind == "lm-eval":
        result = lm_eval_run(names)
    elif kind == "lmms-eval":
        built, docs = lmms_docs(names)
        result = {"docs": docs, "metrics": lmms_eval_run(built, scratch)}
    else:
        raise SystemExit(f"unknown check {kind!r}; valid: lm-eval, lmms-eval")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
