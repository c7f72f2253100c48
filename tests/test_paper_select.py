"""Budgeted selection (harness/selection/): the budget and the halving schedule, and
`+experiment=rehearsal_select` (paper_select with a small grid) on a twin with the rehearsal
data: the plan, the halving rounds, only the winner on paper13, the table's rule `validation`,
and the SLURM step that resumes from the records (a dry run: nothing is submitted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.selection.halving import Budget, grids_for, kept, label, ranked, schedule

ROOT = Path(__file__).resolve().parent.parent
TWIN = "twin_llava_next_llama3_8b"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_the_budget_gives_the_docs_of_each_round_and_names_bad_values():
    assert Budget(rounds=3, docs=16, growth=4).docs_per_round() == [16, 64, 256]
    assert Budget().docs_per_round() == [None]
    with pytest.raises(ConfigError, match="docs=null .* rounds=2"):
        Budget(rounds=2, docs=None)
    with pytest.raises(ConfigError, match=r"keep=1.5: use a fraction in \(0, 1\]"):
        Budget(keep=1.5)
    with pytest.raises(ConfigError, match="selection.budget.halve is not a budget key"):
        Budget.from_config({"halve": 2})


def test_the_schedule_halves_each_grid_and_stops_at_a_lone_survivor():
    sizes = {"base": 1, "ties": 9, "task_arithmetic": 4}
    rounds = schedule(sizes, Budget(rounds=3, docs=16, keep=0.5))
    assert rounds == [{"ties": 9, "task_arithmetic": 4}, {"ties": 5, "task_arithmetic": 2},
                      {"ties": 3}]
    assert [kept(n, 0.5) for n in (1, 2, 3, 9)] == [1, 1, 2, 5]


def test_ranking_is_the_tables_rule_validation():
    import pandas as pd

    from harness import tables

    entries = [({"a": 1}, 50.0, 40.0), ({"a": 2}, 50.0, 60.0), ({"a": 3}, 50.0, 60.0),
               ({"a": 0}, 45.0, 10.0), ({"a": 9}, None, None)]
    order = ranked([(p, label(p), o, lang) for p, o, lang in entries])
    assert order == [{"a": 2}, {"a": 3}, {"a": 1}, {"a": 0}, {"a": 9}]
    rows = [{"method": "m", "config": label(p), "column": c, "mean": v}
            for p, o, lang in entries[:4] for c, v in (("all", o), ("language", lang))]
    assert tables.choose_on_validation(pd.DataFrame(rows)) == {"m": label(order[0])}


def test_a_pair_may_replace_a_methods_grid():
    selection = {"grids": {"ties": {"density": [0.1, 0.2]}, "base": {}},
                 "pair_grids": {"p": {"ties": {"density": [0.5]}}}}
    assert grids_for(selection, "p") == {"ties": {"density": [0.5]}, "base": {}}
    assert grids_for(selection, "q")["ties"] == {"density": [0.1, 0.2]}


def _env(tmp_path: Path) -> dict:
    return {**os.environ, **OFFLINE, "HARNESS_RESULTS": str(tmp_path / "results"),
            "HARNESS_CACHE": str(tmp_path / "cache"), "HARNESS_WANDB_MODE": "disabled",
            "HF_HOME": str(tmp_path / "hf")}


@pytest.mark.slow
def test_paper_select_on_a_twin_halves_then_runs_only_the_winner_on_paper13(tmp_path):
    from harness.rehearsal import write_mirror

    mirror = tmp_path / "mirror"
    write_mirror(mirror, ["mmlu", "gsm8k", "arc_challenge", "hellaswag", "winogrande",
                          "truthfulqa_mc2", "mme", "mmbench", "seedbench", "pope", "textvqa",
                          "scienceqa_img", "gqa"])
    # rehearsal_select: paper_select's machinery with a small grid (task_arithmetic, 3 scales:
    # round 1 on 1 doc per task, the better 2 on 2 docs, the best on paper13; base on paper13)
    args = ["+experiment=rehearsal_select", f"pair={TWIN}", f"eval.data_root={mirror}",
            "merge.progress=false"]
    env = _env(tmp_path)

    def harness(module: str, *extra: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", module, *extra], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=2400, check=False)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc

    step = harness("harness.selection", "submit", *args, "--dry-run")
    assert "round 1: would submit 3 runs" in step.stdout, step.stdout
    assert "~selection" in step.stdout and "eval.limit=1" in step.stdout, step.stdout
    assert not (tmp_path / "results" / "slurm").exists()  # a dry run leaves no job behind

    run = harness("harness", *args)
    plan = run.stdout
    assert "round 1: 3 evaluations on paper13_val at eval.limit=1" in plan, plan
    assert "round 2: 2 evaluations on paper13_val at eval.limit=2" in plan, plan
    assert "final: 2 evaluations on paper13 (one per method); projected" in plan, plan
    recs = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*/"
                                                                                    "result.json")]
    val = sorted((r["eval_limit"], r["params"]["scale"]) for r in recs
                 if r["eval_suite"] == "paper13_val")
    outcome = json.loads((tmp_path / "results" / "selection" /
                          f"{TWIN}_paper13.json").read_text())
    second = [s[0] for s in outcome["rounds"][1]["scores"]["task_arithmetic"]]
    assert [v for v in val if v[0] == 1] == [(1, 0.3), (1, 0.5), (1, 0.7)]
    assert sorted(f"scale={s}" for lim, s in val if lim == 2) == sorted(second)
    assert len(second) == 2
    test = [r for r in recs if r["eval_suite"] == "paper13"]
    assert sorted(r["method"] for r in test) == ["base", "task_arithmetic"]
    (winner,) = [r["params"] for r in test if r["method"] == "task_arithmetic"]
    scored = {s[0]: s[1:] for s in outcome["rounds"][1]["scores"]["task_arithmetic"]}
    best = ranked([({"scale": float(k.split("=")[1])}, k, *v) for k, v in scored.items()])[0]
    assert winner == best and outcome["chosen"]["task_arithmetic"] == label(best)
    md = (tmp_path / "results" / "tables" / f"main_{TWIN}_paper13.md").read_text()
    assert "rule: validation, chosen on paper13_val by successive halving" in md, md
    assert f"Task Arithmetic: {label(best)}" in md, md

    again = harness("harness.selection", "submit", *args, "--dry-run")
    assert "selection complete" in again.stdout, again.stdout  # resumed from the records


def test_the_plan_projects_time_from_cost_records_or_says_unknown(tmp_path):
    from harness.selection.plan import plan_lines

    def record(run_id: str, suite: str, limit, cost: dict, merge_s: float) -> None:
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "result.json").write_text(json.dumps(
            {"run_id": run_id, "status": "complete", "pair": "p", "eval_suite": suite,
             "eval_limit": limit, "merge": {"seconds": merge_s},
             "cost": {b: {"seconds": s, "requests": 1} for b, s in cost.items()}}))

    record("a", "val", 4, {"x": 8.0, "y": 4.0}, 10.0)   # 3 s per doc at limit 4
    record("b", "test", None, {"x": 100.0}, 30.0)
    budget = Budget(rounds=2, docs=4, growth=2, keep=0.5)
    lines = plan_lines("p", tmp_path, "val", ["x", "y"], "test", ["x", "z"],
                       {"base": 1, "m": 3}, budget, None)
    assert "round 1: 3 evaluations on val at eval.limit=4" in lines[1]
    assert lines[1].endswith("projected 96 s")        # 3 x (12 s + 20 s median merge)
    assert "round 2: 2 evaluations on val at eval.limit=8" in lines[2]
    assert lines[2].endswith("projected 48 s")        # 2 x 24 s, merges reused
    assert "final: 2 evaluations on test" in lines[3] and "unknown" in lines[3]
    assert lines[3].endswith("z)")                    # names the benchmark without a record
    assert lines[4].startswith("  total projected: unknown") and "144 s" in lines[4]


def _write(runs: Path, pair: str, method: str, params: dict, suite: str, overall: float,
           validation: str | None = None) -> None:
    run_id = f"{pair}-{method}-{suite}-{'-'.join(f'{k}{v}' for k, v in params.items())}"
    (runs / run_id).mkdir(parents=True)
    (runs / run_id / "result.json").write_text(json.dumps(
        {"run_id": run_id, "status": "complete", "pair": pair, "method": method,
         "params": params, "seed": 0, "eval_suite": suite,
         "scores": {"l1": {"suite": "language", "percent": overall}},
         "averages": {"language": overall, "vision": None, "all": overall},
         "config": {"eval": {"validation": validation}}, "versions": {}}))


def test_the_table_shows_the_selections_choice_and_where_defaults_come_from(tmp_path):
    from harness import tables

    runs = tmp_path / "runs"
    _write(runs, "p", "base", {}, "test", 70.0, "val")
    for scale, val, test in ((0.3, 60.0, 40.0), (0.7, 50.0, 90.0)):
        _write(runs, "p", "task_arithmetic", {"scale": scale}, "test", test, "val")
        _write(runs, "p", "task_arithmetic", {"scale": scale}, "val", val)
    # the halving chose scale=0.7 on the larger sample, although the pooled records favour 0.3
    (tmp_path / "selection").mkdir()
    (tmp_path / "selection" / "p_test.json").write_text(json.dumps(
        {"pair": "p", "suite": "test", "validation": "val", "budget": {"keep": 0.5},
         "rounds": [{"limit": 16}, {"limit": 64}], "chosen": {"task_arithmetic": "scale=0.7"}}))
    tables.build_tables(tmp_path, plots=False, select="validation")
    md = (tmp_path / "tables" / "main_p_test.md").read_text()
    assert "rule: validation, chosen on val by successive halving over 2 round(s) at 16, 64" in md
    assert "Task Arithmetic: scale=0.7" in md and "Base LLM: -" in md
    tables.build_tables(tmp_path, plots=False, select="defaults")
    md = (tmp_path / "tables" / "main_p_test.md").read_text()
    assert "Method defaults (conf/method/) are micro-derived" in md
    assert "+experiment=paper_select pair=p" in md


def test_micro_select_points_are_the_runs_it_always_ran():
    """micro_select is the one-round case: its points compose to the same run ids as plain
    `eval=micro_val` runs of each configuration (so its records and choices are unchanged)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from harness import records
    from harness.selection.walk import compose_point

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        argv = ["+experiment=micro_select", "eval.limit=4"]
        point = compose_point(argv, "ties", {"density": 0.2, "scale": 1.0}, "micro_val", 4,
                              set_limit=False)
        plain = compose("config", overrides=[*argv, "method=ties", "method.params.density=0.2",
                                             "method.params.scale=1.0", "eval=micro_val"])
        assert "selection" not in point.cfg and "~selection" in point.overrides
        assert records.run_id(point.cfg) == records.run_id(plain)
        halved = compose_point(argv, "ties", {"density": 0.2}, "micro_val", 2, set_limit=True)
        assert halved.cfg.eval.limit == 2 and records.run_id(halved.cfg) != records.run_id(plain)
    GlobalHydra.instance().clear()
