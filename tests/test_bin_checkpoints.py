"""`.bin` checkpoints: the restricted reader, the converter, and merges of `.bin` inputs, on real
tiny transformers checkpoints (written as safetensors, converted with torch.save)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness.errors import CheckpointError
from harness.merge import merge_checkpoints
from harness.models.bin_checkpoint import BIN_INDEX_NAME, safetensors_to_bin
from harness.models.checkpoint import INDEX_NAME, CheckpointReader


def _as_bin(src: Path, dst: Path, shards: int = 3) -> Path:
    """A copy of checkpoint `src` whose weights are `.bin` shards (about `shards` of them)."""
    shutil.copytree(src, dst)
    total = CheckpointReader(dst).nbytes()
    safetensors_to_bin(dst, dst, shard_bytes=max(1, total // shards))
    return dst


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_converter_writes_hub_layout_and_reader_returns_the_same_bits(tmp_path, tiny_llama):
    out = _as_bin(tiny_llama, tmp_path / "bin")
    assert not list(out.glob("*.safetensors")) and not (out / INDEX_NAME).exists()
    shards = sorted(p.name for p in out.glob("*.bin"))
    assert len(shards) >= 2 and shards[0] == f"pytorch_model-00001-of-{len(shards):05d}.bin"
    index = json.loads((out / BIN_INDEX_NAME).read_text())
    assert set(index["weight_map"].values()) == set(shards)
    ref, got = CheckpointReader(tiny_llama), CheckpointReader(out)
    assert [p.name for p in got.files] == shards
    assert set(got.names()) == set(ref.names()) == set(index["weight_map"])
    for name in ref.names():
        assert got.shape(name) == ref.shape(name)
        assert got.dtype_name(name) == ref.dtype_name(name)
        assert got.nbytes_of(name) == ref.nbytes_of(name)
        a, b = ref.get(name), got.get(name)
        assert a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    # transformers reads the converted checkpoint as the same model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    for name, t in model.state_dict().items():
        assert torch.equal(t, ref.get(name)), name


def test_reader_handles_dtypes_views_and_a_single_unindexed_file(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"bf16": torch.randn(5, 3).bfloat16(), "f16": torch.randn(7).half(),
               "i64": torch.arange(9), "empty": torch.empty(0, 4),
               "view": base[1:3], "t": base.t()}  # a slice and a transpose of one storage
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    reader = CheckpointReader(tmp_path)
    assert reader.dtype_name("bf16") == "BF16" and reader.dtype_name("i64") == "I64"
    for name, ref in tensors.items():
        got = reader.get(name)
        assert got.dtype == ref.dtype and got.shape == ref.shape and torch.equal(got, ref), name
    # other .bin files of a repository (training state) are not weights
    torch.save({"lr": torch.ones(1)}, tmp_path / "training_args.bin")
    assert "lr" not in CheckpointReader(tmp_path)


def test_safetensors_win_over_bin_in_the_same_directory(tmp_path):
    save_file({"w": torch.ones(3)}, str(tmp_path / "model.safetensors"))
    torch.save({"w": torch.zeros(3)}, tmp_path / "pytorch_model.bin")
    reader = CheckpointReader(tmp_path)
    assert [p.name for p in reader.files] == ["model.safetensors"]
    assert torch.equal(reader.get("w"), torch.ones(3))


class _WritesAFile:
    """Unpickling this runs `open(path, "w")`: the file appears (a stand-in for any code)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_malicious_pickle_is_refused_without_running(tmp_path, tiny_llava_old, legacy):
    marker = tmp_path / "side_effect"
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"model.embed_tokens.weight": torch.ones(4, 4), "x": _WritesAFile(marker)},
               evil / "pytorch_model.bin", _use_new_zipfile_serialization=not legacy)
    # the pickle really runs code when unpickled without restriction
    torch.load(evil / "pytorch_model.bin", weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError) as err:
        CheckpointReader(evil)
    msg = str(err.value)
    assert "\n" not in msg and str(evil / "pytorch_model.bin") in msg
    assert "GLOBAL io.open" in msg and "restricted unpickler" in msg
    assert not marker.exists()
    shutil.copy(tiny_llava_old / "config.json", evil / "config.json")
    with pytest.raises(CheckpointError, match="pytorch_model.bin was refused"):
        merge_checkpoints(evil, tiny_llava_old, "task_arithmetic", out=tmp_path / "m",
                          progress=False)
    assert not marker.exists() and not (tmp_path / "m").exists()


def test_bin_that_is_not_a_state_dict_is_named(tmp_path):
    for name, obj in [("nested", {"state_dict": {"w": torch.ones(2)}}),
                      ("list", [torch.ones(2)])]:
        d = tmp_path / name
        d.mkdir()
        torch.save(obj, d / "pytorch_model.bin")
        with pytest.raises(CheckpointError, match=f"{d / 'pytorch_model.bin'}.*not a"):
            CheckpointReader(d)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "pytorch_model.bin").write_bytes(b"<html>not found</html>")
    with pytest.raises(CheckpointError, match="junk/pytorch_model.bin"):
        CheckpointReader(junk)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="neither \\*.safetensors nor pytorch_model"):
        CheckpointReader(empty)
    (empty / BIN_INDEX_NAME).write_text(json.dumps(
        {"weight_map": {"w": "pytorch_model-00001-of-00002.bin"}}))
    with pytest.raises(CheckpointError, match="pytorch_model-00001-of-00002.bin, which is "
                                              "missing"):
        CheckpointReader(empty)


def test_reading_a_bin_checkpoint_keeps_memory_flat(tmp_path):
    """Each tensor's mapped pages leave the process once copied out: reading 128 MB of shards
    through one 8 MB buffer grows the resident set by far less than the shards."""
    code = """
import sys, torch
from harness.models.checkpoint import CheckpointReader
def rss():
    lines = open("/proc/self/status").read().splitlines()
    return next(int(ln.split()[1]) for ln in lines if ln.startswith("VmRSS")) // 1024
reader = CheckpointReader(sys.argv[1])
buf = torch.empty(8 * 2**20, dtype=torch.uint8)
before = rss()
for name in reader.names():
    assert reader.read_into(name, buf)[0].item() == float(name[1:])
print(rss() - before)
"""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    for shard in range(2):
        torch.save({f"t{shard * 8 + i}": torch.full((2 * 2**20,), float(shard * 8 + i))
                    for i in range(8)},
                   tmp_path / f"pytorch_model-0000{shard + 1}-of-00002.bin")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True)
    assert int(out.stdout.strip()) < 48, out.stdout


@pytest.mark.parametrize("method,params", [("task_arithmetic", {"scale": 0.5}),
                                           ("ties", {"density": 0.3}),
                                           ("dare", {"density": 0.5}),
                                           ("neuron_fusion", {"ratio": 0.1})])
def test_merge_of_bin_inputs_equals_safetensors_merge_byte_for_byte(tmp_path, tiny_llama,
                                                                   tiny_llava_old, method,
                                                                   params):
    base_bin = _as_bin(tiny_llama, tmp_path / "base_bin")
    tuned_bin = _as_bin(tiny_llava_old, tmp_path / "tuned_bin", shards=2)
    ref = merge_checkpoints(tiny_llama, tiny_llava_old, method, params, out=tmp_path / "st",
                            progress=False)
    for name, (base, tuned) in {"bin_base": (base_bin, tiny_llava_old),
                                "bin_both": (base_bin, tuned_bin)}.items():
        rep = merge_checkpoints(base, tuned, method, params, out=tmp_path / name,
                                progress=False)
        assert rep["identity"] != ref["identity"]
        for part in ("llm", "mllm"):
            want, got = _files(tmp_path / "st" / part), _files(tmp_path / name / part)
            assert want.keys() == got.keys(), (name, part)
            for f in want:
                assert want[f] == got[f], (name, part, f)


def test_merge_identity_covers_bin_files(tmp_path, tiny_llama, tiny_llava_old):
    base = _as_bin(tiny_llama, tmp_path / "base_bin")
    out = tmp_path / "merged"
    first = merge_checkpoints(base, tiny_llava_old, "task_arithmetic", out=out, progress=False)
    named = [f["file"] for f in first["inputs"]["base"]["files"]]
    assert [n for n in named if n.endswith(".bin")] == \
        sorted(p.name for p in base.glob("pytorch_model-*.bin"))
    again = merge_checkpoints(base, tiny_llava_old, "task_arithmetic", out=out, progress=False)
    assert again["identity"] == first["identity"]
    # other weights in a shard: the merge is not reused
    shard = min(base.glob("pytorch_model-*.bin"))
    tensors = torch.load(shard, weights_only=True)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    time.sleep(0.01)
    torch.save(tensors, shard)
    os.utime(shard)
    changed = merge_checkpoints(base, tiny_llava_old, "task_arithmetic", out=out,
                                progress=False)
    assert changed["identity"] != first["identity"]


def test_vicuna_twin_base_is_bin_only_as_on_the_hub_and_merges_like_safetensors(tmp_path):
    """pair=twin_llava15_vicuna_7b has a base of `.bin` shards + index only (as
    lmsys/vicuna-7b-v1.5 on main); transformers loads it, and its merge equals the merge of the
    same weights as safetensors."""
    from omegaconf import OmegaConf

    from harness.errors import ConfigError
    from harness.pairs import resolve_pair

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "pair" /
                         "twin_llava15_vicuna_7b.yaml")
    paths = OmegaConf.create({"cache": str(tmp_path / "cache")})
    pair = resolve_pair(cfg, paths)
    assert not list(pair.base.glob("*.safetensors")) and (pair.base / BIN_INDEX_NAME).is_file()
    shards = sorted(pair.base.glob("pytorch_model-*.bin"))
    assert len(shards) >= 2
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(pair.base)
    assert model.dtype == torch.float16
    as_st = tmp_path / "base_st"
    shutil.copytree(pair.base, as_st, ignore=shutil.ignore_patterns("pytorch_model*"))
    tensors = {}
    for shard in shards:
        tensors.update(torch.load(shard, weights_only=True))
    assert set(tensors) == set(model.state_dict())
    save_file(tensors, str(as_st / "model.safetensors"))
    merge_checkpoints(pair.base, pair.mllm, "task_arithmetic", out=tmp_path / "bin",
                      progress=False)
    merge_checkpoints(as_st, pair.mllm, "task_arithmetic", out=tmp_path / "st", progress=False)
    for part in ("llm", "mllm"):
        assert _files(tmp_path / "bin" / part) == _files(tmp_path / "st" / part), part
    cfg.build.base_format = "gguf"
    with pytest.raises(ConfigError, match="build.base_format='gguf'.*safetensors or bin"):
        resolve_pair(cfg, paths)
