"""Pair sources: pair configs → local checkpoint directories and their content identity
(harness/pairs/, harness/models/fingerprint.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.errors import CheckpointError, ConfigError
from harness.pairs import resolve_pair

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
    with pytest.raises(ConfigError, match="pair.source=.ftp. is not valid; choose hub, local, "
                                          "micro, twin"):
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


def test_hub_checkpoints_are_named_by_their_resolved_commit(tmp_path, monkeypatch, tiny_llama,
                                                             tiny_llava_new):
    import huggingface_hub.constants

    from harness.pairs import pair_identity

    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "org/base-llm", tiny_llama, commit="a" * 40)
    _fake_hub_cache(cache, "org/llava", tiny_llava_new, commit="b" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    cfg = OmegaConf.create({"name": "paper_pair", "source": "hub", "base": "org/base-llm",
                            "base_revision": "main", "mllm": "org/llava",
                            "mllm_revision": "main"})
    ident = pair_identity(cfg)
    assert ident["base"] == {"repo": "org/base-llm", "commit": "a" * 40}
    assert ident["mllm"] == {"repo": "org/llava", "commit": "b" * 40}
    # `main` moved to another commit: another identity, with nothing else changed
    (cache / "models--org--llava" / "refs" / "main").write_text("c" * 40)
    shutil.copytree(tiny_llava_new, cache / "models--org--llava" / "snapshots" / ("c" * 40))
    assert pair_identity(cfg)["mllm"] == {"repo": "org/llava", "commit": "c" * 40}


def test_local_checkpoints_are_named_by_content_not_path(tmp_path, tiny_llama, tiny_tuned_llm):
    from harness.models.tiny import build_tiny_tuned_llm
    from harness.pairs import pair_identity

    copy = tmp_path / "copy"
    shutil.copytree(tiny_tuned_llm, copy)
    cfg = _pair(base=str(tiny_llama), mllm=str(tiny_tuned_llm))
    ident = pair_identity(cfg)
    assert ident["mllm"]["fingerprint"].startswith("sha256:")
    assert "path" not in str(ident)
    # the same files elsewhere: the same identity
    assert pair_identity(_pair(base=str(tiny_llama), mllm=str(copy))) == ident
    # rebuilt in place with other weights: another identity, though path and sizes are the same
    build_tiny_tuned_llm(copy, tiny_llama, seed=7)
    other = pair_identity(_pair(base=str(tiny_llama), mllm=str(copy)))
    assert other["mllm"]["bytes"] == ident["mllm"]["bytes"]
    assert other["mllm"]["fingerprint"] != ident["mllm"]["fingerprint"]
    # a missing directory is named as missing (resolving the pair then fails)
    assert pair_identity(_pair(base=str(tiny_llama), mllm=str(tmp_path / "nope")))["mllm"] == \
        {"ref": str(tmp_path / "nope"), "revision": None, "missing": True}


def test_fingerprint_hashes_a_file_once_until_it_changes(tmp_path, monkeypatch):
    from harness.models import fingerprint as fp

    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"x" * 1000)
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    calls = []
    real = fp._sha256
    monkeypatch.setattr(fp, "_sha256", lambda p: calls.append(p.name) or real(p))
    first = fp.fingerprint(weights.parent, [weights], cache=tmp_path / "cache")
    assert sorted(calls) == ["config.json", "model.safetensors"]
    calls.clear()
    assert fp.fingerprint(weights.parent, [weights], cache=tmp_path / "cache") == first
    assert calls == ["config.json"]  # the weights come from the cache
    weights.write_bytes(b"y" * 1000)  # same size, new content and mtime
    second = fp.fingerprint(weights.parent, [weights], cache=tmp_path / "cache")
    assert "model.safetensors" in calls and second["digest"] != first["digest"]


def test_a_local_pair_is_named_after_its_paths(tmp_path):
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        a = compose("config", overrides=["pair=local", "pair.base=/x/base", "pair.mllm=/x/llava"])
        b = compose("config", overrides=["pair=local", "pair.base=/y/base", "pair.mllm=/y/llava"])
        named = compose("config", overrides=["pair=local", "pair.base=/x/base",
                                             "pair.mllm=/x/llava", "pair.name=mine"])
    assert a.pair.name.startswith("local-llava-") and b.pair.name.startswith("local-llava-")
    assert a.pair.name != b.pair.name
    assert named.pair.name == "mine"


def test_an_hf_cache_blob_is_named_by_its_sha256_without_reading_it(tmp_path, monkeypatch):
    import hashlib

    from harness.models import fingerprint as fp

    data = b"weights" * 100
    blob = tmp_path / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir()
    blob.write_bytes(data)
    snap = tmp_path / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(blob)
    monkeypatch.setattr(fp, "_sha256", lambda p: pytest.fail(f"{p} was read"))
    assert fp.file_sha256(snap / "model.safetensors", cache=tmp_path / "c") == blob.name
