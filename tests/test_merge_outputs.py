"""Merge outputs and their lifecycle: manifests, shared merges under a lock, tied embeddings,
sharded and mixed-dtype inputs, Neuron-Fusion's scope through the engine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.errors import MergeError
from harness.merge import load_merge_report, merge_checkpoints
from harness.merge.outputs import check_free_disk

REPORT_KEYS = {"status", "method", "params", "seed", "inputs", "identity", "counts",
               "neurons_located", "seconds", "peak_rss_mb", "device", "versions", "layout",
               "multimodal"}


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(Path(directory).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_report_and_files_of_a_multimodal_merge(tmp_path, tiny_llama, tiny_llava_next):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    out = tmp_path / "nf"
    report = merge_checkpoints(tiny_llama, tiny_llava_next, "neuron_fusion",
                               {"ratio": 0.25, "scope": "ffn", "suppress": 0.5,
                                "others_scale": 0.75}, out=out, progress=False)
    assert REPORT_KEYS <= set(report) and report["status"] == "complete"
    assert json.loads((out / "merge.json").read_text()) == report == load_merge_report(out)
    assert report["params"]["scope"] == ["ffn"]
    assert report["neurons_located"] == {"0": {"ffn": 32}, "1": {"ffn": 32}}  # 0.25 · 128
    located = json.loads((out / "neurons_located.json").read_text())
    assert len(located["1"]["ffn"]) == 32
    # attention is outside scope=ffn: base + others_scale·Δ
    base_w, tuned_w, llm_w = _weights(tiny_llama), _weights(tiny_llava_next), _weights(out / "llm")
    q = "model.layers.1.self_attn.q_proj.weight"
    torch.testing.assert_close(llm_w[q], torch.lerp(base_w[q], tuned_w["language_model." + q],
                                                    0.75))
    # a located FFN neuron keeps its full Δ, another gets suppress·Δ
    up = "model.layers.1.mlp.up_proj.weight"
    k = located["1"]["ffn"][0]
    other = next(i for i in range(128) if i not in located["1"]["ffn"])
    torch.testing.assert_close(llm_w[up][k], tuned_w["language_model." + up][k])
    torch.testing.assert_close(llm_w[up][other],
                               torch.lerp(base_w[up][other], tuned_w["language_model." + up][other],
                                          0.5))
    # every non-weight file of the tuned model is in out/mllm; out/llm has the tuned tokenizer
    # (config.json declaring the dtypes written: dtype and torch_dtype, the text_config's too)
    for f in tiny_llava_next.iterdir():
        if f.suffix != ".safetensors" and f.name != "config.json":
            assert (out / "mllm" / f.name).read_bytes() == f.read_bytes(), f.name
    written, tuned = (json.loads(p.read_text()) for p in (out / "mllm" / "config.json",
                                                            tiny_llava_next / "config.json"))
    for c in (written, written["text_config"]):
        assert c.pop("dtype") == c.pop("torch_dtype") == "float32"
    for c in (tuned, tuned["text_config"]):
        c.pop("dtype", None), c.pop("torch_dtype", None)
    assert written == tuned
    tok = AutoTokenizer.from_pretrained(out / "llm")
    assert "<image>" in tok.get_vocab() and (out / "llm" / "generation_config.json").is_file()
    cfg = json.loads((out / "llm" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["vocab_size"] == llm_w["model.embed_tokens.weight"].shape[0]
    # out/mllm generates from an image and text
    model = AutoModelForImageTextToText.from_pretrained(out / "mllm")
    proc = AutoProcessor.from_pretrained(out / "mllm")
    text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "colour?"}]}],
        add_generation_prompt=True)
    inputs = proc(images=Image.new("RGB", (64, 40), "green"), text=text, return_tensors="pt")
    gen = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert gen.shape[1] == inputs["input_ids"].shape[1] + 3


def test_tied_base_embeddings(tmp_path):
    from transformers import AutoModelForCausalLM

    from harness.models.tiny import build_tiny_llama, build_tiny_llava, build_tiny_tuned_llm

    base = build_tiny_llama(tmp_path / "tied", tie_embeddings=True)
    llava = build_tiny_llava(tmp_path / "llava", base, layout="old")
    report = merge_checkpoints(base, llava, "task_arithmetic", {"scale": 0.5},
                               out=tmp_path / "m1", progress=False)
    assert report["counts"]["unmatched"] == 0
    b, t, o = _weights(base), _weights(llava), _weights(tmp_path / "m1" / "llm")
    emb = b["model.embed_tokens.weight"]
    rows = emb.shape[0]
    # the untied tuned head is merged against the base's (tied) embeddings
    torch.testing.assert_close(o["lm_head.weight"][:rows],
                               torch.lerp(emb, t["language_model.lm_head.weight"][:rows], 0.5))
    assert torch.equal(o["lm_head.weight"][rows:], t["language_model.lm_head.weight"][rows:])
    AutoModelForCausalLM.from_pretrained(tmp_path / "m1" / "llm")
    tuned = build_tiny_tuned_llm(tmp_path / "tuned", base)  # tied on both sides
    merge_checkpoints(base, tuned, "ties", {"density": 0.5}, out=tmp_path / "m2",
                      progress=False)
    assert "lm_head.weight" not in _weights(tmp_path / "m2" / "llm")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m2" / "llm")
    assert model.config.tie_word_embeddings
    torch.testing.assert_close(model.lm_head.weight,
                               _weights(tmp_path / "m2" / "llm")["model.embed_tokens.weight"])


def test_sharded_and_mixed_dtype_inputs(tmp_path, tiny_llava_new):
    """A bf16 base with a float32 LLaVA whose weights are sharded: the output keeps the tuned
    dtype, and a sharded input merges exactly like the same weights in one file."""
    from harness.models.tiny import build_tiny_llama

    base16 = build_tiny_llama(tmp_path / "base16", dtype="bfloat16")
    sharded = tmp_path / "sharded"
    merge_checkpoints(base16, tiny_llava_new, "mllm", {}, out=sharded, shard_size_mb=0,
                      progress=False)
    assert len(list((sharded / "mllm").glob("model-*.safetensors"))) > 5
    one = merge_checkpoints(base16, tiny_llava_new, "dare", {"density": 0.5},
                            out=tmp_path / "one", seed=5, progress=False)
    two = merge_checkpoints(base16, sharded / "mllm", "dare", {"density": 0.5},
                            out=tmp_path / "two", seed=5, progress=False)
    assert one["counts"] == two["counts"]
    a, b = _weights(tmp_path / "one" / "mllm"), _weights(tmp_path / "two" / "mllm")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert a["lm_head.weight"].dtype == torch.float32


_HELD_MERGE = """
import logging, os, sys, time, json
import harness.merge.engine as e
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
go = sys.argv[4]
orig = e._merge_unit
def merge_unit(*a, **k):
    # holds the merge (and its lock) until the test says go: never finished too early
    deadline = time.time() + 300
    while go and not os.path.exists(go) and time.time() < deadline:
        time.sleep(0.05)
    return orig(*a, **k)
e._merge_unit = merge_unit
report = e.merge_checkpoints(sys.argv[1], sys.argv[2], "ties", {"density": 0.3}, out=sys.argv[3],
                             progress=False)
print(json.dumps(report["identity"]))
"""


def _wait_for(check, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not check():
        time.sleep(0.05)
    assert check(), what


def test_concurrent_callers_share_one_merge(tmp_path, tiny_llama, tiny_llava_new):
    """A second caller with the same `out` waits on the lock, then reuses the finished merge
    (SLURM array tasks that need the same merge). The first merge is held until the second
    is seen waiting, so the order does not depend on timing."""
    out, go = tmp_path / "shared", tmp_path / "go"
    args = [sys.executable, "-c", _HELD_MERGE, str(tiny_llama), str(tiny_llava_new), str(out)]
    first = subprocess.Popen(args + [str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    _wait_for(lambda: list(tmp_path.glob(".shared.tmp-*")), "the first merge never started")
    err2 = tmp_path / "second.err"
    with open(err2, "w") as fh:
        second = subprocess.Popen(args + [""], stdout=subprocess.PIPE, stderr=fh, text=True)
        _wait_for(lambda: "another process is writing" in err2.read_text(),
                  "the second caller never waited on the lock")
        go.touch()
        out2, _ = second.communicate(timeout=300)
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err1[-2000:] + err2.read_text()
    assert "reusing complete merge" in err2.read_text() and "reusing" not in err1
    assert out1 == out2 and load_merge_report(out) is not None
    assert not list(tmp_path.glob(".shared.*tmp*"))


def test_leftovers_of_killed_merges_are_removed(tmp_path, tiny_llama, tiny_llava_new):
    stale = tmp_path / ".m.tmp-999999"
    (stale / "llm").mkdir(parents=True)
    (stale / "merge.json").write_text('{"status": "complete"}')
    (tmp_path / ".m.old-999999").mkdir()
    merge_checkpoints(tiny_llama, tiny_llava_new, "base", {}, out=tmp_path / "m", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]


def test_incomplete_output_is_not_reused(tmp_path, tiny_llama, tiny_llava_new):
    out = tmp_path / "m"
    merge_checkpoints(tiny_llama, tiny_llava_new, "model_soup", {}, out=out, progress=False)
    report = json.loads((out / "merge.json").read_text())
    report["status"] = "running"
    (out / "merge.json").write_text(json.dumps(report))
    assert load_merge_report(out) is None
    again = merge_checkpoints(tiny_llama, tiny_llava_new, "model_soup", {}, out=out,
                              progress=False)
    assert again["status"] == "complete" and load_merge_report(out) is not None
    # other params → a different identity → recomputed, never reused
    other = merge_checkpoints(tiny_llama, tiny_llava_new, "model_soup", {"alpha": 0.9}, out=out,
                              progress=False)
    assert other["identity"] != again["identity"] and other["params"] == {"alpha": 0.9}


def test_free_disk_is_checked(tmp_path):
    check_free_disk(tmp_path, 1024)
    with pytest.raises(MergeError, match=f"not enough free disk in {tmp_path}.*paths.merges"):
        check_free_disk(tmp_path, 1 << 60)


def test_nan_in_base_is_named(tmp_path, tiny_llava_new):
    from safetensors.torch import save_file

    from harness.models.tiny import build_tiny_llama

    base = build_tiny_llama(tmp_path / "base")
    w = _weights(base)
    w["model.norm.weight"][3] = float("nan")
    save_file(w, str(base / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MergeError, match="model.language_model.norm.weight has NaN or Inf"):
        merge_checkpoints(base, tiny_llava_new, "ties", {}, out=tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()


MULTIMODAL_ONLY = ("{% for m in messages %}<|{{ m['role'] }}|>{% for c in m['content'] %}"
                   "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}\n"
                   "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_llm_output_keeps_a_chat_template_that_keeps_plain_text(tmp_path, tiny_llama,
                                                                 tiny_llava_new):
    """A tuned model whose chat_template.jinja is a processor's multimodal template (it drops a
    plain-string message): out/llm takes the base LLM's template; out/mllm keeps the tuned one."""
    import shutil

    from transformers import AutoTokenizer

    from harness.merge.outputs import PROBE, keeps_text

    tuned = tmp_path / "tuned"
    shutil.copytree(tiny_llava_new, tuned)
    (tuned / "chat_template.jinja").write_text(MULTIMODAL_ONLY)
    assert not keeps_text(MULTIMODAL_ONLY)
    out = tmp_path / "ta"
    merge_checkpoints(tiny_llama, tuned, "task_arithmetic", {}, out=out, progress=False)
    assert (out / "mllm" / "chat_template.jinja").read_text() == MULTIMODAL_ONLY
    text = AutoTokenizer.from_pretrained(out / "llm").apply_chat_template(
        [{"role": "user", "content": PROBE}], tokenize=False, add_generation_prompt=True)
    assert PROBE in text
    base = AutoTokenizer.from_pretrained(tiny_llama).apply_chat_template(
        [{"role": "user", "content": PROBE}], tokenize=False, add_generation_prompt=True)
    assert text == base
    # a template that keeps plain text is the tuned model's own, unchanged
    merge_checkpoints(tiny_llama, tiny_llava_new, "task_arithmetic", {}, out=tmp_path / "ok",
                      progress=False)
    assert (tmp_path / "ok" / "llm" / "chat_template.jinja").read_bytes() == \
        (tiny_llava_new / "chat_template.jinja").read_bytes()
