"""Tiny checkpoints, key maps and checkpoint I/O (harness/models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from harness.errors import CheckpointError
from harness.models.checkpoint import INDEX_NAME, CheckpointReader, PlannedWriter
from harness.models.keymap import LAYOUTS, detect_layout, to_base_name, to_tuned_name

NEW_NAMES = {"language_model.model.": "model.language_model.",
             "language_model.lm_head.": "lm_head.", "vision_tower.": "model.vision_tower.",
             "multi_modal_projector.": "model.multi_modal_projector.",
             "image_newline": "model.image_newline"}


def _file_tensors(directory):
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            out.update({k: fh.get_tensor(k) for k in fh.keys()})
    return out


def _as_new(name: str) -> str:
    for old, new in NEW_NAMES.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_tuned_llm"])
def test_tiny_causal_lm_loads_and_generates(request, fixture):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = request.getfixturevalue(fixture)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    state = model.state_dict()
    for name, t in _file_tensors(path).items():
        assert torch.equal(state[name], t), name
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 5
    assert tok.decode(tok("hello world")["input_ids"], skip_special_tokens=True) == "hello world"


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
@pytest.mark.parametrize("layout", ["new", "old"])
def test_tiny_llava_layouts_load_and_generate_with_images(tmp_path, tiny_llama, kind, layout):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from harness.models.tiny import build_tiny_llava

    t0 = time.perf_counter()
    path = build_tiny_llava(tmp_path / "m", tiny_llama, kind=kind, layout=layout)
    seconds = time.perf_counter() - t0
    assert seconds < 10, f"building a tiny {kind} took {seconds:.1f} s"
    files = _file_tensors(path)
    prefix = "language_model.model." if layout == "old" else "model.language_model."
    assert any(n.startswith(prefix) for n in files) and detect_layout(list(files), "t") == \
        ("llava_old" if layout == "old" else "llava_new")
    assert ("image_newline" in files or "model.image_newline" in files) == (kind == "llava_next")
    model = AutoModelForImageTextToText.from_pretrained(path)
    state = model.state_dict()
    for name, t in files.items():  # every stored tensor is loaded (none silently re-initialised)
        assert torch.equal(state[_as_new(name)], t), name
    proc = AutoProcessor.from_pretrained(path)
    text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]}],
        add_generation_prompt=True)
    assert "<image>" in text
    inputs = proc(images=Image.new("RGB", (40, 30), "blue"), text=text, return_tensors="pt")
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image > 1  # the processor expanded the placeholder to the image's feature count
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    base_vocab = json.loads((tiny_llama / "config.json").read_text())["vocab_size"]
    assert model.config.text_config.vocab_size == base_vocab + 2  # <image> and a pad token


def test_tiny_llama_tied_embeddings(tmp_path):
    from transformers import AutoModelForCausalLM

    from harness.models.tiny import build_tiny_llama

    path = build_tiny_llama(tmp_path / "tied", tie_embeddings=True, dtype="bfloat16")
    files = _file_tensors(path)
    assert "lm_head.weight" not in files
    assert files["model.embed_tokens.weight"].dtype == torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_key_maps_round_trip(layout):
    body, head = LAYOUTS[layout]
    for base_name in ("model.embed_tokens.weight", "model.layers.3.mlp.up_proj.weight",
                      "model.norm.weight", "lm_head.weight"):
        tuned = to_tuned_name(base_name, layout)
        assert tuned.startswith(body if base_name.startswith("model.") else head)
        assert to_base_name(tuned, layout) == base_name
    assert to_base_name("vision_tower.vision_model.embeddings.patch_embedding.weight",
                        layout) is None or layout == "causal_lm"
    with pytest.raises(CheckpointError, match="not a language-model tensor"):
        to_tuned_name("multi_modal_projector.linear_1.weight", layout)


def test_detect_layout():
    assert detect_layout(["language_model.model.layers.0.x", "vision_tower.y"], "t") == "llava_old"
    assert detect_layout(["model.language_model.layers.0.x", "lm_head.weight"], "t") == "llava_new"
    assert detect_layout(["model.layers.0.x", "lm_head.weight"], "t") == "causal_lm"
    with pytest.raises(CheckpointError, match="cannot find a language model in where.*enc"):
        detect_layout(["encoder.block.0.weight"], "where")


def _entries(tensors):
    return [(n, tuple(t.shape), {torch.bfloat16: "BF16", torch.float16: "F16",
                                 torch.float32: "F32", torch.int64: "I64",
                                 torch.bool: "BOOL"}[t.dtype]) for n, t in tensors.items()]


def _mixed_tensors():
    g = torch.Generator().manual_seed(0)
    return {"a.bf16": torch.randn(33, 7, generator=g).bfloat16(),
            "b.f16": torch.randn(5, generator=g).half(),
            "c.f32": torch.randn(4, 4, 3, generator=g),
            "d.i64": torch.arange(9),
            "e.bool": torch.tensor([True, False, True]),
            "f.scalar": torch.tensor(2.5),
            "g.empty": torch.zeros(0, 4)}


@pytest.mark.parametrize("shard_bytes", [0, 300, 1 << 30])
def test_planned_writer_round_trip(tmp_path, shard_bytes):
    tensors = _mixed_tensors()
    writer = PlannedWriter(tmp_path / "out", _entries(tensors), shard_bytes)
    for name in reversed(list(tensors)):  # any order: each tensor has its planned place
        writer.add(name, tensors[name])
    index = writer.close()
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    if shard_bytes == 1 << 30:
        assert files == ["model.safetensors"]
    else:
        assert INDEX_NAME in files and len(files) > 2
        assert json.loads((tmp_path / "out" / INDEX_NAME).read_text()) == index
        assert set(index["weight_map"]) == set(tensors)
    loaded = {}
    for f in (tmp_path / "out").glob("*.safetensors"):
        loaded.update(load_file(str(f)))
    reader = CheckpointReader(tmp_path / "out")
    assert set(reader.names()) == set(tensors) == set(loaded)
    for name, t in tensors.items():
        assert torch.equal(loaded[name], t) and loaded[name].dtype == t.dtype, name
        assert torch.equal(reader.get(name), t) and reader.shape(name) == tuple(t.shape), name
    assert not list((tmp_path / "out").glob(".shard-*"))


def test_planned_writer_refuses_wrong_tensors(tmp_path):
    tensors = _mixed_tensors()
    writer = PlannedWriter(tmp_path / "out", _entries(tensors), 1 << 20)
    with pytest.raises(CheckpointError, match="not in the planned output"):
        writer.add("zzz", torch.zeros(1))
    writer.add("a.bf16", tensors["a.bf16"])
    with pytest.raises(CheckpointError, match="written twice"):
        writer.add("a.bf16", tensors["a.bf16"])
    with pytest.raises(CheckpointError, match="never written"):
        writer.close()
    writer = PlannedWriter(tmp_path / "out2", _entries(tensors), 1 << 20)
    writer.add("c.f32", torch.zeros(2))  # wrong size: the writer thread fails, close reports it
    with pytest.raises(CheckpointError, match="c.f32"):
        for name in tensors:
            if name != "c.f32":
                writer.add(name, tensors[name])
        writer.close()
    writer.abort()


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        CheckpointReader(tmp_path / "missing")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="pytorch_model.bin.*safetensors"):
        CheckpointReader(tmp_path / "bin")
    good = tmp_path / "good"
    good.mkdir()
    save_file({"w": torch.ones(1000)}, str(good / "model.safetensors"))
    data = (good / "model.safetensors").read_bytes()
    (good / "model.safetensors").write_bytes(data[:-100])  # truncated
    with pytest.raises(CheckpointError, match="model.safetensors .*truncated"):
        CheckpointReader(good)
    save_file({"w": torch.ones(1000)}, str(good / "model.safetensors"))
    with pytest.raises(CheckpointError, match="tensor nope is not in"):
        CheckpointReader(good).get("nope")
    (good / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(CheckpointError, match="safetensors header of .*model.safetensors"):
        CheckpointReader(good)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / INDEX_NAME).write_text(json.dumps(
        {"weight_map": {"w": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors, which is "
                                              "missing"):
        CheckpointReader(sharded)


def test_reader_closes_its_files_quietly(tmp_path):
    """close() closes every shard file once; a reader still alive at interpreter exit closes its
    files without an "Exception ignored" message (a __del__ then found `os` torn down)."""
    save_file({"w": torch.ones(10)}, str(tmp_path / "model.safetensors"))
    reader = CheckpointReader(tmp_path)
    fds = list(reader._fds.values())
    reader.close()
    reader.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    code = ("import sys\nfrom harness.models.checkpoint import CheckpointReader\n"
            "reader = CheckpointReader(sys.argv[1])\nprint(reader.names())\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "['w']" and out.stderr == ""
