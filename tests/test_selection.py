"""Hyperparameters chosen on validation data: the tables' rule `validation`, its tie order, the
notes under a table, the trade-off plot's labels, and `+experiment=micro_select` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness import method_catalog, tables
from harness.selection import grid_points

ROOT = Path(__file__).resolve().parent.parent


def _record(runs: Path, method: str, params: dict, suite: str, lang: float, vis: float,
            validation: str | None = None, torch: str = "2.14.1") -> dict:
    run_id = f"{method}-{suite}-{'-'.join(f'{k}{v}' for k, v in sorted(params.items()))}-{torch}"
    rec = {"run_id": run_id, "status": "complete", "pair": "micro", "method": method,
           "params": params, "seed": 0, "eval_suite": suite,
           "scores": {"l1": {"suite": "language", "percent": lang},
                      "v1": {"suite": "vision", "percent": vis}},
           "averages": {"language": lang, "vision": vis, "all": (lang + vis) / 2},
           "config": {"eval": {"validation": validation}},
           "versions": {"torch": torch, "transformers": "5.24.0", "lm_eval": "0.4.13",
                        "lmms_eval": "0.7.3"}}
    (runs / run_id).mkdir(parents=True)
    (runs / run_id / "result.json").write_text(json.dumps(rec))
    return rec


def _main_table(results: Path, suite: str = "test") -> tuple[pd.DataFrame, str]:
    csv = pd.read_csv(results / "tables" / f"main_micro_{suite}.csv", index_col=0)
    return csv, (results / "tables" / f"main_micro_{suite}.md").read_text()


def test_the_configuration_best_on_test_but_not_on_validation_is_not_chosen(tmp_path):
    runs = tmp_path / "runs"
    for method in ("base", "mllm"):
        _record(runs, method, {}, "test", 80 if method == "base" else 20, 10, "val")
    # scale 0.3 is best on validation, 0.7 is best on test
    _record(runs, "task_arithmetic", {"scale": 0.3}, "val", 60, 50)
    _record(runs, "task_arithmetic", {"scale": 0.7}, "val", 40, 50)
    _record(runs, "task_arithmetic", {"scale": 0.3}, "test", 50, 50, "val")
    _record(runs, "task_arithmetic", {"scale": 0.7}, "test", 90, 90, "val")
    tables.build_tables(tmp_path, plots=False, select="validation")
    csv, md = _main_table(tmp_path)
    assert csv.loc["Task Arithmetic", "Overall avg"] == 50.0  # the test scores of scale=0.3
    assert list(csv.index) == ["Base LLM", "MLLM", "Task Arithmetic"]
    assert "rule: validation, chosen on val by overall average" in md
    assert "Task Arithmetic: scale=0.3" in md
    # the same records under best_overall pick the configuration tuned on test
    tables.build_tables(tmp_path, plots=False, select="best_overall")
    assert _main_table(tmp_path)[0].loc["Task Arithmetic", "Overall avg"] == 90.0


def test_validation_ties_go_to_language_then_to_the_configuration_label():
    rows = []
    for config, lang, overall in (("a=1", 40, 50), ("a=2", 60, 50), ("a=3", 60, 50),
                                  ("a=0", 10, 45)):
        rows += [{"method": "m", "config": config, "column": "all", "mean": overall},
                 {"method": "m", "config": config, "column": "language", "mean": lang}]
    assert tables.choose_on_validation(pd.DataFrame(rows)) == {"m": "a=2"}


def test_methods_without_a_validation_choice_are_left_out_and_named(tmp_path):
    runs = tmp_path / "runs"
    _record(runs, "base", {}, "test", 80, 10, "val")
    _record(runs, "ties", {"density": 0.2}, "test", 50, 50, "val")
    _record(runs, "dare", {"density": 0.5}, "test", 50, 50, "val")
    _record(runs, "dare", {"density": 0.1}, "val", 50, 50)
    tables.build_tables(tmp_path, plots=False, select="validation")
    csv, md = _main_table(tmp_path)
    assert list(csv.index) == ["Base LLM"]
    assert "TIES left out: no val record to choose on" in md
    assert "DARE left out: its configuration chosen on val (density=0.1) has no test record" in md


def test_a_suite_without_validation_suite_says_which_rule_it_used(tmp_path):
    _record(tmp_path / "runs", "ties", {"density": 0.2}, "test", 50, 50)
    tables.build_tables(tmp_path, plots=False, select="validation")
    assert "test names no validation suite, so best_overall" in _main_table(tmp_path)[1]


def test_records_of_different_library_releases_are_not_pooled(tmp_path):
    runs = tmp_path / "runs"
    _record(runs, "base", {}, "test", 80, 10)
    _record(runs, "mllm", {}, "test", 20, 80)
    _record(runs, "mllm", {}, "test", 30, 70, torch="2.13.0")
    tables.build_tables(tmp_path, plots=False, select="defaults")
    assert not (tmp_path / "tables" / "main_micro_test.md").exists()
    split = sorted((tmp_path / "tables").glob("main_micro_test_*.md"))
    assert len(split) == 2
    texts = [p.read_text() for p in split]
    assert all("score.versions.torch" in t for t in texts)
    (new,) = [t for t in texts if "this table has score.versions.torch=2.13.0" in t]
    assert "| MLLM | 30.0 |" in new and "Base LLM" not in new  # not averaged with 20.0
    _record(runs, "ties", {"density": 0.2}, "other", 50, 50)
    tables.build_tables(tmp_path, plots=False)
    assert "differ in their setup" not in _main_table(tmp_path, "other")[1]


def test_an_unknown_rule_names_the_valid_ones(tmp_path):
    _record(tmp_path / "runs", "base", {}, "test", 80, 10)
    with pytest.raises(Exception, match="select='best'.*defaults, best_overall, validation"):
        tables.build_tables(tmp_path, plots=False, select="best")


def test_grid_points_are_every_combination():
    assert grid_points({}) == [{}]
    assert grid_points({"scale": [0.5, 1.0], "density": [0.1, 0.2]}) == [
        {"density": 0.1, "scale": 0.5}, {"density": 0.1, "scale": 1.0},
        {"density": 0.2, "scale": 0.5}, {"density": 0.2, "scale": 1.0}]


def test_tradeoff_labels_are_shared_at_one_point_and_never_overlap():
    import matplotlib.pyplot as plt

    from harness.plots import place_labels, shared_labels

    points = pd.DataFrame({"method": ["model_soup", "task_arithmetic", "ties", "dare", "della",
                                      "breadcrumbs"],
                           "language": [60.0, 60.0, 60.4, 60.8, 61.0, 59.7],
                           "vision": [70.0, 70.0, 70.3, 69.8, 70.5, 70.2]})
    items = shared_labels(points, method_catalog.labels())
    assert "Model Soup = Task Arithmetic" in [text for _, _, text in items]
    assert len(items) == 5
    fig, ax = plt.subplots()
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    anns = place_labels(ax, items)
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in anns]
    assert not [(i, j) for i in range(len(boxes)) for j in range(i)
                if boxes[i].overlaps(boxes[j])]
    plt.close(fig)


def test_a_plot_marks_each_methods_chosen_configuration(tmp_path):
    runs = tmp_path / "runs"
    _record(runs, "task_arithmetic", {"scale": 0.3}, "val", 60, 50)
    for scale in (0.3, 0.5, 0.7):
        _record(runs, "task_arithmetic", {"scale": scale}, "test", 50 + scale, 50, "val")
    files = tables.build_tables(tmp_path, plots=True, select="validation")
    assert tmp_path / "tables" / "tradeoff_micro_test.png" in files


@pytest.mark.slow
def test_micro_select_chooses_on_validation_and_reports_test(micro_cache, tmp_path):
    env = {**os.environ, "HARNESS_CACHE": str(micro_cache), "HARNESS_RESULTS": str(tmp_path),
           "HARNESS_WANDB_MODE": "disabled"}
    grids = "{base:{},task_arithmetic:{scale:[0.3,0.7]}}"
    proc = subprocess.run([sys.executable, "-m", "harness", "+experiment=micro_select",
                           "eval.limit=4", "merge.progress=false", "~selection.grids",
                           f"+selection.grids={grids}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/result.json")]
    val = {r["params"].get("scale"): r["averages"] for r in recs
           if r["eval_suite"] == "micro_val" and r["method"] == "task_arithmetic"}
    best = max(val, key=lambda s: (val[s]["all"], val[s]["language"], -s))
    test = [r for r in recs if r["eval_suite"] == "micro" and r["method"] == "task_arithmetic"]
    assert [r["params"]["scale"] for r in test] == [best]
    md = (tmp_path / "tables" / "main_micro_micro.md").read_text()
    assert f"Task Arithmetic: scale={best}" in md and "chosen on micro_val" in md


def test_a_selection_needs_scores_and_a_validation_suite():
    from omegaconf import OmegaConf

    from harness.errors import ConfigError
    from harness.selection import run_selection

    cfg = OmegaConf.create({"stage": "merge", "eval": {"name": "micro", "validation": "v"}})
    with pytest.raises(ConfigError, match="stage=merge cannot select.*stage=all"):
        run_selection(cfg, [])
    cfg = OmegaConf.create({"stage": "all", "eval": {"name": "smoke", "validation": None}})
    with pytest.raises(ConfigError, match="eval=smoke names no validation suite"):
        run_selection(cfg, [])
