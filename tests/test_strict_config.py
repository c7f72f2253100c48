"""Strict configuration: the composed config is checked against the schema before anything runs;
unknown keys (with or without `+`) name the closest valid key, bad types and ranges are named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness.config_check import check_config, config_problems
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def _problems(*overrides: str) -> list[str]:
    return config_problems(compose("config", overrides=list(overrides)))


@pytest.mark.parametrize("group", ["pair", "method", "eval"])
def test_every_option_of_every_group_passes_the_check(hydra_conf, group):
    for path in sorted((CONF / group).glob("*.yaml")):
        extra = ["pair.base=/b", "pair.mllm=/m"] if path.stem == "local" else []
        assert _problems(f"{group}={path.stem}", *extra) == [], path


def test_every_experiment_passes_the_check(hydra_conf):
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        assert _problems(f"+experiment={path.stem}") == [], path


@pytest.mark.parametrize("overrides, key, closest", [
    (["method=model_soup", "+method.alpah=0.3"], "method.alpah", "method.params.alpha"),
    (["+eval.limt=2"], "eval.limt", "eval.limit"),
    (["method=neuron_fusion", "+method.params.ratoi=0.3"], "method.params.ratoi",
     "method.params.ratio"),
    (["+merge.memry_mb=10"], "merge.memry_mb", "merge.memory_mb"),
    (["eval=micro", "+eval.benchmarks.facts.shot=2"], "eval.benchmarks.facts.shot",
     "eval.benchmarks.facts.shots"),
])
def test_an_unknown_key_names_the_closest_valid_one(hydra_conf, overrides, key, closest):
    with pytest.raises(ConfigError) as caught:
        check_config(compose("config", overrides=overrides))
    message = str(caught.value)
    assert f"unknown configuration key {key}" in message and f"did you mean {closest}?" in message
    assert "\n" not in message


@pytest.mark.parametrize("override, says", [
    ("seed=abc", "seed=abc: must be a whole number"),
    ("seed=-1", "seed=-1: must be at least 0"),
    ("force=maybe", "force=maybe: must be true or false"),
    ("stage=evaluate", "stage=evaluate: must be one of merge, eval, all"),
    ("eval.limit=0", "eval.limit=0: must be at least 1"),
    ("eval.limit=-1", "eval.limit=-1: must be at least 1"),
    ("eval.limit=abc", "eval.limit=abc: must be a whole number"),
    ("eval.limit=0.5", "eval.limit=0.5: must be a whole number"),
    ("merge.memory_mb=inf", "merge.memory_mb=inf: must be a whole number"),
    ("merge.progress=sometimes", "merge.progress=sometimes: must be true or false"),
    ("eval.batch_size=0", "eval.batch_size=0: must be at least 1"),
])
def test_types_and_ranges_are_checked(hydra_conf, override, says):
    problems = _problems(override)
    assert len(problems) == 1 and problems[0].startswith(says), problems


@pytest.mark.parametrize("method, override, says", [
    ("task_arithmetic", "method.params.scale=inf", "method.params.scale=inf: must be a finite"),
    ("task_arithmetic", "method.params.scale=nan", "method.params.scale=nan: must be a finite"),
    ("model_soup", "method.params.alpha=abc", "method.params.alpha=abc: must be a number"),
    ("model_soup", "method.params.alpha=1.5", "parameter alpha=1.5 is out of range"),
    ("dare", "method.params.seed=0.5", "method.params.seed=0.5: must be a whole number"),
])
def test_method_parameters_follow_the_registry_dataclass(hydra_conf, method, override, says):
    problems = _problems(f"method={method}", override)
    assert len(problems) == 1 and says in problems[0], problems


def test_a_required_value_left_out_is_named(hydra_conf):
    problems = _problems("pair=local", "pair.base=/b")
    assert problems == ["pair.mllm has no value: give it one on the command line (pair.mllm=...)"]


def _harness(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_RESULTS": str(tmp_path / "results"),
           "HARNESS_WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("args, says", [
    (["method=model_soup", "+method.alpah=0.3"],
     "unknown configuration key method.alpah; did you mean method.params.alpha?"),
    (["method=model_soup", "method.alpah=0.3"],
     "unknown configuration key method.alpah; did you mean method.params.alpha?"),
    (["+eval.limt=2", "eval=smoke"], "unknown configuration key eval.limt; did you mean eval.limit?"),
    (["seed=abc"], "seed=abc: must be a whole number"),
    (["method=task_arithmetic", "method.params.scale=inf"], "must be a finite number"),
    (["eval=smoke", "eval.limit=0.5"], "eval.limit=0.5: must be a whole number"),
])
def test_the_command_line_refuses_before_any_merge_in_one_line(tmp_path, args, says):
    proc = _harness(tmp_path, *args)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    assert not (tmp_path / "results" / "merges").exists()


def test_a_selection_checks_every_grid_point_before_running_one(hydra_conf, tmp_path,
                                                                  monkeypatch):
    from harness.selection import run_selection

    monkeypatch.setenv("HARNESS_RESULTS", str(tmp_path))
    overrides = ["+experiment=micro_select", "~selection.grids",
                 "+selection.grids={base:{},task_arithmetic:{scael:[0.3]},"
                 "model_soup:{alpha:[0.5,2]}}"]
    with pytest.raises(ConfigError) as caught:
        run_selection(compose("config", overrides=overrides), overrides)
    message = str(caught.value)
    assert "2 point(s) are invalid" in message and "did you mean method.params.scale?" in message
    assert "alpha=2 is out of range" in message
    assert not any(tmp_path.iterdir())  # nothing ran
