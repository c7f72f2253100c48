"""Twin pairs: build and cache, real classes and key layouts, merge coverage, anyres image tokens,
chat templates and family special tokens."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open

from harness.errors import ConfigError

PAIRS = {  # pair config → (base class, mllm class, model_type of the mllm)
    "twin_llava_next_llama3_8b": ("LlamaForCausalLM", "LlavaNextForConditionalGeneration"),
    "twin_llava_next_mistral_7b": ("MistralForCausalLM", "LlavaNextForConditionalGeneration"),
    "twin_llava15_vicuna_7b": ("LlamaForCausalLM", "LlavaForConditionalGeneration"),
}
SPECIALS = {
    "twin_llava_next_llama3_8b": {"<|begin_of_text|>": 1024, "<|end_of_text|>": 1025,
                                  "<|start_header_id|>": 1030, "<|end_header_id|>": 1031,
                                  "<|eot_id|>": 1033, "<|reserved_special_token_250|>": 1279},
    "twin_llava_next_mistral_7b": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x00>": 3, "<0xFF>": 258},
    "twin_llava15_vicuna_7b": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x00>": 3, "<0xFF>": 258},
}
PROMPT = {  # what the mllm's chat template renders for one image + "Hi?"
    "twin_llava_next_llama3_8b": "<|start_header_id|>user<|end_header_id|>\n\n<image>\nHi?"
                                 "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "twin_llava_next_mistral_7b": "[INST] <image>\nHi? [/INST]",
    "twin_llava15_vicuna_7b": "USER: <image>\nHi? ASSISTANT:",
}


def _pair_cfg(name: str):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return OmegaConf.load(root / "conf" / "pair" / f"{name}.yaml")


def test_build_is_cached(twins, twin_paths, caplog):
    from harness.pairs import resolve_pair

    name = "twin_llava15_vicuna_7b"
    first = twins[name]
    stamp = (first.mllm / "model.safetensors").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        again = resolve_pair(_pair_cfg(name), twin_paths)
    assert (again.base, again.mllm) == (first.base, first.mllm) and again.multimodal
    assert (again.mllm / "model.safetensors").stat().st_mtime_ns == stamp
    assert "reusing the llava15_vicuna twin pair" in caplog.text
    assert first.base.parent.parent.name == name


def test_bad_build_block_is_a_config_error(twin_paths):
    from harness.pairs import resolve_pair

    cfg = _pair_cfg("twin_llava15_vicuna_7b")
    del cfg.build["vision"]
    with pytest.raises(ConfigError, match="build: lacks vision"):
        resolve_pair(cfg, twin_paths)
    cfg = _pair_cfg("twin_llava15_vicuna_7b")
    cfg.build.kind = "llava_qwen"
    with pytest.raises(ConfigError, match="build.kind='llava_qwen'.*llava15_vicuna"):
        resolve_pair(cfg, twin_paths)


@pytest.mark.parametrize("name", PAIRS)
def test_real_classes_and_hub_key_layout(twins, name):
    import transformers

    base_cls, mllm_cls = PAIRS[name]
    pair = twins[name]
    base, info = getattr(transformers, base_cls).from_pretrained(pair.base,
                                                                 output_loading_info=True)
    assert not any(info.values()), info
    mllm, info = getattr(transformers, mllm_cls).from_pretrained(pair.mllm,
                                                                 output_loading_info=True)
    assert not any(info.values()), info
    with safe_open(str(pair.mllm / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    prefixes = {k.split(".")[0] if not k.startswith("language_model.")
                else ".".join(k.split(".")[:2]) for k in keys}
    expected = {"language_model.model", "language_model.lm_head", "vision_tower",
                "multi_modal_projector"}
    if "Next" in mllm_cls:
        expected.add("image_newline")
    assert prefixes == expected
    assert all(k.startswith("vision_tower.vision_model.") for k in keys
               if k.startswith("vision_tower"))
    # the tuned vocabulary: base rows + <image> + <pad>, padded to a multiple of 64
    rows = mllm.config.text_config.vocab_size
    assert rows % 64 == 0 and base.config.vocab_size + 2 <= rows < base.config.vocab_size + 66
    assert mllm.config.image_token_id == base.config.vocab_size
    assert mllm.config.vision_feature_layer == -2
    assert base.dtype != torch.float32 and mllm.dtype == torch.float16


@pytest.mark.parametrize("name", PAIRS)
def test_family_config_and_special_tokens(twins, name):
    from transformers import AutoConfig, AutoTokenizer

    pair = twins[name]
    tok = AutoTokenizer.from_pretrained(pair.base)
    for token, idx in SPECIALS[name].items():
        assert tok.convert_tokens_to_ids(token) == idx, token
    cfg = AutoConfig.from_pretrained(pair.base)
    gen = json.loads((pair.base / "generation_config.json").read_text())
    theta = cfg.rope_parameters["rope_theta"]
    if name == "twin_llava_next_llama3_8b":
        assert len(tok) == 1024 + 256 and theta == 500000.0
        assert tok.bos_token == "<|begin_of_text|>" and tok.eos_token == "<|eot_id|>"
        assert gen["eos_token_id"] == [1025, 1033]
        assert cfg.num_key_value_heads * 4 == cfg.num_attention_heads
    elif name == "twin_llava_next_mistral_7b":
        assert cfg.model_type == "mistral" and theta == 1e6 and cfg.sliding_window is None
        assert cfg.num_key_value_heads * 4 == cfg.num_attention_heads
    else:
        assert cfg.pad_token_id == 0 and cfg.max_position_embeddings == 4096
    ids = tok("Hello world").input_ids
    assert ids[0] == tok.bos_token_id
    if name == "twin_llava15_vicuna_7b":  # lmsys/vicuna-7b-v1.5 on main has no chat template
        assert tok.chat_template is None
        return
    text = tok.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False,
                                   add_generation_prompt=True)
    marker = {"twin_llava_next_llama3_8b": "<|start_header_id|>assistant<|end_header_id|>",
              "twin_llava_next_mistral_7b": "[INST] Hello [/INST]"}[name]
    assert marker in text


@pytest.mark.parametrize("name", PAIRS)
def test_processor_expands_image_to_model_features(twins, name):
    """The anyres check: for non-square images the processor writes exactly as many image
    tokens as the model produces image features (and square ones too)."""
    import transformers
    from PIL import Image
    from transformers import AutoProcessor

    pair = twins[name]
    model = getattr(transformers, PAIRS[name][1]).from_pretrained(pair.mllm,
                                                                  dtype=torch.float32)
    proc = AutoProcessor.from_pretrained(pair.mllm)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    assert text == PROMPT[name]
    counts = set()
    for size in ((90, 40), (40, 130), (56, 56)):
        inputs = proc(images=[Image.new("RGB", size, (200, 40, 40))], text=text,
                      return_tensors="pt")
        n_tokens = int((inputs.input_ids == model.config.image_token_id).sum())
        extra = {"image_sizes": inputs["image_sizes"]} if "image_sizes" in inputs else {}
        with torch.no_grad():
            feats = model.get_image_features(pixel_values=inputs.pixel_values, **extra)
        feats = getattr(feats, "pooler_output", feats)
        n_feats = sum(f.shape[0] for f in feats) if isinstance(feats, (list, tuple)) \
            else feats.shape[0] * feats.shape[1]
        assert n_tokens == n_feats, (size, n_tokens, n_feats)
        counts.add(n_tokens)
        if size == (90, 40):
            out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
            assert out.shape[1] == inputs.input_ids.shape[1] + 2
    # anyres: the count depends on the image's shape; LLaVA-1.5 always 4 x 4 patches
    assert len(counts) == (3 if "next" in name else 1)


@pytest.mark.parametrize("name", PAIRS)
def test_merge_maps_every_language_model_tensor(twins, name, tmp_path):
    import transformers

    from harness.merge import merge_checkpoints

    pair = twins[name]
    report = merge_checkpoints(base=pair.base, mllm=pair.mllm, method="task_arithmetic",
                               params={"scale": 0.5}, out=tmp_path / "merge", device="cpu",
                               progress=False)
    counts = report["counts"]
    assert counts["unmatched"] == 0 and counts["matched"] == 2 * 9 + 3, counts
    base_cls, mllm_cls = PAIRS[name]
    _, info = getattr(transformers, base_cls).from_pretrained(tmp_path / "merge" / "llm",
                                                              output_loading_info=True)
    assert not any(info.values()), info
    _, info = getattr(transformers, mllm_cls).from_pretrained(tmp_path / "merge" / "mllm",
                                                              output_loading_info=True)
    assert not any(info.values()), info
    # out/llm's tokenizer keeps the tuned tokenizer's text chat template, or none as on the hub
    # (the processor's stays in out/mllm's chat_template.json)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "merge" / "llm")
    if name == "twin_llava15_vicuna_7b":
        assert tok.chat_template is None
        return
    text = tok.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False,
                                   add_generation_prompt=True)
    assert "Hello" in text and "<image>" not in text


def test_pair_identity_follows_the_twin_build_and_library_releases(monkeypatch):
    import transformers

    from harness import records

    cfg = OmegaConf.create({"pair": _pair_cfg("twin_llava_next_mistral_7b")})
    before = records.pair_identity(cfg)["build_key"]
    monkeypatch.setattr(transformers, "__version__", "0.0.1")
    assert records.pair_identity(cfg)["build_key"] != before


@pytest.mark.slow
def test_merged_twin_runs_through_both_evaluators(twins, tmp_path):
    """lm-eval (hf: a loglikelihood and a generation task) on out/llm and lmms-eval (llava_hf,
    anyres) on out/mllm of a merged Mistral LLaVA-NeXT twin, two docs each."""
    from pathlib import Path

    from harness.eval import evaluate
    from harness.merge import merge_checkpoints

    pair = twins["twin_llava_next_mistral_7b"]
    out = tmp_path / "merge"
    merge_checkpoints(base=pair.base, mllm=pair.mllm, method="ties", out=out, device="cpu",
                      progress=False)
    eval_cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/eval/micro.yaml")
    eval_cfg.limit = 2
    eval_cfg.benchmarks = {k: eval_cfg.benchmarks[k] for k in ("facts", "arith", "color")}
    scores = evaluate(eval_cfg, llm_dir=out / "llm", mllm_dir=out / "mllm",
                      run_dir=tmp_path / "run")
    assert set(scores) == {"facts", "arith", "color"}
    samples = (tmp_path / "run" / "lmms_eval" / "samples_micro_color.jsonl").read_text()
    answers = [json.loads(line)["resps"][0][0] for line in samples.splitlines()]
    assert len(answers) == 2 and all(a.strip() for a in answers), answers
