"""The generation error analysis: the rule-based classifier on labelled answers, the phrase-list
files, reading answers from sample logs (records without logs are skipped and named), the
tables, the W&B metrics, and the generative suites' task ids."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import ConfigError
from harness.generation import CATEGORIES
from harness.generation.classify import Rules, classify, normalise
from harness.generation.rules import load_rules, rules_for, rules_name

ROOT = Path(__file__).resolve().parent.parent
MICRO = load_rules("micro")
LLAMA = load_rules("llama")

# (answer, the task's verdict, reference, expected category)
MICRO_LABELLED = [
    ("hape", True, "hape", "correct"),
    ("  ", False, "hape", "not_known"),
    ("", False, "54", "not_known"),
    ("white", False, "hape", "context_hallucination"),
    ("-> White!", False, "hape", "context_hallucination"),
    ("yes", False, "road moon", "context_hallucination"),
    ("4 4 4 4", False, "hape", "context_hallucination"),     # a count where a city belongs
    ("4", False, "54", "other_error"),                       # a wrong sum, not a count
    ("5 3", False, "54", "other_error"),
    ("triangle", True, "triangle", "correct"),               # correct wins over the list
    ("river -> river river", False, "river moon", "other_error"),
    ("bird", False, "redbird", "other_error"),
]
LLAMA_LABELLED = [
    ("Paris", True, "Paris", "correct"),
    ("The image shows Paris", True, "Paris", "correct"),     # correct though it has a phrase
    ("", False, "Paris", "not_known"),
    ("I DON’T KNOW.", False, "Paris", "not_known"),
    ("i don't know", False, "Paris", "not_known"),
    ("Sorry, the answer is unknown", False, "Paris", "not_known"),
    ("In the image, a man holds a flag.", False, "Paris", "context_hallucination"),
    ("I cannot see the picture!", False, "Paris", "context_hallucination"),
    ("Based on the provided context, Rome", False, "Paris", "context_hallucination"),
    ("Rome", False, "Paris", "other_error"),
    ("imagery of unknowns", False, "Paris", "other_error"),  # word boundaries
    ("the images", False, "Paris", "other_error"),
    ("I know it: Lyon", False, "Paris", "other_error"),
]


@pytest.mark.parametrize("answer,correct,reference,expected", MICRO_LABELLED)
def test_micro_rules_classify_labelled_answers(answer, correct, reference, expected):
    assert classify(answer, correct, MICRO, reference) == expected


@pytest.mark.parametrize("answer,correct,reference,expected", LLAMA_LABELLED)
def test_llama_rules_classify_labelled_answers(answer, correct, reference, expected):
    assert classify(answer, correct, LLAMA, reference) == expected


def test_every_category_is_covered_by_the_labelled_answers():
    for labelled in (MICRO_LABELLED, LLAMA_LABELLED):
        assert {row[-1] for row in labelled} == set(CATEGORIES)


def test_normalise_case_punctuation_and_apostrophes():
    assert normalise("I DON’T  know!!") == "i don't know"
    assert normalise("'quoted' -> white.") == "quoted white"
    assert normalise(None) == ""


def test_rule_order_context_before_declining():
    rules = Rules("t", declining=("i cannot",), context=("the image",))
    assert classify("I cannot see the image", False, rules) == "context_hallucination"
    assert classify("I cannot", False, rules) == "not_known"


def test_every_family_has_rules_and_bad_files_name_the_fix(tmp_path):
    for pair in (ROOT / "conf" / "pair").glob("*.yaml"):
        import yaml

        spec = yaml.safe_load(pair.read_text())
        assert isinstance(rules_for(spec), Rules), pair.name
    assert rules_name({"source": "micro", "family": "llama"}) == "micro"
    assert rules_name({"source": "hub", "family": "mistral"}) == "mistral"
    with pytest.raises(ConfigError, match="family"):
        rules_name({"name": "x", "source": "hub"})
    with pytest.raises(ConfigError, match="qwen.yaml"):
        load_rules("qwen")
    (tmp_path / "bad.yaml").write_text("declining: [a]\nphrases: [b]\n")
    with pytest.raises(ConfigError, match="unknown key 'phrases'"):
        load_rules("bad", tmp_path)


# ---------------------------------------------------------------- sample logs and tables
def _gen_sample(doc_id: int, prompt: str, answer: str, target: str, ok: bool,
                filter_: str = "none") -> dict:
    return {"doc_id": doc_id, "target": target, "filter": filter_, "metrics": ["exact_match"],
            "arguments": [[prompt, {"until": ["."], "max_gen_toks": 10}]],
            "resps": [[answer]], "filtered_resps": [answer], "exact_match": float(ok)}


def test_rules_read_the_raw_answer_and_the_metric_the_filtered_one():
    from harness.generation.collect import benchmark_answers

    sample = _gen_sample(0, "Question: 2+2?", "I don't know, the image is unclear", "4", False,
                         filter_="strict-match")
    sample["filtered_resps"] = ["[invalid]"]
    (row,) = benchmark_answers([sample], "exact_match", "strict-match", LLAMA)
    assert row["category"] == "context_hallucination" and row["answer"].startswith("I don't")
    sample.update({"resps": [["The answer is 4."]], "filtered_resps": ["4"], "exact_match": 1.0})
    (row,) = benchmark_answers([sample], "exact_match", "strict-match", LLAMA)
    assert row["category"] == "correct"


def _ll_sample(doc_id: int) -> dict:
    return {"doc_id": doc_id, "target": 0, "filter": "none", "metrics": ["acc"], "acc": 1.0,
            "arguments": [["the capital of x is", " a"], ["the capital of x is", " b"]],
            "resps": [[[-1.0, True]], [[-3.0, False]]]}


def _write_run(runs: Path, run_id: str, method: str, answers: list[tuple] | None,
               seed: int = 0) -> None:
    run = runs / run_id
    (run / "lm_eval").mkdir(parents=True)
    scores = {"facts": {"suite": "language", "tool": "lm-eval", "task": "t_facts",
                        "metric": "acc", "value": 1.0, "percent": 100.0, "n": 2},
              "qa": {"suite": "language", "tool": "lm-eval", "task": "t_qa",
                     "metric": "exact_match", "value": 0.5, "percent": 50.0, "n": 4}}
    record = {"run_id": run_id, "pair": "micro", "method": method, "params": {}, "seed": seed,
              "eval_suite": "gen", "status": "complete", "scores": scores,
              "averages": {"language": 75.0, "vision": None, "all": 75.0},
              "config": {"pair": {"name": "micro", "source": "micro", "family": "llama"},
                         "eval": {"benchmarks": {"qa": {"filter": "none"}}}}}
    (run / "result.json").write_text(json.dumps(record))
    if answers is None:
        return
    (run / "lm_eval" / "samples_t_facts.jsonl").write_text(
        "".join(json.dumps(_ll_sample(i)) + "\n" for i in range(2)))
    rows = [_gen_sample(i, f"q{i} :", a, t, ok) for i, (a, t, ok) in enumerate(answers)]
    rows.append(_gen_sample(0, "q0 :", "ignored", "x", True, filter_="other"))
    (run / "lm_eval" / "samples_t_qa.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))


def test_tables_give_shares_per_method_and_skip_runs_without_logs(tmp_path, capsys):
    from harness.tables import build_tables

    runs = tmp_path / "runs"
    _write_run(runs, "micro-base-a", "base", [("hape", "hape", True), ("veha", "veha", True),
                                              ("5 3", "54", False), ("", "x", False)])
    _write_run(runs, "micro-mllm-a", "mllm", [("white", "hape", False), ("", "veha", False),
                                              ("yes", "54", False), ("hape", "hape", True)])
    _write_run(runs, "micro-mllm-b", "mllm", [("red", "hape", False), ("4", "veha", False),
                                              ("1", "54", False), ("x", "hape", False)],
               seed=1)
    _write_run(runs, "micro-ties-a", "ties", None)  # no sample logs
    written = build_tables(tmp_path, plots=True)
    out = capsys.readouterr().out
    assert "without sample logs skipped: micro-ties-a" in out
    csv = pd.read_csv(tmp_path / "tables" / "generation_micro_gen.csv")
    assert list(csv.columns) == ["method", *CATEGORIES]
    assert list(csv.method) == ["Base LLM", "MLLM"]  # the run without logs is no row of zeros
    assert csv[list(CATEGORIES)].sum(axis=1).tolist() == pytest.approx([100, 100])
    base, mllm = csv.set_index("method").loc["Base LLM"], csv.set_index("method").loc["MLLM"]
    assert base.tolist() == pytest.approx([50, 25, 0, 25])
    # mllm seeds: (25, 25, 50, 0) and (0, 0, 50, 50) ("1" for "54" is a number, no count)
    assert mllm.tolist() == pytest.approx([12.5, 12.5, 50, 25])
    md = (tmp_path / "tables" / "generation_micro_gen.md").read_text()
    assert "12.5 ± 17.7" in md and "micro-ties-a" in md
    examples = (tmp_path / "tables" / "generation_micro_gen_examples.md").read_text()
    assert "| qa | q0 : | white | hape |" in examples
    assert tmp_path / "tables" / "generation_micro_gen.png" in written


def test_record_generation_and_wandb_metrics(tmp_path):
    from harness.generation.collect import record_generation
    from harness.tracking import record_metrics

    _write_run(tmp_path, "r", "mllm", [("white", "hape", False), ("hape", "hape", True)])
    record = json.loads((tmp_path / "r" / "result.json").read_text())
    gen = record_generation(record, tmp_path / "r", record["config"]["pair"])
    assert gen["rules"] == "micro" and gen["n"] == {"qa": 2, "all": 2}
    assert gen["shares"]["all"] == {"correct": 50.0, "not_known": 0.0,
                                    "context_hallucination": 50.0, "other_error": 0.0}
    metrics = record_metrics({**record, "generation": gen})
    assert metrics["generation/all/context_hallucination"] == 50.0
    assert metrics["generation/qa/correct"] == 50.0


def test_generation_suite_task_ids_and_metrics_exist_in_lm_eval():
    """Indexing only (no downloads): every task of eval=generation is in lm-eval's registry and
    declares its metric and filter."""
    from lm_eval.tasks import TaskManager
    from omegaconf import OmegaConf

    from harness.eval.suite import load_benchmarks

    benches = load_benchmarks(OmegaConf.load(ROOT / "conf" / "eval" / "generation.yaml"))
    assert {b.task for b in benches} == {"triviaqa", "nq_open", "gsm8k"}
    index = TaskManager().task_index
    for b in benches:
        assert b.task in index, b.task
        entry = index[b.task]
        text = Path(getattr(entry, "yaml_path", None) or entry["yaml_path"]).read_text()
        assert f"metric: {b.metric}" in text and "generate_until" in text, b.task
        assert b.filter in text, (b.task, b.filter)


@pytest.mark.slow
def test_micro_mllm_answers_with_visual_words_where_the_base_llm_does_not(micro_cache, tmp_path):
    """Through the real lm-eval on eval=micro_generation: the MLLM's not_known +
    context_hallucination share is far above the base LLM's, in the record and the table."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HARNESS_CACHE": str(micro_cache), "HARNESS_RESULTS": str(tmp_path),
           "HARNESS_WANDB_MODE": "disabled"}
    for method in ("base", "mllm"):
        proc = subprocess.run([sys.executable, "-m", "harness", "eval=micro_generation",
                               "eval.limit=30", f"method={method}", "merge.progress=false"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r["method"]: r for r in (json.loads(p.read_text())
                                        for p in (tmp_path / "runs").glob("*/result.json"))}
    bad = {m: r["generation"]["shares"]["all"]["not_known"]
           + r["generation"]["shares"]["all"]["context_hallucination"]
           for m, r in records.items()}
    assert bad["mllm"] >= bad["base"] + 30, bad
    from harness.tables import build_tables

    build_tables(tmp_path, plots=False)
    csv = pd.read_csv(tmp_path / "tables" / "generation_micro_micro_generation.csv",
                      index_col="method")
    assert csv.loc["MLLM", "context_hallucination"] == pytest.approx(
        records["mllm"]["generation"]["shares"]["all"]["context_hallucination"], abs=1e-3)


def test_judge_relabels_only_wrong_answers_and_needs_a_local_directory(tiny_llama, tmp_path):
    from harness.generation.judge import WRONG, Judge

    with pytest.raises(ConfigError, match="local model directory"):
        Judge(tmp_path / "absent")
    answers = pd.DataFrame([
        {"prompt": "q", "answer": "the image shows it", "reference": "a", "correct": True,
         "category": "correct"},
        {"prompt": "q", "answer": "", "reference": "a", "correct": False,
         "category": "not_known"}])
    out = Judge(tiny_llama).relabel(answers)
    assert out.category[0] == "correct" and out.category[1] in WRONG
