"""Integration tests of the streaming merge engine on tiny LLaMA / LLaVA / LLaVA-NeXT pairs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.errors import CheckpointError, ConfigError, MergeError
from harness.merge import load_merge_report, merge_checkpoints
from harness.merge.accel import fused_for
from harness.merge.apply import merge_group, merge_tensor
from harness.merge.registry import get_method, load_methods, make_params
from harness.merge.stream import MergeContext
from harness.models.keymap import detect_layout, to_base_name

PARAMS = {"model_soup": {"alpha": 0.3}, "task_arithmetic": {"scale": 0.5},
          "ties": {"density": 0.3}, "dare": {"density": 0.5},
          "breadcrumbs": {"density": 0.3, "gamma": 0.05},
          "della": {"density": 0.4, "epsilon": 0.1}, "neuron_fusion": {"ratio": 0.1}}
METHODS = {name: PARAMS.get(name, {}) for name in load_methods()}  # every registered method


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(Path(directory).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _merge(tmp_path, base, tuned, method, params=None, **kw):
    return merge_checkpoints(base=base, mllm=tuned, method=method, params=params or {},
                             out=tmp_path / f"{method}", progress=False, **kw)


def _reference(base_dir, tuned_dir, method, params, seed=0):
    """A plain in-memory merge of the language model (whole state dicts, no streaming)."""
    base, tuned = _weights(base_dir), _weights(tuned_dir)
    layout = detect_layout(list(tuned), "test")
    spec = get_method(method)
    p = make_params(spec, params)
    out = {}
    if spec.kind == "group":
        from harness.merge.neurons import parse_role
        layers = {}
        for name in tuned:
            bn = to_base_name(name, layout)
            role = parse_role(bn) if bn else None
            if role:
                fam = "ffn" if role[1] in ("gate", "up", "down") else "attn"
                layers.setdefault((role[0], fam), {})[role[1]] = (name, bn)
        for group in layers.values():
            merged = {r: tuned[n].float().clone() for r, (n, _) in group.items()}
            merge_group(spec, {r: base[bn].float() for r, (_, bn) in group.items()}, merged, p,
                        MergeContext(seed))
            out.update({n: merged[r] for r, (n, _) in group.items()})
    for name, t in tuned.items():
        bn = to_base_name(name, layout)
        if name in out or bn is None or bn not in base:
            out.setdefault(name, t)
            continue
        rows = base[bn].shape[0]
        merged = merge_tensor(spec, base[bn].float(), t[:rows].float().clone(), p,
                              MergeContext(seed, bn)).to(t.dtype)
        out[name] = torch.cat([merged, t[rows:]]) if t.shape[0] > rows else merged
    return out


@pytest.mark.parametrize("method", sorted(METHODS))
def test_streaming_equals_in_memory_merge(tmp_path, tiny_llama, tiny_llava_new, method):
    report = _merge(tmp_path, tiny_llama, tiny_llava_new, method, METHODS[method])
    assert report["status"] == "complete"
    got = _weights(tmp_path / method / "mllm")
    want = _reference(tiny_llama, tiny_llava_new, method, METHODS[method])
    assert sorted(got) == sorted(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name


@pytest.mark.parametrize("fixture", ["tiny_llava_old", "tiny_llava_next", "tiny_tuned_llm"])
@pytest.mark.parametrize("method", ["ties", "della", "neuron_fusion"])
def test_streaming_equals_in_memory_merge_other_layouts(tmp_path, request, tiny_llama, fixture,
                                                        method):
    tuned = request.getfixturevalue(fixture)
    _merge(tmp_path, tiny_llama, tuned, method, METHODS[method], seed=3)
    got = _weights(tmp_path / method / ("llm" if fixture == "tiny_tuned_llm" else "mllm"))
    want = _reference(tiny_llama, tuned, method, METHODS[method], seed=3)
    assert sorted(got) == sorted(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name


@pytest.mark.parametrize("method", sorted(m for m, spec in load_methods().items()
                                          if fused_for(spec)))
def test_kernel_settings_give_the_same_files(tmp_path, tiny_llama, tiny_llava_new, method):
    """merge.kernels=torch, fused and auto (fused once loaded in the background) write the same
    bytes; an unknown setting is a ConfigError naming the valid ones."""
    files = {}
    for kernels in ("torch", "fused", "auto"):
        out = tmp_path / kernels
        merge_checkpoints(tiny_llama, tiny_llava_new, method, METHODS[method], out=out,
                          progress=False, kernels=kernels)
        files[kernels] = {f.name: f.read_bytes()
                          for f in sorted((out / "mllm").glob("*.safetensors"))}
    assert files["torch"] and files["fused"] == files["torch"] == files["auto"]
    with pytest.raises(ConfigError, match="auto, fused, torch"):
        merge_checkpoints(tiny_llama, tiny_llava_new, method, out=tmp_path / "x",
                          progress=False, kernels="numba")


@pytest.mark.parametrize("fixture", ["tiny_llava_new", "tiny_llava_old", "tiny_llava_next"])
def test_outputs_load_and_run(tmp_path, request, tiny_llama, fixture):
    from PIL import Image
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    tuned = request.getfixturevalue(fixture)
    report = _merge(tmp_path, tiny_llama, tuned, "neuron_fusion", {"ratio": 0.1})
    assert report["counts"]["matched"] == 21 and report["counts"]["unmatched"] == 0
    assert report["neurons_located"]["0"]["ffn"] == round(0.1 * 128)
    out = tmp_path / "neuron_fusion"
    lm = AutoModelForCausalLM.from_pretrained(out / "llm")
    tok = AutoTokenizer.from_pretrained(out / "llm")
    gen = lm.generate(**tok("abc", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert gen.shape[1] > 3
    model = AutoModelForImageTextToText.from_pretrained(out / "mllm")
    proc = AutoProcessor.from_pretrained(out / "mllm")
    text = proc.tokenizer.apply_chat_template([{"role": "user", "content": "<image>\nhi"}],
                                              tokenize=False, add_generation_prompt=True)
    inputs = proc(images=Image.new("RGB", (40, 30), "red"), text=text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    # the merged LM in out/llm equals the LM inside out/mllm, and the vision side is untouched
    llm_w, mllm_w, tuned_w = _weights(out / "llm"), _weights(out / "mllm"), _weights(tuned)
    layout = detect_layout(list(tuned_w), "t")
    for name, t in mllm_w.items():
        bn = to_base_name(name, layout)
        if bn is None:
            assert torch.equal(t, tuned_w[name]), f"{name} must be copied bit-identically"
        else:
            assert torch.equal(llm_w[bn], t)
    assert any("vision_tower" in n for n in mllm_w)


def test_identities_through_the_engine(tmp_path, tiny_llama, tiny_llava_old):
    base_w = _weights(tiny_llama)

    def lm(method, params, name):
        _merge(tmp_path / name, tiny_llama, tiny_llava_old, method, params)
        return _weights(tmp_path / name / method / "llm")

    tuned_lm = lm("mllm", {}, "m")
    soup0, soup1 = lm("model_soup", {"alpha": 0.0}, "s0"), lm("model_soup", {"alpha": 1.0}, "s1")
    for k, v in base_w.items():
        assert torch.equal(soup0[k][: v.shape[0]], v), k
    assert all(torch.equal(soup1[k], tuned_lm[k]) for k in tuned_lm)
    nf1 = lm("neuron_fusion", {"ratio": 1.0, "keep": 1.0, "others_scale": 1.0}, "n1")
    assert all(torch.equal(nf1[k], tuned_lm[k]) for k in tuned_lm)
    s = 0.4
    nfs = lm("neuron_fusion", {"ratio": 0.1, "keep": s, "suppress": s, "others_scale": s}, "ns")
    ta = lm("task_arithmetic", {"scale": s}, "ta")
    assert all(torch.equal(nfs[k], ta[k]) for k in ta)
    # extra vocabulary rows come from the tuned model
    emb = "model.embed_tokens.weight"
    assert torch.equal(soup0[emb][base_w[emb].shape[0]:], tuned_lm[emb][base_w[emb].shape[0]:])


def test_plain_causal_lm_pair_writes_llm_only(tmp_path, tiny_llama, tiny_tuned_llm):
    from transformers import AutoModelForCausalLM

    report = _merge(tmp_path, tiny_llama, tiny_tuned_llm, "ties", {"density": 0.5})
    assert report["multimodal"] is False and report["layout"] == "causal_lm"
    assert (tmp_path / "ties" / "llm").is_dir() and not (tmp_path / "ties" / "mllm").exists()
    AutoModelForCausalLM.from_pretrained(tmp_path / "ties" / "llm")


def test_rerun_reuses_and_force_redoes(tmp_path, tiny_llama, tiny_llava_new):
    first = _merge(tmp_path, tiny_llama, tiny_llava_new, "dare", seed=1)
    mtime = (tmp_path / "dare" / "merge.json").stat().st_mtime_ns
    again = _merge(tmp_path, tiny_llama, tiny_llava_new, "dare", seed=1)
    assert again == first and (tmp_path / "dare" / "merge.json").stat().st_mtime_ns == mtime
    _merge(tmp_path, tiny_llama, tiny_llava_new, "dare", seed=2)  # other seed: recomputed
    assert (tmp_path / "dare" / "merge.json").stat().st_mtime_ns != mtime
    assert json.loads((tmp_path / "dare" / "merge.json").read_text())["seed"] == 2


def test_merge_by_an_earlier_method_definition_is_not_reused(tmp_path, tiny_llama,
                                                             tiny_llava_new, monkeypatch):
    """A method's `revision` enters the merge identity: a della merge made before its ties
    took the average rank (no revision then) is redone, not reused."""
    import dataclasses

    from harness.merge import registry

    della = registry.get_method("della")
    assert della.revision
    monkeypatch.setitem(registry.METHODS, "della", dataclasses.replace(della, revision=None))
    _merge(tmp_path, tiny_llama, tiny_llava_new, "della", seed=1)
    mtime = (tmp_path / "della" / "merge.json").stat().st_mtime_ns
    monkeypatch.setitem(registry.METHODS, "della", della)
    report = _merge(tmp_path, tiny_llama, tiny_llava_new, "della", seed=1)
    assert (tmp_path / "della" / "merge.json").stat().st_mtime_ns != mtime
    assert report["inputs"]["revision"] == della.revision


def test_sharded_output_has_an_index(tmp_path, tiny_llama, tiny_llava_new):
    from transformers import AutoModelForCausalLM

    _merge(tmp_path, tiny_llama, tiny_llava_new, "task_arithmetic", shard_size_mb=0)
    llm = tmp_path / "task_arithmetic" / "llm"
    assert (llm / "model.safetensors.index.json").is_file()
    assert len(list(llm.glob("model-*.safetensors"))) > 5
    AutoModelForCausalLM.from_pretrained(llm)


def test_killed_merge_leaves_nothing_that_looks_done(tmp_path, tiny_llama, tiny_llava_new):
    out = tmp_path / "killed"
    code = (f"import time, harness.merge.engine as e\n"
            f"orig = e._merge_unit\n"
            f"def slow(*a, **k):\n    time.sleep(0.2)\n    return orig(*a, **k)\n"
            f"e._merge_unit = slow\n"
            f"e.merge_checkpoints({str(tiny_llama)!r}, {str(tiny_llava_new)!r}, 'ties', {{}}, "
            f"out={str(out)!r}, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".killed.tmp-*")):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and load_merge_report(out) is None
    report = merge_checkpoints(tiny_llama, tiny_llava_new, "ties", {}, out=out, progress=False)
    assert report["status"] == "complete" and load_merge_report(out) is not None


def test_failed_merge_cleans_up(tmp_path, tiny_llama, tiny_llava_new):
    bad = tmp_path / "nan_tuned"
    bad.mkdir()
    for f in tiny_llava_new.iterdir():
        if f.suffix != ".safetensors":
            (bad / f.name).write_bytes(f.read_bytes())
    w = _weights(tiny_llava_new)
    name = "model.language_model.layers.1.mlp.up_proj.weight"
    w[name][0, 0] = float("inf")
    save_file(w, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MergeError, match="layers.1.mlp.up_proj"):
        _merge(tmp_path, tiny_llama, bad, "task_arithmetic")
    assert not (tmp_path / "task_arithmetic").exists()
    assert not list(tmp_path.glob(".task_arithmetic.tmp-*"))


def test_bad_inputs_have_clear_errors(tmp_path, tiny_llama, tiny_llava_new):
    with pytest.raises(CheckpointError, match="does not exist"):
        _merge(tmp_path, tmp_path / "nope", tiny_llava_new, "base")
    with pytest.raises(CheckpointError, match="prefetch|local HF cache"):
        _merge(tmp_path, "someorg/not-cached-model", tiny_llava_new, "base")
    with pytest.raises(ConfigError, match="valid methods"):
        _merge(tmp_path, tiny_llama, tiny_llava_new, "fusion")
    with pytest.raises(ConfigError, match="density"):
        _merge(tmp_path, tiny_llama, tiny_llava_new, "ties", {"density": 2})
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no weights in .*neither \\*.safetensors"):
        _merge(tmp_path, tiny_llama, empty, "base")


def test_shape_mismatch_names_the_tensor(tmp_path, tiny_llama, tiny_llava_new):
    from harness.models.tiny import build_tiny_llama

    other = build_tiny_llama(tmp_path / "wide", hidden=32, intermediate=64)
    with pytest.raises(CheckpointError, match="shape mismatch at .*embed_tokens|shape mismatch"):
        _merge(tmp_path, other, tiny_llava_new, "base")
    deeper = build_tiny_llama(tmp_path / "deep", layers=3)
    with pytest.raises(CheckpointError, match="layer count"):
        _merge(tmp_path, deeper, tiny_llava_new, "base")


def test_cli_merge_stage(tmp_path, tiny_llama, tiny_llava_new):
    env = {**os.environ, "HARNESS_RESULTS": str(tmp_path / "results")}
    cmd = [sys.executable, "-m", "harness", "pair=local", f"pair.base={tiny_llama}",
           f"pair.mllm={tiny_llava_new}", "method=neuron_fusion", "stage=merge",
           "merge.progress=false"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged = list((tmp_path / "results" / "merges").glob("local-*-neuron_fusion-*"))
    assert len(merged) == 1 and load_merge_report(merged[0]) is not None
    bad = subprocess.run(cmd[:-2] + ["method.params.ratio=0"], env=env, capture_output=True,
                         text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert bad.returncode == 1 and "ratio=0" in bad.stderr
