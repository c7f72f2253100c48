"""Answers of finished runs, read from the per-sample logs each run already wrote
(`<run dir>/lm_eval/samples_<task>.jsonl`), one row per answer with its category.

Only generative language benchmarks are classified (lm-eval samples whose request carries
generation arguments); a benchmark's rows are those of its filter. The task's own metric in the
sample decides `correct` (on the filtered answer); the rules read the model's raw response. A record whose run directory holds no sample log for a language
benchmark is skipped and named, never counted as zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.errors import EvalError
from harness.generation.classify import Rules, classify

COLUMNS = ["run_id", "pair", "suite", "method", "benchmark", "task", "doc_id", "prompt",
           "answer", "reference", "correct", "category"]


def samples_path(run_dir: Path, task: str) -> Path:
    """Where the lm-eval runner writes the sample log of a task."""
    return Path(run_dir) / "lm_eval" / f"samples_{task}.jsonl"


def _text(value) -> str:
    while isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return "" if value is None else str(value)


def is_generative(sample: dict) -> bool:
    """Whether an lm-eval sample is a generate_until request (its arguments end in a dict of
    generation settings; loglikelihood requests are pairs of strings)."""
    args = sample.get("arguments") or []
    first = args[0] if args else None
    if isinstance(first, dict):  # some releases log {"gen_args_0": {...}, ...}
        first = list(first.values())
    return isinstance(first, (list, tuple)) and len(first) > 1 and isinstance(first[-1], dict)


def _prompt(sample: dict) -> str:
    args = sample.get("arguments") or []
    first = args[0] if args else ""
    if isinstance(first, dict):
        first = list(first.values())
    if isinstance(first, (list, tuple)):
        first = first[0] if first else ""
    if isinstance(first, dict):
        first = first.get("arg_0", "")
    return str(first)


def read_samples(path: Path) -> list[dict]:
    """The rows of one sample log (EvalError naming the file when a line does not parse)."""
    rows = []
    with open(path) as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as err:
                    raise EvalError(f"{path}:{i} is not JSON ({err}); rerun that run with "
                                    f"force=true to rewrite its sample logs") from None
    return rows


def benchmark_answers(samples: list[dict], metric: str, filter_: str, rules: Rules,
                      where: str = "") -> list[dict]:
    """Rows (doc_id, prompt, answer, reference, correct, category) of one benchmark's samples;
    [] when the benchmark is not generative."""
    rows = []
    for s in samples:
        if not is_generative(s) or s.get("filter", "none") != filter_:
            continue
        if metric not in s:
            raise EvalError(f"{where}: sample {s.get('doc_id')} has no metric {metric!r} "
                            f"(it has {sorted(k for k in s if k in s.get('metrics', []))}); "
                            f"check the benchmark's metric in the suite file")
        # the model's own text: a filter may have reduced it (gsm8k strict-match keeps only
        # the extracted number), which would hide a declining or context phrase
        answer = _text(s.get("resps", s.get("filtered_resps")))
        reference = _text(s.get("target"))
        correct = bool(float(s[metric]) > 0)
        rows.append({"doc_id": s.get("doc_id"), "prompt": _prompt(s), "answer": answer,
                     "reference": reference, "correct": correct,
                     "category": classify(answer, correct, rules, reference)})
    return rows


def language_benchmarks(record: dict) -> dict[str, dict]:
    """The lm-eval benchmarks of a record: name -> score entry."""
    return {b: s for b, s in (record.get("scores") or {}).items() if s.get("tool") == "lm-eval"}


def has_sample_logs(record: dict, run_dir: Path) -> bool:
    """Whether the run directory holds the sample log of every lm-eval benchmark of a record."""
    return all(samples_path(run_dir, s["task"]).is_file()
               for s in language_benchmarks(record).values())


def record_answers(record: dict, run_dir: Path, rules: Rules) -> list[dict] | None:
    """Classified answers of every generative language benchmark of a record; None when the run
    directory lacks the sample log of one of its lm-eval benchmarks."""
    if not has_sample_logs(record, run_dir):
        return None
    out = []
    base = {k: record.get(k) for k in ("run_id", "pair", "method")}
    base["suite"] = record.get("eval_suite")
    for bench, score in language_benchmarks(record).items():
        path = samples_path(run_dir, score["task"])
        filter_ = _filter_of(record, bench)
        for row in benchmark_answers(read_samples(path), score["metric"], filter_, rules,
                                     str(path)):
            out.append({**base, "benchmark": bench, "task": score["task"], **row})
    return out


def _filter_of(record: dict, bench: str) -> str:
    spec = (((record.get("config") or {}).get("eval") or {}).get("benchmarks") or {}).get(bench)
    return (spec or {}).get("filter", "none")


def answers_frame(records: list[dict], runs_dir: Path, rules_of) -> tuple[pd.DataFrame,
                                                                          list[str]]:
    """(long frame of classified answers, run ids skipped for lack of sample logs).
    `rules_of(record)` gives the Rules of a record's pair."""
    rows, skipped = [], []
    for rec in records:
        run_dir = Path(runs_dir) / str(rec.get("run_id"))
        if not language_benchmarks(rec):
            continue
        if not has_sample_logs(rec, run_dir):
            skipped.append(str(rec.get("run_id")))
            continue
        rows += record_answers(rec, run_dir, rules_of(rec))
    return pd.DataFrame(rows, columns=COLUMNS), skipped


def record_generation(record: dict, run_dir: Path, pair: dict) -> dict:
    """The category shares (percent, rule-based) of a finished run's generative answers, for
    its record and W&B: {"rules": name, "shares": {benchmark | "all": {category: percent}},
    "n": {benchmark | "all": answers}}; {} when the run has no generative language benchmark."""
    from harness.generation.report import shares_of
    from harness.generation.rules import rules_for

    if not language_benchmarks(record):
        return {}
    rules = rules_for(pair)
    answers = record_answers(record, run_dir, rules)
    if not answers:
        return {}
    frame = pd.DataFrame(answers, columns=COLUMNS)
    groups = dict(iter(frame.groupby("benchmark", sort=False)))
    groups["all"] = frame
    return {"rules": rules.name, "shares": {b: shares_of(sub) for b, sub in groups.items()},
            "n": {b: len(sub) for b, sub in groups.items()}}
