"""The local dataset mirror (eval.data_root): layout, the check against what tasks read, the
prefetch writer, and unwrapped retry errors. Real lm-eval task configs, tiny local data."""

from __future__ import annotations

import os

import pytest
from datasets import Dataset

from harness.errors import EvalError
from harness.eval.mirror import check_mirror, data_needs, mirror_digest, write_repo
from harness.eval.suite import Benchmark

GSM8K = Benchmark(name="gsm8k", suite="language", tool="lm-eval", task="gsm8k",
                  metric="exact_match", filter="strict-match", shots=5,
                  columns=("question", "answer"))


def _rows(n: int) -> Dataset:
    return Dataset.from_list([{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}
                              for i in range(n)])


@pytest.fixture(scope="module")
def lm_tasks():
    from harness.eval.lm_eval_runner import task_manager

    return task_manager([GSM8K], [])


def test_needs_come_from_the_installed_task(lm_tasks):
    (need,) = data_needs(GSM8K, lm_tasks)
    assert (need.path, need.config) == ("openai/gsm8k", "main")
    assert set(need.splits) == {"test", "train"} and need.columns == ("question", "answer")


def test_group_expands_to_every_leaf_config(lm_tasks):
    mmlu = Benchmark(name="mmlu", suite="language", tool="lm-eval", task="mmlu", metric="acc",
                     columns=("question",))
    needs = data_needs(mmlu, lm_tasks)
    assert len(needs) == 57 and {n.path for n in needs} == {"cais/mmlu"}
    assert "anatomy" in {n.config for n in needs} and all("dev" in n.splits for n in needs)


def test_a_complete_mirror_passes_and_each_gap_is_named(tmp_path, lm_tasks):
    needs = data_needs(GSM8K, lm_tasks)
    with pytest.raises(EvalError, match=r"benchmark gsm8k \(task gsm8k\).*openai/gsm8k.*prefetch"):
        check_mirror(tmp_path, needs, "paper13")
    write_repo(tmp_path, "openai/gsm8k", {"other": {"test": _rows(2)}})
    with pytest.raises(EvalError, match="config 'main'.*declares only \\['other'\\]"):
        check_mirror(tmp_path, needs, "paper13")
    write_repo(tmp_path, "openai/gsm8k", {"main": {"test": _rows(2)}})
    with pytest.raises(EvalError, match="split 'train'"):
        check_mirror(tmp_path, needs, "paper13")
    write_repo(tmp_path, "openai/gsm8k", {"main": {"test": _rows(2),
                                                   "train": _rows(5).remove_columns("answer")}})
    with pytest.raises(EvalError, match="benchmark gsm8k.*column\\(s\\) answer.*rehearsal"):
        check_mirror(tmp_path, needs, "paper13")
    write_repo(tmp_path, "openai/gsm8k", {"main": {"test": _rows(2), "train": _rows(5)}})
    check_mirror(tmp_path, needs, "paper13")


def test_digest_follows_content_not_location(tmp_path):
    for root in (tmp_path / "a", tmp_path / "b"):
        write_repo(root, "openai/gsm8k", {"main": {"test": _rows(2), "train": _rows(5)}})
    assert mirror_digest(tmp_path / "a") == mirror_digest(tmp_path / "b")
    write_repo(tmp_path / "b", "openai/gsm8k", {"main": {"test": _rows(3), "train": _rows(5)}})
    assert mirror_digest(tmp_path / "a") != mirror_digest(tmp_path / "b")


def test_prefetch_mirror_rewrites_what_datasets_loads(tmp_path, monkeypatch):
    """`--mirror` writes what `load_dataset` returns; here the source is itself a mirror (the
    working directory), as the hub would be on a machine with internet."""
    from omegaconf import OmegaConf

    from harness.prefetch import pop_mirror, write_mirror

    source = tmp_path / "source"
    write_repo(source, "openai/gsm8k", {"main": {"test": _rows(2), "train": _rows(5)}})
    monkeypatch.chdir(source)
    eval_cfg = OmegaConf.create({"name": "g", "task_paths": [], "benchmarks": {
        "gsm8k": {"suite": "language", "tool": "lm-eval", "task": "gsm8k",
                  "metric": "exact_match", "columns": ["question", "answer"]}}})
    out = tmp_path / "out"
    assert write_mirror(eval_cfg, out) == ["openai/gsm8k"]
    from datasets import load_dataset

    # a cache of its own: the session's may hold another gsm8k under the same key
    copy = load_dataset(str(out / "openai/gsm8k"), "main", cache_dir=str(tmp_path / "cache"))
    assert copy["train"]["answer"] == _rows(5)["answer"] and len(copy["test"]) == 2
    argv = ["prog", "eval=paper13", "--mirror", str(out)]
    assert pop_mirror(argv) == out.resolve() and argv == ["prog", "eval=paper13"]


def test_retry_errors_are_unwrapped_to_their_cause():
    import tenacity

    from harness.eval.failures import tool_error

    @tenacity.retry(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_none())
    def download():
        raise KeyError("imageId n123 is not in testdev_balanced_images")

    with pytest.raises(tenacity.RetryError) as caught:
        download()
    err = tool_error("lmms-eval", ["gqa"], "out/mllm", caught.value, "paper13")
    assert "KeyError" in str(err) and "n123" in str(err) and "RetryError" not in str(err)


def test_working_directory_is_restored(tmp_path):
    from harness.eval.mirror import working_directory

    before = os.getcwd()
    with pytest.raises(RuntimeError), working_directory(tmp_path):
        assert os.getcwd() == str(tmp_path)
        raise RuntimeError
    assert os.getcwd() == before


def test_the_rehearsal_mirror_holds_everything_paper13_reads(tmp_path):
    """The suite's declarations (columns, extra_data) and the installed tasks' configs and
    splits agree with the rehearsal's datasets."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from harness.eval import task_managers
    from harness.eval.mirror import suite_data_needs
    from harness.eval.suite import load_benchmarks
    from harness.rehearsal import write_mirror

    write_mirror(tmp_path)
    suite = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf/eval/paper13.yaml")
    benches = load_benchmarks(suite)
    needs = suite_data_needs(benches, task_managers(benches, []))
    assert {n.benchmark for n in needs} == {b.name for b in benches}
    assert len([n for n in needs if n.path == "cais/mmlu"]) == 57
    check_mirror(tmp_path, needs, "paper13")
