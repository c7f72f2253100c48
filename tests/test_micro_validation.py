"""The micro world's validation split: every benchmark has validation docs, on committed files,
sharing no prompt (and no picture scene) with its test docs or the default build's training data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.micro import world as W
from harness.micro.benchmarks import TASKS_DIR
from harness.micro.build import DEFAULT_BUILD
from harness.micro.train import language_lines

CONF = Path(__file__).resolve().parent.parent / "conf"


def _docs(name: str) -> list[dict]:
    (path,) = TASKS_DIR.glob(f"*/{name}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _suite(name: str) -> dict:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=[f"eval={name}"]).eval


def test_every_micro_benchmark_has_a_validation_task():
    test, val = _suite("micro"), _suite("micro_val")
    assert test.validation == "micro_val" and val.validation is None
    assert set(val.benchmarks) == set(test.benchmarks)
    for bench, spec in test.benchmarks.items():
        other = val.benchmarks[bench]
        assert other.task == f"{spec.task}_val"
        assert (other.tool, other.metric, other.suite) == (spec.tool, spec.metric, spec.suite)
        assert len(_docs(other.task)) == len(_docs(spec.task)), bench


@pytest.mark.parametrize("task", ["facts", "arith", "copy", "reverse", "pattern"])
def test_language_validation_prompts_are_in_no_test_doc_or_training_line(task):
    val = {d["prompt"] for d in _docs(f"micro_{task}_val")}
    test = {d["prompt"] for d in _docs(f"micro_{task}")}
    assert len(val) == len(_docs(f"micro_{task}_val")), "duplicate validation prompts"
    assert not val & test
    lines = language_lines(W.make_world(), DEFAULT_BUILD["language"]["n_train"])[task]
    assert not [p for p in val if any(line.startswith(p + " ") for line in lines)]


@pytest.mark.parametrize("task", W.VISUAL_TASKS)
def test_visual_validation_scenes_are_in_no_test_doc_or_training_example(task):
    val = [d["scene"] for d in _docs(f"micro_{task}_val")]
    assert len(set(val)) == len(val), "a validation scene appears twice"
    test = {d["scene"] for d in _docs(f"micro_{task}")}
    train, _ = W.split_visual(task, DEFAULT_BUILD["visual"]["n_train"], 100)
    assert not set(val) & test
    assert not set(val) & {scene.key() for scene, _, _ in train}


def test_validation_leaves_the_test_split_and_the_training_data_as_they_are():
    for task in ("arith", "pattern"):
        train, test = W.split_instances(task, 300, 100)
        W.validation_instances(task, 300, 100, 50)
        assert W.split_instances(task, 300, 100) == (train, test)
    assert [d["prompt"] for d in _docs("micro_arith")] == [
        p for p, _ in W.split_instances("arith", 0, 100)[1]]
