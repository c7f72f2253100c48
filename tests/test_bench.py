"""`make bench` end to end on its tiny size: the synthetic pair is built, the floor and merges run
in their own processes, and the table lands in results/bench/ (mergekit is left out: it needs
the package index)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import LlamaForCausalLM

from harness.bench import SIZES, _llama_config, _lm_shapes, bench


def test_bench_tiny_writes_its_table(tmp_path):
    rows = bench("tiny", reps=1, methods=["task_arithmetic", "ties"], with_mergekit=False,
                 cache=tmp_path / "cache", results=tmp_path / "results")
    by = {r["what"]: r for r in rows}
    assert sorted(by) == ["floor", "task_arithmetic", "ties"]
    assert by["floor"]["x_floor"] == 1.0
    for r in rows:
        assert r["runs"] == 1 and r["seconds"] > 0 and r["peak_rss_mb"] > 100
        assert r["x_mergekit"] is None
    assert json.loads((tmp_path / "results" / "bench_tiny.json").read_text()) == rows
    table = (tmp_path / "results" / "bench_tiny.md").read_text()
    assert table.startswith("| what | runs | seconds (median) | × floor |")
    assert "| ties | 1 |" in table
    # no outputs stay behind (each is about twice the model), nor those an interrupted run left
    scratch = tmp_path / "cache" / "bench" / "tiny" / "scratch"
    assert not [p for p in scratch.iterdir() if p.is_dir()]
    (scratch / "della" / "llm").mkdir(parents=True)
    (scratch / "della" / "llm" / "model.safetensors").write_bytes(b"partial")
    # the pair is cached: a second run does not rebuild it
    built = (tmp_path / "cache" / "bench" / "tiny" / "done").stat().st_mtime
    bench("tiny", reps=1, methods=["mllm"], with_mergekit=False, cache=tmp_path / "cache",
          results=tmp_path / "results")
    assert (tmp_path / "cache" / "bench" / "tiny" / "done").stat().st_mtime == built
    assert not [p for p in scratch.iterdir() if p.is_dir()]


def test_bench_sizes_have_the_tensors_of_their_llama():
    """Every size's synthetic tensors are those of the LlamaForCausalLM its config describes
    (8b-layers: Llama-3-8B's, with grouped k/v projections)."""
    for s in SIZES.values():
        with torch.device("meta"):
            model = LlamaForCausalLM(_llama_config(s))
        assert {n: tuple(t.shape) for n, t in model.state_dict().items()} == dict(_lm_shapes(s))
    shapes = dict(_lm_shapes(SIZES["8b-layers"]))
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (1024, 4096)
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (4096, 14336)
    assert sum(math.prod(v) for v in shapes.values()) == pytest.approx(1.92e9, rel=0.01)
