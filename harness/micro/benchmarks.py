"""The micro benchmark files: test splits of the micro world as JSONL, written next to the task
YAMLs in harness/micro/tasks/ (committed; `python -m harness.micro --write-benchmarks` rewrites
them and a test checks they match the generator)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from harness.micro import world as W

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
N_TEST = 100


def language_docs() -> dict[str, list[dict]]:
    """Benchmark docs of the language skills."""
    world = W.make_world()
    rng = random.Random(f"{W.WORLD_SEED}-facts-mc")
    pools = {"capital": world.cities, "eats": world.foods, "lives": world.cities}
    facts = []
    for rel, subj, obj in world.facts():
        prompt, _ = W.fact_statement(rel, subj, obj)
        choices = [obj] + rng.sample([x for x in pools[rel] if x != obj], 3)
        rng.shuffle(choices)
        facts.append({"prompt": prompt, "choices": choices, "answer": choices.index(obj)})
    docs = {"micro_facts": facts}
    for task in ("arith", "copy", "reverse"):
        _, test = W.split_instances(task, 0, N_TEST)
        docs[f"micro_{task}"] = [{"prompt": p, "answer": a} for p, a in test]
    _, test = W.split_instances("pattern", 0, N_TEST)
    docs["micro_pattern"] = [{"prompt": p, "choices": c, "answer": c.index(a)}
                             for p, a, c in test]
    return docs


def visual_docs() -> dict[str, list[dict]]:
    """Benchmark docs of the visual skills (scenes as strings; images drawn at eval time)."""
    docs = {}
    for task in W.VISUAL_TASKS:
        _, test = W.split_visual(task, 0, N_TEST)
        docs[f"micro_{task}"] = [{"scene": s.key(), "question": q, "answer": a}
                                 for s, q, a in test]
    return docs


def render_files() -> dict[Path, str]:
    """Path → JSONL text of every benchmark file."""
    out = {}
    for sub, docs in (("language", language_docs()), ("vision", visual_docs())):
        for name, rows in docs.items():
            out[TASKS_DIR / sub / f"{name}.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows)
    return out


def write_benchmarks() -> list[Path]:
    """Write the benchmark files; return their paths."""
    files = render_files()
    for path, text in files.items():
        path.write_text(text)
    return sorted(files)
