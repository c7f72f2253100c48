"""Pair resolution: pair configs → local checkpoint directories (harness/models/pair.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.errors import CheckpointError, ConfigError
from harness.models.pair import resolve_pair

PATHS = OmegaConf.create({"cache": "/nonexistent-cache"})


def _pair(**kw):
    return OmegaConf.create({"name": "local", "source": "local", "base": "???", "mllm": "???",
                             **kw})


def test_local_pair_of_directories(tiny_llama, tiny_llava_old, tiny_tuned_llm):
    pair = resolve_pair(_pair(base=str(tiny_llama), mllm=str(tiny_llava_old)), PATHS)
    assert (pair.name, pair.base, pair.mllm, pair.multimodal) == \
        ("local", tiny_llama.resolve(), tiny_llava_old.resolve(), True)
    pair = resolve_pair(_pair(base=str(tiny_llama), mllm=str(tiny_tuned_llm)), PATHS)
    assert pair.multimodal is False


def test_local_pair_errors(tmp_path, tiny_llama):
    with pytest.raises(ConfigError, match="pair.mllm=<directory or HF id>"):
        resolve_pair(_pair(base=str(tiny_llama)), PATHS)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_pair(_pair(base=str(tiny_llama), mllm=str(tmp_path / "nope")), PATHS)
    with pytest.raises(CheckpointError, match="config.json is missing"):
        resolve_pair(_pair(base=str(tiny_llama), mllm=str(tmp_path)), PATHS)
    with pytest.raises(CheckpointError, match="hf download someorg/missing"):
        resolve_pair(_pair(base=str(tiny_llama), mllm="someorg/missing"), PATHS)
    with pytest.raises(ConfigError, match="pair.source='ftp'.*hub, local, micro or twin"):
        resolve_pair(_pair(source="ftp"), PATHS)


def _fake_hub_cache(root, repo: str, src, commit: str = "0" * 40):
    """Lay out `src` as a cached snapshot of `repo` in huggingface_hub's cache format."""
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    shutil.copytree(src, folder / "snapshots" / commit)
    return folder / "snapshots" / commit


def test_hub_pair_resolves_in_the_local_cache_only(tmp_path, monkeypatch, tiny_llama,
                                                   tiny_llava_new):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    base = _fake_hub_cache(cache, "org/base-llm", tiny_llama)
    mllm = _fake_hub_cache(cache, "org/llava", tiny_llava_new)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = OmegaConf.create({"name": "paper_pair", "source": "hub", "base": "org/base-llm",
                            "base_revision": "main", "mllm": "org/llava",
                            "mllm_revision": "main"})
    pair = resolve_pair(cfg, PATHS)
    assert (pair.base.resolve(), pair.mllm.resolve(), pair.multimodal) == \
        (base.resolve(), mllm.resolve(), True)
    cfg.mllm = "org/not-fetched"
    with pytest.raises(CheckpointError, match="python -m harness.prefetch pair=paper_pair"):
        resolve_pair(cfg, PATHS)


def test_micro_pair_comes_from_its_builder(micro_cache):
    cfg = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "pair" / "micro.yaml")
    pair = resolve_pair(cfg, OmegaConf.create({"cache": str(micro_cache)}))
    assert pair.name == "micro" and pair.multimodal is True
    assert (pair.base / "config.json").is_file() and (pair.mllm / "config.json").is_file()
