"""`make bench` end to end on its tiny size: the synthetic pair is built, the floor and merges run
in their own processes, and the table lands in results/bench/ (mergekit is left out: it needs
the package index)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import LlamaForCausalLM

from harness.bench import SIZES, _llama_config, _lm_shapes, _mergekit, bench, main
from harness.errors import ConfigError


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


def test_mergekit_that_cannot_be_installed_is_a_clear_error(tmp_path, monkeypatch):
    """Offline, the bench's own mergekit venv cannot be filled: a ConfigError that says so and
    names the way out, not a bare CalledProcessError; nothing marks the venv as ready."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    with pytest.raises(ConfigError, match=r"could not install mergekit(.|\n)*--no-mergekit"):
        _mergekit(tmp_path / "venv")
    assert not (tmp_path / "venv" / "ok").exists()


@pytest.mark.parametrize("args, message", [
    (["--sizes", "2b"], "unknown size '2b'"),
    (["--methods", "tie"], "unknown merge method 'tie'"),
    (["--device", "gpu"], "merge.device='gpu' is not valid")])
def test_bad_bench_arguments_name_the_option(args, message, tmp_path, capsys):
    from harness.cli import run_main

    with pytest.raises(SystemExit) as exit_info:  # as `python -m harness.bench` runs it
        run_main(lambda: main([*args, "--cache", str(tmp_path), "--results",
                               str(tmp_path / "results")]))
    assert exit_info.value.code == 1 and message in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()  # nothing built
