"""Every config file in conf/ composes, so a typo in conf/ fails CI rather than a user's run."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from harness import records
from harness.merge.buffers import MEMORY_MB

CONF = Path(__file__).resolve().parent.parent / "conf"


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


def test_default_config_composes_and_has_an_id():
    cfg = _compose([])
    assert cfg.stage in ("merge", "eval", "all")
    assert records.run_id(cfg).startswith(f"{cfg.pair.name}-{cfg.method.name}-")
    assert cfg.merge.memory_mb == MEMORY_MB  # the CLI's budget is the engine's and the bench's


@pytest.mark.parametrize("name", _names("method"))
def test_method_config_composes(name):
    cfg = _compose([f"method={name}"])
    assert cfg.method.name == name
    assert isinstance(OmegaConf.to_container(cfg.method.params), dict)


@pytest.mark.parametrize("name", [n for n in _names("pair") if n != "local"])
def test_pair_config_composes(name):
    cfg = _compose([f"pair={name}"])
    assert cfg.pair.name == name
    assert cfg.pair.source in ("hub", "local", "micro", "twin")


def test_local_pair_needs_both_directories():
    cfg = _compose(["pair=local", "pair.base=/a", "pair.mllm=/b"])
    assert (cfg.pair.base, cfg.pair.mllm) == ("/a", "/b")


@pytest.mark.parametrize("name", _names("eval"))
def test_eval_suite_composes(name):
    cfg = _compose([f"eval={name}"])
    assert cfg.eval.name == name
    for bench, spec in (cfg.eval.benchmarks or {}).items():
        assert spec.suite in ("language", "vision"), bench
        assert spec.tool in ("lm-eval", "lmms-eval"), bench


@pytest.mark.parametrize("name", _names("experiment"))
def test_experiment_composes(name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_"), f"{name}.yaml must start with '# @package _global_'"
    cfg = _compose([f"+experiment={name}"])
    OmegaConf.to_container(cfg, resolve=False)
    assert cfg.experiment_name != "adhoc", f"experiment {name} must set experiment_name"


def test_run_id_depends_on_what_determines_the_result():
    a = records.run_id(_compose(["method=mllm"]))
    assert a == records.run_id(_compose(["method=mllm", "eval.batch_size=1"]))
    assert a != records.run_id(_compose(["method=mllm", "seed=1"]))
    assert a != records.run_id(_compose(["method=mllm", "eval.limit=3"]))


@pytest.mark.parametrize("library", records.SCORE_LIBRARIES)
def test_run_id_changes_with_a_scoring_library_release(monkeypatch, library):
    import harness.versions

    cfg = _compose(["method=mllm", "eval=micro"])
    before = records.run_id(cfg)
    real = harness.versions.library_versions
    monkeypatch.setattr(harness.versions, "library_versions",
                        lambda: {**real(), library: "0.0.1"})
    assert records.run_id(cfg) != before


def test_micro_merges_and_runs_change_with_the_numerics_that_build_the_pair(monkeypatch):
    cfg = _compose(["method=task_arithmetic", "eval=micro"])
    run, merge = records.run_id(cfg), records.merge_id(cfg)
    monkeypatch.setenv("HARNESS_CPU_NUMERICS", "native")
    assert records.run_id(cfg) != run and records.merge_id(cfg) != merge


def test_run_id_changes_with_the_method_revision_and_the_draws(monkeypatch):
    import dataclasses

    from harness.merge import randomness, registry

    registry.get_method("dare")
    for method in ("ties", "dare"):
        cfg = _compose([f"method={method}", "eval=micro"])
        before, merge_before = records.run_id(cfg), records.merge_id(cfg)
        assert records.run_id(cfg) == before  # the same config twice: the same record
        spec = registry.METHODS[method]
        monkeypatch.setitem(registry.METHODS, method,
                            dataclasses.replace(spec, revision=f"{spec.revision}-next"))
        assert records.run_id(cfg) != before and records.merge_id(cfg) != merge_before
        monkeypatch.setitem(registry.METHODS, method, spec)
        assert records.run_id(cfg) == before
    dare, ties = (_compose([f"method={m}", "eval=micro"]) for m in ("dare", "ties"))
    dare_id, ties_id = records.run_id(dare), records.run_id(ties)
    monkeypatch.setattr(randomness, "DRAWS", "splitmix64-v3")
    assert records.run_id(dare) != dare_id
    assert records.run_id(ties) == ties_id  # not stochastic: the draws do not enter


def test_run_id_changes_with_the_chat_template_and_method_defaults():
    a = _compose(["method=ties", "eval=micro"])
    assert records.run_id(a) != records.run_id(_compose(["method=ties", "eval=micro",
                                                         "eval.chat_template=true"]))
    # a default written out is the same configuration
    from harness.merge.registry import default_params, get_method

    density = default_params(get_method("ties"))["density"]
    assert records.run_id(a) == records.run_id(
        _compose(["method=ties", "eval=micro", f"method.params.density={density}"]))


def test_run_id_changes_with_a_local_task_file(tmp_path):
    import shutil

    from harness.eval.suite import task_paths

    cfg = _compose(["method=mllm", "eval=micro"])
    copies = []
    for i, path in enumerate(task_paths(cfg.eval)):
        copies.append(tmp_path / str(i))
        shutil.copytree(path, copies[-1])
    cfg = _compose(["method=mllm", "eval=micro", f"eval.task_paths=[{copies[0]},{copies[1]}]"])
    before = records.run_id(cfg)
    assert records.run_id(cfg) == before
    task = sorted(copies[0].glob("*.yaml"))[0]
    task.write_text(task.read_text() + "\n# edited\n")
    assert records.run_id(cfg) != before


def test_the_merge_engine_and_the_records_share_the_method_identity(tiny_llama, tiny_tuned_llm,
                                                                    tmp_path):
    from harness.merge import merge_checkpoints
    from harness.pipeline import method_params

    cfg = _compose(["method=dare", "method.params.density=0.3"])
    report = merge_checkpoints(base=tiny_llama, mllm=tiny_tuned_llm, method="dare",
                               params=method_params(cfg), out=tmp_path / "m", seed=0,
                               progress=False)
    merge = records.merge_identity(cfg)
    assert {k: report["inputs"][k] for k in merge if k != "pair"} == \
        {k: v for k, v in merge.items() if k != "pair"}
