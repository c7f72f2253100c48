"""`python -m harness.bench eval`: measured points, the fit, full sizes and the projection, on a
twin at its tiny size with the rehearsal mirror (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.bench_eval import fit, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_fit_through_two_points_and_a_noisy_pair():
    pts = [{"docs": 2, "seconds": 5.0}, {"docs": 6, "seconds": 7.0}]
    assert fit(pts) == pytest.approx((4.0, 0.5))
    # the larger run faster (noise): all of its time goes on its docs, nothing fixed
    assert fit([{"docs": 2, "seconds": 5.0}, {"docs": 6, "seconds": 3.0}]) == (0.0, 0.5)
    # a task smaller than both limits: both runs saw the same docs
    assert fit([{"docs": 3, "seconds": 4.0}, {"docs": 3, "seconds": 6.0}]) == (0.0, 2.0)


def test_full_sizes_cover_every_paper13_task():
    import yaml

    suite = yaml.safe_load((ROOT / "conf" / "eval" / "paper13.yaml").read_text())
    tasks = {b["task"] for b in suite["benchmarks"].values()}
    settings = load_settings()
    assert tasks == set(settings["full_docs"])
    assert set(settings["answer_tokens"]) <= tasks


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    from harness.rehearsal.data import write_mirror

    root = tmp_path_factory.mktemp("reh")
    write_mirror(root, ["arc_challenge", "pope"])
    return root


def test_mirror_rows_are_the_full_size_unless_it_is_a_rehearsal_copy(rehearsal, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    from harness.bench_eval import mirror_docs
    from harness.eval import task_managers
    from harness.eval.suite import Benchmark

    arc = Benchmark("arc_challenge", "language", "lm-eval", "arc_challenge", "acc_norm",
                    shots=25)
    manager = task_managers([arc], [])["lm-eval"]
    assert mirror_docs(arc, manager, rehearsal) is None  # mini copy: the card's size is used
    real = tmp_path / "real"
    shutil.copytree(rehearsal, real)
    readme = real / "allenai" / "ai2_arc" / "README.md"
    readme.write_text(readme.read_text().replace("(rehearsal copy)", ""))
    rows = sum(pq.read_metadata(f).num_rows
               for f in (real / "allenai" / "ai2_arc").rglob("*ARC-Challenge*test*.parquet"))
    assert rows > 0 and mirror_docs(arc, manager, real) == rows


def test_bench_eval_on_a_twin_projects_the_full_suite(rehearsal, tmp_path):
    env = {**os.environ, "HARNESS_RESULTS": str(tmp_path), "HARNESS_WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.bench", "eval", "pair=twin_llava_next_llama3_8b",
         f"eval.data_root={rehearsal}", "--only", "arc_challenge,pope", "--docs", "2,4",
         "merge.progress=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Evaluation cost projection: twin_llava_next_llama3_8b, paper13, cpu" in proc.stdout
    out = json.loads((tmp_path / "bench" / "eval_twin_llava_next_llama3_8b_paper13_cpu.json")
                     .read_text())
    rows = {r["benchmark"]: r for r in out["rows"]}
    assert set(rows) == {"arc_challenge", "pope"}
    assert [p["docs"] for p in rows["arc_challenge"]["points"]] == [2, 4]
    # every arc doc asks one log-likelihood per choice; pope one generation per doc
    assert rows["pope"]["points"][1]["requests"] == 4
    assert rows["arc_challenge"]["points"][1]["requests"] >= 3 * 4
    assert (rows["arc_challenge"]["full_docs"], rows["pope"]["full_docs"]) == (1172, 9000)
    for r in rows.values():
        assert r["full_source"] == "dataset card"
        assert r["projected_s"] == pytest.approx(r["fixed_s"] + r["per_doc_s"] * r["full_docs"],
                                                 abs=0.2)
        assert r["projected_s"] > 0
    assert rows["pope"]["batch_size"] == 1
    md = (tmp_path / "bench" / "eval_twin_llava_next_llama3_8b_paper13_cpu.md").read_text()
    assert "**total**" in md and "Generation capped" in md


def test_bench_eval_names_an_unknown_benchmark(tmp_path):
    env = {**os.environ, "HARNESS_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "harness.bench", "eval",
                           "pair=twin_llava_next_llama3_8b", "--only", "nope"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "--only: nope not in eval=paper13" in proc.stderr


def test_full_size_twin_builder_at_a_scaled_down_size(tmp_path):
    """The builder of `--full-size` on CPU at small sizes: the twin's classes, padded
    vocabulary rows, dtypes and processor; both checkpoints load and answer."""
    import torch
    from PIL import Image
    from transformers import (
        AutoModelForCausalLM,
        AutoProcessor,
        LlavaNextForConditionalGeneration,
    )

    from harness.models.full_twin import build_full_twin

    spec = {"kind": "llava_next_llama3", "version": 1, "seed": 0, "perturb": 0.05,
            "text": {"vocab": 1024}}
    sizes = {"text": {"hidden": 64, "layers": 2, "intermediate": 128, "heads": 4,
                      "kv_heads": 1, "vocab": 4096},
             "vision": {"hidden": 32, "layers": 2, "intermediate": 64, "heads": 4,
                        "image_size": 56, "patch_size": 14}}
    base_dir, mllm_dir = build_full_twin(spec, sizes, tmp_path / "full", device="cpu")
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")
    assert type(base).__name__ == "LlamaForCausalLM" and base.dtype == torch.bfloat16
    assert base.config.vocab_size == 4096 and base.config.num_key_value_heads == 1
    mllm = LlavaNextForConditionalGeneration.from_pretrained(mllm_dir, dtype=torch.float32)
    assert mllm.config.text_config.vocab_size == 4096 + 64  # <image>, <pad>, padded to 64
    proc = AutoProcessor.from_pretrained(mllm_dir)
    text = proc.apply_chat_template([{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "What color?"}]}], add_generation_prompt=True)
    inputs = proc(images=Image.new("RGB", (80, 40), "red"), text=text, return_tensors="pt")
    out = mllm.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    # a complete build is reused, not rebuilt
    stamp = (tmp_path / "full" / "full_twin.json").stat().st_mtime_ns
    assert build_full_twin(spec, sizes, tmp_path / "full", device="cpu") == (base_dir, mllm_dir)
    assert (tmp_path / "full" / "full_twin.json").stat().st_mtime_ns == stamp
