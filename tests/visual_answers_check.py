"""Score the 7 paper13 visual tasks (installed lmms-eval task code, rehearsal mirror as working
directory) with a chat model that gives every doc the same answer, through the harness's answer
guard; print one JSON line. Run as a subprocess by tests/test_visual_robust.py:

    python tests/visual_answers_check.py SCRATCH empty|garbage

`empty` answers "" everywhere; `garbage` answers 3 kB of text with control characters.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

TASKS = ["mme", "mmbench_en_dev_static", "seedbench", "pope", "textvqa_val", "scienceqa_img",
         "gqa"]
ANSWERS = {"empty": "", "garbage": "A\x00\x07 every\x1b[0m model\x0c sun\x1f " * 120}


def main() -> None:
    """Evaluate every visual task with the constant answer; print {task: {metric: value}}."""
    scratch, kind = sys.argv[1], sys.argv[2]
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=f"{scratch}/hf",
                      HF_DATASETS_CACHE=f"{scratch}/datasets",
                      LMMS_EVAL_DATASETS_CACHE=f"{scratch}/lmms")
    from lmms_eval.api.model import lmms
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from harness.eval.answers import guard_answers

    answer = ANSWERS[kind]

    class Constant(lmms):
        is_simple = False

        def generate_until(self, requests):
            out = []
            for req in requests:
                _, doc_to_messages, _, doc_id, task, split = req.arguments
                doc_to_messages(self.task_dict[task][split][doc_id])  # the real prompt path
                out.append(answer)
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    model = Constant()
    cleaned = guard_answers(model)
    res = simple_evaluate(model=model, tasks=TASKS, limit=4,
                          task_manager=TaskManager(model_name="llava_hf"), log_samples=False,
                          cli_args=argparse.Namespace(output_path=f"{scratch}/out",
                                                      process_with_media=False))
    metrics = {t: {k: v for k, v in res["results"][t].items()
                   if "," in k and "stderr" not in k and isinstance(v, (int, float))}
               for t in TASKS}
    print("RESULT " + json.dumps({"metrics": metrics, "cleaned": cleaned}))


if __name__ == "__main__":
    main()
