"""The micro benchmark files: test and validation splits of the micro world as JSONL, written next
to the task YAMLs in harness/micro/tasks/ (committed; `python -m harness.micro
--write-benchmarks` rewrites them and a test checks they match the generator).

Test docs are `micro_<skill>.jsonl`, validation docs `micro_<skill>_val.jsonl` (for choosing
hyperparameters: drawn after the default build's training data, disjoint from it and from test).

The generative facts probe (tasks/generation, suites micro_generation and micro_generation_val)
reads the model's own completion of a fact instead of ranking choices. As in micro_facts, its test
docs give every fact in the trained statement form to complete ("the capital of <country> is"),
its validation docs ask it as a question, a wording no training data uses ("question : what is
the capital of <country> ? answer :"). It lives in its own folder
so that the micro suites' task files, and with them their run ids, stay as they are.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from harness.micro import world as W

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
N_TEST = 100
N_VAL = 100


def _train_sizes() -> tuple[int, int]:
    """Language and visual training sizes of the default build (validation avoids its data)."""
    from harness.micro.build import DEFAULT_BUILD

    return DEFAULT_BUILD["language"]["n_train"], DEFAULT_BUILD["visual"]["n_train"]


def _facts(world: W.World, prompt_of, seed: str) -> list[dict]:
    rng = random.Random(seed)
    pools = {"capital": world.cities, "eats": world.foods, "lives": world.cities}
    docs = []
    for rel, subj, obj in world.facts():
        choices = [obj] + rng.sample([x for x in pools[rel] if x != obj], 3)
        rng.shuffle(choices)
        docs.append({"prompt": prompt_of(rel, subj, obj), "choices": choices,
                     "answer": choices.index(obj)})
    return docs


def language_docs() -> dict[str, list[dict]]:
    """Benchmark docs of the language skills, test and validation."""
    world = W.make_world()
    n_lang, _ = _train_sizes()
    docs = {"micro_facts": _facts(world, lambda r, s, o: W.fact_statement(r, s, o)[0],
                                  f"{W.WORLD_SEED}-facts-mc"),
            "micro_facts_val": _facts(world, lambda r, s, o: W.fact_question(r, s),
                                      f"{W.WORLD_SEED}-facts-mc-val")}
    for task in ("arith", "copy", "reverse", "pattern"):
        _, test = W.split_instances(task, 0, N_TEST)
        val = W.validation_instances(task, n_lang, N_TEST, N_VAL)
        for name, split in ((f"micro_{task}", test), (f"micro_{task}_val", val)):
            if task == "pattern":
                docs[name] = [{"prompt": p, "choices": c, "answer": c.index(a)}
                              for p, a, c in split]
            else:
                docs[name] = [{"prompt": p, "answer": a} for p, a in split]
    return docs


def generation_docs() -> dict[str, list[dict]]:
    """Docs of the generative facts probe, test (statement form) and validation (question
    form): {"prompt", "answer", "relation"} per fact of the world."""
    world = W.make_world()
    test, val = [], []
    for rel, subj, obj in world.facts():
        test.append({"prompt": W.fact_statement(rel, subj, obj)[0], "answer": obj,
                     "relation": rel})
        val.append({"prompt": W.fact_question(rel, subj), "answer": obj, "relation": rel})
    return {"micro_facts_gen": test, "micro_facts_gen_val": val}


def visual_docs() -> dict[str, list[dict]]:
    """Benchmark docs of the visual skills, test and validation (scenes as strings; images
    drawn at eval time)."""
    _, n_vis = _train_sizes()
    docs = {}
    for task in W.VISUAL_TASKS:
        _, test = W.split_visual(task, 0, N_TEST)
        val = W.validation_visual(task, n_vis, N_TEST, N_VAL)
        for name, split in ((f"micro_{task}", test), (f"micro_{task}_val", val)):
            docs[name] = [{"scene": s.key(), "question": q, "answer": a} for s, q, a in split]
    return docs


def render_files() -> dict[Path, str]:
    """Path → JSONL text of every benchmark file."""
    out = {}
    for sub, docs in (("language", language_docs()), ("vision", visual_docs()),
                      ("generation", generation_docs())):
        for name, rows in docs.items():
            out[TASKS_DIR / sub / f"{name}.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows)
    return out


def write_benchmarks() -> list[Path]:
    """Write the benchmark files; return their paths."""
    files = render_files()
    for path, text in files.items():
        path.write_text(text)
    return sorted(files)
