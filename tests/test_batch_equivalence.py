"""lm-eval batch 1 and batch N give the same answers and scores (CPU, float32): every micro
language benchmark, and every paper13 language task on a twin with the rehearsal data (the
same generations and choices; log-likelihoods and continuous scores to float32 rounding).
lmms-eval's llava_hf runs one request per batch (it asserts so), so there is nothing to compare
for the visual benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _merged(overrides: list[str], results: Path) -> Path:
    from harness import records
    from harness.pipeline import run

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["method=mllm", "stage=merge", *overrides,
                                           f"paths.results={results}"])
    run(cfg)
    return cfg, Path(cfg.paths.merges) / records.merge_id(cfg)


def _evaluate(cfg, merge_dir: Path, run_dir: Path, batch: int, limit: int) -> dict:
    from harness.eval import evaluate

    ev = cfg.eval.copy()
    with open_dict(ev):
        ev.benchmarks = {k: v for k, v in ev.benchmarks.items() if v.tool == "lm-eval"}
        ev.batch_size, ev.limit, ev.dtype, ev.device = batch, limit, "float32", "cpu"
        ev.request_cache = False
    return evaluate(ev, merge_dir / "llm", None, run_dir, seed=0)


def _answers(run_dir: Path) -> dict:
    """(task, doc, filter) → the responses as logged."""
    out = {}
    for path in sorted((run_dir / "lm_eval").glob("samples_*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            out[(path.stem, row["doc_id"], row.get("filter"))] = row["filtered_resps"]
    return out


def _same(a, b) -> bool:
    """Equal generations; log-likelihoods equal to float32 rounding with the same greedy flag."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-4, abs=1e-4)
    return a == b


def _check(one: dict, many: dict, run1: Path, run_n: Path) -> None:
    # accuracies exactly; a continuous score (TruthfulQA-MC2's probability mass) to float32
    # rounding: a padded batch sums its matmuls in another order
    assert one.keys() == many.keys()
    for bench in one:
        assert one[bench]["value"] == pytest.approx(many[bench]["value"], rel=1e-6), bench
    a, b = _answers(run1), _answers(run_n)
    assert a.keys() == b.keys() and a
    different = [k for k in a if not _same(a[k], b[k])]
    assert not different, f"{len(different)} answers differ, e.g. {different[:3]}"
    # the choice each multiple-choice doc makes is the same
    for key, resps in a.items():
        if resps and all(isinstance(r, list) and isinstance(r[0], float) for r in resps):
            pick = max(range(len(resps)), key=lambda i: resps[i][0])
            assert pick == max(range(len(b[key])), key=lambda i: b[key][i][0]), key


def test_micro_language_benchmarks_batch_1_and_16(micro_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(micro_cache))
    cfg, merge_dir = _merged(["pair=micro", "eval=micro"], tmp_path)
    one = _evaluate(cfg, merge_dir, tmp_path / "b1", 1, 24)
    many = _evaluate(cfg, merge_dir, tmp_path / "b16", 16, 24)
    _check(one, many, tmp_path / "b1", tmp_path / "b16")


def test_paper13_language_tasks_batch_1_and_4_on_a_twin(tmp_path):
    from harness.rehearsal.data import write_mirror

    mirror = tmp_path / "mirror"
    write_mirror(mirror, ["mmlu", "gsm8k", "arc_challenge", "hellaswag", "winogrande",
                          "truthfulqa_mc2"])
    cfg, merge_dir = _merged(["pair=twin_llava_next_llama3_8b", "eval=paper13",
                              f"eval.data_root={mirror}", "eval.max_new_tokens=8"], tmp_path)
    one = _evaluate(cfg, merge_dir, tmp_path / "b1", 1, 4)
    many = _evaluate(cfg, merge_dir, tmp_path / "b4", 4, 4)
    _check(one, many, tmp_path / "b1", tmp_path / "b4")
