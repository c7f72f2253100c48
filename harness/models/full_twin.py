"""Full-size random-weight twins for the evaluation benchmark: a twin pair's classes, config
fields, tokenizer, processor and chat templates (harness/models/twins) at the real checkpoints'
sizes (conf/bench/eval.yaml `full_size`), random weights in the real dtypes, initialised on the
device (a GPU builds an 8B model in seconds) and written as safetensors.

What an evaluation costs depends on the shapes (layers, widths, vocabulary rows, image
tokens) and on the prompts' token counts, not on the weights, so a merge of the real pair costs
what this pair costs, except for the tokenizer: the twin's own (trained on a small corpus) splits
real text into more tokens than the real one (docs/performance.md). The MLLM's language model is
not the base plus noise (the bench evaluates the two checkpoints directly, with no merge).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MM_ROWS = 2  # <image> and <pad> rows llava-hf appended to the base vocabulary


def build_full_twin(spec: dict, sizes: dict, out: Path, device: str = "cuda") -> tuple[Path, Path]:
    """Write (out/base, out/mllm) for twin build `spec` (a twin pair's `build:` block) at
    `sizes` ({text, vision}); return the two directories. Reuses a complete build."""
    from harness.models.twins.build import (
        VOCAB_MULTIPLE,
        _ids,
        _mllm_tokenizer,
        _processor,
        _text_config,
        _vision_config,
        make_tokenizer,
        pinpoints,
    )
    from harness.models.twins.kinds import get_kind

    out = Path(out)
    done = out / "full_twin.json"
    if done.is_file():
        return out / "base", out / "mllm"
    kind = get_kind(spec["kind"])
    text, vision = dict(sizes["text"]), dict(sizes["vision"])
    start = time.perf_counter()
    tok = make_tokenizer(kind, int(spec["text"]["vocab"]), int(spec["seed"]))
    cfg = _text_config(kind, tok, text)
    cfg.vocab_size = max(int(text["vocab"]), len(tok))
    cfg.architectures = ["MistralForCausalLM" if kind.base_arch == "mistral"
                         else "LlamaForCausalLM"]
    from transformers import AutoModelForCausalLM

    torch.manual_seed(int(spec["seed"]))
    with torch.device(device):
        base = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, kind.dtypes[0]))
    base.save_pretrained(out / "base")
    tok.save_pretrained(out / "base", save_jinja_files=False)
    (out / "base" / "generation_config.json").write_text(
        json.dumps(_ids(tok, kind.base_generation), indent=2))
    del base
    mtok = _mllm_tokenizer(out / "base", kind)
    text_cfg = cfg.to_dict()
    text_cfg.pop("dtype", None)
    text_cfg["vocab_size"] = -(-(cfg.vocab_size + MM_ROWS) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    model = _mllm_model(kind, vision, text_cfg, mtok, pinpoints, _vision_config, device,
                        int(spec["seed"]) + 1)
    model.save_pretrained(out / "mllm")
    _processor(kind, mtok, vision).save_pretrained(out / "mllm")
    (out / "mllm" / "generation_config.json").write_text(
        json.dumps(_ids(mtok, kind.mllm_generation), indent=2))
    del model
    stats = {"build": spec, "sizes": sizes, "device": device, "real_base": kind.real_base,
             "real_mllm": kind.real_mllm, "seconds": round(time.perf_counter() - start, 1)}
    done.write_text(json.dumps(stats, indent=2))
    log.info("full-size twin %s built in %.0f s", spec["kind"], stats["seconds"])
    return out / "base", out / "mllm"


def _mllm_model(kind, vision: dict, text_cfg: dict, tok, pinpoints, vision_config, device: str,
                seed: int):
    """The LLaVA / LLaVA-NeXT model of `kind`, random, on `device`, in the real mllm dtype."""
    from transformers import (
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
    )

    common = {"vision_config": vision_config(vision).to_dict(), "text_config": text_cfg,
              "image_token_id": tok.convert_tokens_to_ids("<image>"),
              "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
              "projector_hidden_act": "gelu", "tie_word_embeddings": False}
    if kind.mllm_class == "llava_next":
        cfg = LlavaNextConfig(**common, image_grid_pinpoints=pinpoints(int(vision["image_size"])),
                              use_image_newline_parameter=True)
        cls = LlavaNextForConditionalGeneration
    else:
        side, patch = int(vision["image_size"]), int(vision["patch_size"])
        cfg = LlavaConfig(**common, image_seq_length=(side // patch) ** 2)
        cfg.pad_token_id = tok.pad_token_id
        cls = LlavaForConditionalGeneration
    torch.manual_seed(seed)
    with torch.device(device):
        return cls._from_config(cfg, dtype=getattr(torch, kind.dtypes[1]))
