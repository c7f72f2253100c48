"""One module owns where results and the cache live (harness/paths.py); conf/ reads it."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from harness import paths

CONF = Path(__file__).resolve().parent.parent / "conf"


def _paths(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides)).paths


def test_the_config_and_the_module_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_RESULTS", str(tmp_path / "r"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "c"))
    cfg = _paths()
    assert Path(cfg.results) == paths.results_root() == tmp_path / "r"
    assert Path(cfg.runs) == paths.runs_dir() == tmp_path / "r" / "runs"
    assert Path(cfg.merges) == paths.merges_dir() and Path(cfg.tables) == paths.tables_dir()
    assert Path(cfg.cache) == paths.cache_root() == tmp_path / "c"
    # paths.results=DIR for one run moves runs, merges and tables with it
    moved = _paths([f"paths.results={tmp_path / 'x'}"])
    assert Path(moved.runs) == tmp_path / "x" / "runs"


def test_defaults_without_the_variables(monkeypatch):
    monkeypatch.delenv("HARNESS_RESULTS", raising=False)
    monkeypatch.setenv("HARNESS_CACHE", "")
    cfg = _paths()
    assert (cfg.results, cfg.runs, cfg.cache) == ("results", "results/runs", ".cache/harness")
