"""The evaluation stage end to end through the real lm-eval and lmms-eval, on tiny checkpoints
and the local smoke suite; silent failures must fail the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _harness(results: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_RESULTS": str(results), "HARNESS_WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "harness", "merge.progress=false", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _records(results: Path) -> list[Path]:
    return sorted((results / "runs").glob("*/result.json"))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, tiny_llama, tiny_llava_new):
    results = tmp_path_factory.mktemp("results")
    args = ["pair=local", f"pair.base={tiny_llama}", f"pair.mllm={tiny_llava_new}",
            "method=mllm", "eval=smoke", "eval.limit=4"]
    proc = _harness(results, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results, args


def test_record_holds_real_scores_from_both_tools(smoke_run):
    results, _ = smoke_run
    (path,) = _records(results)
    rec = json.loads(path.read_text())
    assert rec["status"] == "complete" and rec["eval_suite"] == "smoke"
    assert set(rec["scores"]) == {"smoke_mc", "smoke_gen", "smoke_color"}
    tools = {s["tool"] for s in rec["scores"].values()}
    assert tools == {"lm-eval", "lmms-eval"}
    for s in rec["scores"].values():
        assert s["n"] == 4 and 0.0 <= s["percent"] <= 100.0
        assert s["percent"] == pytest.approx(100 * s["value"])
    assert rec["averages"]["language"] == pytest.approx(
        (rec["scores"]["smoke_mc"]["percent"] + rec["scores"]["smoke_gen"]["percent"]) / 2)
    for key in ("run_id", "experiment", "pair", "method", "params", "merge", "config",
                "versions", "git_sha", "created_at"):
        assert key in rec
    # pair=local: eval_dtype auto, float32 on CPU, for both tools
    assert rec["evaluated_with"] == {"lm-eval": {"dtype": "float32", "device": "cpu"},
                                     "lmms-eval": {"dtype": "float32", "device": "cpu"}}
    run = path.parent
    assert (run / "lm_eval" / "samples_harness_smoke_mc.jsonl").is_file()
    assert (run / "lm_eval" / "results_0shot_harness_smoke_mc.json").is_file()
    assert (run / "lmms_eval" / "samples_harness_smoke_color.jsonl").is_file()
    assert (run / "lmms_eval" / "results_harness_smoke_color.json").is_file()
    first = json.loads((run / "lm_eval" / "samples_harness_smoke_gen.jsonl").read_text()
                       .splitlines()[0])
    assert "resps" in first and "doc" in first


def test_record_holds_the_cost_of_each_benchmark(smoke_run):
    """Each benchmark's own tool call is timed; its requests are those in its sample log."""
    results, _ = smoke_run
    (path,) = _records(results)
    rec = json.loads(path.read_text())
    cost = rec["cost"]
    assert set(cost) == set(rec["scores"])
    # 4 docs each: smoke_mc asks 3 log-likelihoods per doc, the generative tasks one generation
    assert {b: (c["docs"], c["requests"]) for b, c in cost.items()} == {
        "smoke_mc": (4, 12), "smoke_gen": (4, 4), "smoke_color": (4, 4)}
    for c in cost.values():
        assert c["seconds"] > 0 and c["requests_per_s"] == pytest.approx(
            c["requests"] / c["seconds"], rel=1e-2)
        assert c["device"] == "cpu" and c["dtype"] == "float32"
    assert cost["smoke_mc"]["batch_size"] == rec["config"]["eval"]["batch_size"]
    assert cost["smoke_color"]["batch_size"] == 1 and cost["smoke_color"]["tool"] == "lmms-eval"


def test_two_processes_give_the_record_of_one(smoke_run, tmp_path):
    """eval.gpus=2 on CPU: the benchmarks are split over two worker processes and merged into
    a record of the same run id, scores and cost form."""
    results, args = smoke_run
    (one,) = _records(results)
    proc = _harness(tmp_path, *args, "eval.gpus=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (two,) = _records(tmp_path)
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert a["run_id"] == b["run_id"]
    assert a["scores"] == b["scores"]
    assert list(a["cost"]) == list(b["cost"])
    for bench in a["cost"]:
        keep = ("docs", "requests", "device", "batch_size", "dtype", "tool")
        assert {k: a["cost"][bench][k] for k in keep} == {k: b["cost"][bench][k] for k in keep}
    assert sorted(p.name for p in two.parent.glob("_worker*.out.json")) == [
        "_worker0.out.json", "_worker1.out.json"]
    assert b["config"]["slurm"]["gpus"] == 2


def test_complete_run_is_skipped_and_force_reruns(smoke_run):
    results, args = smoke_run
    (path,) = _records(results)
    before = path.stat().st_mtime_ns
    proc = _harness(results, *args)
    assert proc.returncode == 0 and "is complete" in proc.stderr + proc.stdout
    assert path.stat().st_mtime_ns == before
    proc = _harness(results, *args, "force=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert path.stat().st_mtime_ns != before


def test_stage_eval_uses_the_existing_merge_and_needs_one(smoke_run, tmp_path):
    results, args = smoke_run
    proc = _harness(results, *args, "stage=eval", "eval.limit=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(_records(results)) == 2
    assert "merge " not in proc.stderr.split("lm-eval")[0] or "done in" not in proc.stderr
    proc = _harness(tmp_path, *args, "stage=eval")
    assert proc.returncode == 1 and "stage=merge" in proc.stderr
    assert not _records(tmp_path)


def test_another_dtype_computes_its_own_answers(smoke_run):
    """lm-eval's request cache ignores the model and its dtype: the same merge evaluated in
    bfloat16 after float32 must compute its own answers, not read the float32 ones."""
    results, args = smoke_run
    proc = _harness(results, *args, "stage=eval", "eval.dtype=bfloat16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    by_dtype = {}
    for path in _records(results):
        rec = json.loads(path.read_text())
        if rec["eval_limit"] == 4:  # the same docs in both dtypes
            by_dtype[rec["config"]["eval"]["dtype"]] = path.parent, Path(rec["merge"]["dir"])
    assert sorted(by_dtype) == ["auto", "bfloat16"]

    def loglikelihoods(run: Path) -> list:
        rows = (run / "lm_eval" / "samples_harness_smoke_mc.jsonl").read_text().splitlines()
        return [json.loads(row)["resps"] for row in rows]

    assert loglikelihoods(by_dtype["bfloat16"][0]) != loglikelihoods(by_dtype["auto"][0])
    caches = by_dtype["auto"][1] / "eval_cache"
    # auto is float32 on CPU: the cache is named by the dtype used
    assert sorted(p.name for p in caches.iterdir()) == ["hf-bfloat16", "hf-float32"]
    assert {s["dtype"] for s in json.loads((by_dtype["auto"][0] / "result.json").read_text())
            ["scores"].values()} == {"float32"}


def test_processor_that_cannot_place_the_image_fails_the_run(tmp_path, tiny_llama,
                                                             tiny_llava_new):
    broken = tmp_path / "broken_llava"
    shutil.copytree(tiny_llava_new, broken)
    # a chat template that drops the user's content: the <image> placeholder never reaches the
    # processor, so the image cannot be placed
    template = "{% for m in messages %}<|{{ m['role'] }}|>{% endfor %}<|assistant|>"
    (broken / "chat_template.jinja").write_text(template)
    cfg_path = broken / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    results = tmp_path / "results"
    proc = _harness(results, "pair=local", f"pair.base={tiny_llama}", f"pair.mllm={broken}",
                    "method=mllm", "eval=smoke", "eval.limit=2")
    assert proc.returncode == 1, proc.stdout[-2000:]
    message = proc.stderr.lower()
    assert "lmms-eval" in message and "image" in message, proc.stderr[-2000:]
    assert not _records(results)


def test_missing_hub_dataset_names_it_and_prefetch(tmp_path, tiny_llama, tiny_llava_new):
    results = tmp_path / "results"
    proc = _harness(results, "pair=local", f"pair.base={tiny_llama}",
                    f"pair.mllm={tiny_llava_new}", "method=mllm", "eval=paper13",
                    "eval.limit=1", "~eval.benchmarks.mmlu", "~eval.benchmarks.gsm8k",
                    "~eval.benchmarks.hellaswag", "~eval.benchmarks.winogrande",
                    "~eval.benchmarks.truthfulqa_mc2", timeout=900)
    assert proc.returncode == 1
    assert "arc_challenge" in proc.stderr and "prefetch" in proc.stderr, proc.stderr[-2000:]
    assert not _records(results)


def test_swallowed_generation_error_fails_and_own_empty_answers_are_counted():
    from harness.errors import EvalError
    from harness.eval.failures import check_generations

    samples = [{"doc_id": 0, "resps": [["red"]]}, {"doc_id": 3, "resps": [[""]]}]
    with pytest.raises(EvalError, match="doc 3.*Error boom in generating"):
        check_generations("lmms-eval", "t", samples, ["Error boom in generating"])
    assert check_generations("lm-eval", "t", samples, []) == 1


def test_paper13_task_ids_and_metrics_exist_in_the_installed_registries():
    """Indexing only (no downloads): every paper13 task id is known to its tool, and its metric
    is one the task declares."""
    from omegaconf import OmegaConf

    from harness.eval.suite import load_benchmarks

    benches = load_benchmarks(OmegaConf.load(ROOT / "conf" / "eval" / "paper13.yaml"))
    assert len([b for b in benches if b.suite == "language"]) == 6
    assert len([b for b in benches if b.suite == "vision"]) == 7
    from lm_eval.tasks import TaskManager
    from lmms_eval.tasks import TaskManager as LmmsTaskManager

    managers = {"lm-eval": TaskManager(), "lmms-eval": LmmsTaskManager(model_name="llava_hf")}

    for b in benches:
        index = managers[b.tool].task_index
        assert b.task in index, f"{b.tool} has no task {b.task}"
        entry = index[b.task]
        path = Path(getattr(entry, "yaml_path", None) or entry["yaml_path"])
        text = path.read_text()
        for line in text.splitlines():  # a task may take its metrics from an included template
            if line.startswith("include:"):
                text += (path.parent / line.split(":", 1)[1].strip().strip("'\"")).read_text()
        assert f"metric: {b.metric}" in text, f"{b.tool} task {b.task} declares no {b.metric}"
