"""The micro world: deterministic disjoint data, tokenizer, a quick build, and — through the real
lm-eval and lmms-eval — visual tuning really causes forgetting, and the world is mergeable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.micro import world as W
from harness.micro.benchmarks import render_files
from harness.micro.build import DEFAULT_BUILD, build_key, build_pair
from harness.micro.tokenizer import build_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def test_world_is_deterministic_and_splits_are_disjoint():
    assert W.make_world() == W.make_world()
    for task in ("arith", "copy", "reverse", "pattern"):
        train, test = W.split_instances(task, 500, 100)
        assert {t[0] for t in train}.isdisjoint({t[0] for t in test}), task
        assert W.split_instances(task, 500, 100) == (train, test)
    for task in W.VISUAL_TASKS:
        train, test = W.split_visual(task, 500, 100)
        assert {(s.key(), q) for s, q, _ in train}.isdisjoint({(s.key(), q) for s, q, _ in test})


def test_committed_benchmark_files_match_the_generator():
    files = render_files()
    assert len(files) == 22  # test and validation docs of 10 benchmarks and the facts probe
    for path, text in files.items():
        assert path.read_text() == text, f"{path} is stale: python -m harness.micro --write-benchmarks"


def test_tokenizer_round_trip_and_image_token():
    world = W.make_world()
    tok = build_tokenizer(world)
    text = "the capital of " + world.countries[0] + " is " + world.cities[0] + " ."
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == text
    assert tok.decode(tok("12 + 7 = 19")["input_ids"]) == "1 2 + 7 = 1 9"
    mm = build_tokenizer(world, multimodal=True)
    assert len(mm) == len(tok) + 1 and mm.convert_tokens_to_ids("<image>") == len(tok)


def test_quick_build_loads_in_transformers(tmp_path):
    from PIL import Image
    from transformers import AutoModelForCausalLM, AutoProcessor, LlavaForConditionalGeneration

    build = json.loads(json.dumps(DEFAULT_BUILD))
    build["language"]["steps"] = 5
    build["visual"]["steps"] = 5
    stats = build_pair(tmp_path, build, progress=False)
    assert stats["seconds"] < 120
    AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "mllm")
    proc = AutoProcessor.from_pretrained(tmp_path / "mllm")
    text = proc.tokenizer.apply_chat_template(
        [{"role": "user", "content": "<image>\nwhat color is the shape ?"}], tokenize=False,
        add_generation_prompt=True)
    inputs = proc(images=Image.new("RGB", (32, 32)), text=text, return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=2).shape[1] >= inputs["input_ids"].shape[1]
    assert build_key(build) != build_key(DEFAULT_BUILD)


def _run(cache: Path, results: Path, *overrides: str) -> dict:
    env = {**os.environ, "HARNESS_CACHE": str(cache), "HARNESS_RESULTS": str(results),
           "HARNESS_WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "harness", "eval=micro", "merge.progress=false",
                           *overrides], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (results / "runs").glob("*/result.json")]
    method = [o.split("=", 1)[1] for o in overrides if o.startswith("method=")][0]
    params = {o.split("=", 1)[0].rsplit(".", 1)[1]: float(o.split("=", 1)[1])
              for o in overrides if o.startswith("method.params.")}
    (rec,) = [r for r in records if r["method"] == method and all(
        r["params"].get(k) == v for k, v in params.items())]
    return rec


@pytest.mark.slow
def test_visual_tuning_forgets_and_the_world_is_mergeable(micro_cache, tmp_path):
    base = _run(micro_cache, tmp_path, "method=base")
    mllm = _run(micro_cache, tmp_path, "method=mllm")
    ta = _run(micro_cache, tmp_path, "method=task_arithmetic", "method.params.scale=0.5")
    for rec in (base, mllm, ta):
        assert len(rec["scores"]) == 10
        assert {s["tool"] for s in rec["scores"].values()} == {"lm-eval", "lmms-eval"}
        assert all(s["n"] == 100 or s["task"] == "micro_facts" for s in rec["scores"].values())
    b, m, t = base["averages"], mllm["averages"], ta["averages"]
    assert m["language"] <= b["language"] - 15, (b, m)
    assert m["vision"] >= b["vision"] + 30, (b, m)
    assert min(b["language"], m["language"]) < t["language"] < max(b["language"], m["language"])
    assert min(b["vision"], m["vision"]) < t["vision"] < max(b["vision"], m["vision"])
    # make tables on these records: the main table's averages are the records' means
    import pandas as pd

    from harness.tables import build_tables

    build_tables(tmp_path, plots=True)
    csv = pd.read_csv(tmp_path / "tables" / "main_micro_micro.csv", index_col=0)
    for label, rec in (("Base LLM", base), ("MLLM", mllm)):
        for col, key in (("Lang. avg", "language"), ("Vis. avg", "vision"),
                         ("Overall avg", "all")):
            assert csv.loc[label, col] == pytest.approx(rec["averages"][key], abs=1e-4)
        lang = [s["percent"] for s in rec["scores"].values() if s["suite"] == "language"]
        assert csv.loc[label, "Lang. avg"] == pytest.approx(sum(lang) / len(lang), abs=1e-4)
    assert (tmp_path / "tables" / "tradeoff_micro_micro.png").is_file()
