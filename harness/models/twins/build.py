"""Building (and caching) a twin pair: `<cache>/twins/<name>/<build key>/{base,mllm}`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from harness.models.bin_checkpoint import safetensors_to_bin
from harness.models.build_once import DONE, build_once
from harness.models.tiny import _perturb_, set_layout
from harness.models.twins.kinds import (
    ANYRES_GRID,
    CLIP_MEAN,
    CLIP_STD,
    TwinKind,
    get_kind,
)

log = logging.getLogger(__name__)

MM_TOKENS = ("<image>", "<pad>")  # appended after the base vocabulary, as llava-hf did
VOCAB_MULTIPLE = 64               # llava-hf padded the text vocabulary to a multiple of 64


def make_tokenizer(kind: TwinKind, vocab: int, seed: int):
    """The base LLM's tokenizer (family style, `vocab` regular tokens), with its chat template."""
    from harness.models.twins import tokenizers as tk

    if kind.tokenizer == "llama3":
        tok = tk.byte_level_llama3(vocab, seed)
    else:
        tok = tk.sentencepiece_llama(vocab, seed, **kind.tokenizer_args)
    tok.chat_template = kind.base_template
    return tok


def _ids(tok, spec: dict) -> dict:
    """A generation-config dict with token names replaced by their ids."""
    def conv(v):
        if isinstance(v, list):
            return [conv(x) for x in v]
        return tok.convert_tokens_to_ids(v) if isinstance(v, str) and v.startswith("<") else v
    return {k: conv(v) for k, v in spec.items()}


def _text_config(kind: TwinKind, tok, text: dict):
    from transformers import LlamaConfig, MistralConfig

    fields = dict(kind.base_fields)
    special = {f"{k}_token_id": tok.convert_tokens_to_ids(fields.pop(k))
               for k in ("bos", "eos", "pad") if k in fields}
    cls = MistralConfig if kind.base_arch == "mistral" else LlamaConfig
    return cls(vocab_size=len(tok), hidden_size=text["hidden"],
               intermediate_size=text["intermediate"], num_hidden_layers=text["layers"],
               num_attention_heads=text["heads"], num_key_value_heads=text["kv_heads"],
               **fields, **special)


def build_base(out: Path, kind: TwinKind, spec: dict):
    """Write the base LLM twin (random weights, real dtype) and return (model, tokenizer)."""
    from transformers import AutoModelForCausalLM

    tok = make_tokenizer(kind, int(spec["text"]["vocab"]), int(spec["seed"]))
    cfg = _text_config(kind, tok, spec["text"])
    cfg.architectures = ["MistralForCausalLM" if kind.base_arch == "mistral"
                         else "LlamaForCausalLM"]
    torch.manual_seed(int(spec["seed"]))
    model = AutoModelForCausalLM.from_config(cfg).to(getattr(torch, kind.dtypes[0]))
    model.save_pretrained(out, max_shard_size="10GB")
    tok.save_pretrained(out, save_jinja_files=False)  # template in tokenizer_config.json
    # written as plain JSON: the real files hold sampling fields without do_sample (Vicuna)
    (out / "generation_config.json").write_text(json.dumps(_ids(tok, kind.base_generation),
                                                           indent=2))
    return model, tok


def _mllm_tokenizer(base_dir: Path, kind: TwinKind):
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    tok.add_tokens([AddedToken(MM_TOKENS[0], special=True, normalized=False)],
                   special_tokens=True)
    tok.add_special_tokens({"pad_token": MM_TOKENS[1]})
    for key, value in kind.mllm_tokenizer_args.items():
        setattr(tok, key, value)
    return tok


def _vision_config(vision: dict):
    from transformers import CLIPVisionConfig

    # CLIP ViT-L/14-336 fields other than sizes: quick_gelu, eps 1e-5
    return CLIPVisionConfig(hidden_size=vision["hidden"], intermediate_size=vision["intermediate"],
                            num_hidden_layers=vision["layers"],
                            num_attention_heads=vision["heads"], image_size=vision["image_size"],
                            patch_size=vision["patch_size"], projection_dim=vision["hidden"],
                            hidden_act="quick_gelu", layer_norm_eps=1e-5)


def _processor(kind: TwinKind, tok, vision: dict):
    from transformers import (
        CLIPImageProcessor,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        LlavaProcessor,
    )

    side = int(vision["image_size"])
    common = dict(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                  do_center_crop=True, do_convert_rgb=True, do_normalize=True, do_rescale=True,
                  do_resize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3,
                  rescale_factor=1 / 255)
    if kind.mllm_class == "llava_next":
        improc = LlavaNextImageProcessor(**common, do_pad=True, image_grid_pinpoints=pinpoints(
            side))
        cls = LlavaNextProcessor
    else:
        improc = CLIPImageProcessor(**common)
        cls = LlavaProcessor
    return cls(image_processor=improc, tokenizer=tok, patch_size=int(vision["patch_size"]),
               vision_feature_select_strategy="default", chat_template=kind.mllm_template,
               image_token=MM_TOKENS[0], num_additional_image_tokens=1)


def pinpoints(side: int) -> list[list[int]]:
    """LLaVA-1.6's anyres resolutions for a vision tower of input side `side`."""
    return [[side * h, side * w] for h, w in ANYRES_GRID]


def build_mllm(out: Path, kind: TwinKind, spec: dict, base, base_dir: Path) -> None:
    """Write the MLLM twin: base LM + noise, extra vocab rows, CLIP tower, projector, processor,
    in the real hub key layout (`language_model.model.*`, `vision_tower.*`, ...)."""
    from transformers import (
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
    )

    tok = _mllm_tokenizer(base_dir, kind)
    base_vocab = base.config.vocab_size
    rows = -(-len(tok) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    text_cfg = base.config.to_dict()
    text_cfg.update(vocab_size=rows)
    text_cfg.pop("dtype", None)
    image_id = tok.convert_tokens_to_ids(MM_TOKENS[0])
    common = dict(vision_config=_vision_config(spec["vision"]).to_dict(), text_config=text_cfg,
                  image_token_id=image_id, vision_feature_layer=-2,
                  vision_feature_select_strategy="default", projector_hidden_act="gelu",
                  tie_word_embeddings=False)
    seed = int(spec["seed"]) + 1
    torch.manual_seed(seed)
    if kind.mllm_class == "llava_next":
        cfg = LlavaNextConfig(**common, image_grid_pinpoints=pinpoints(
            int(spec["vision"]["image_size"])), use_image_newline_parameter=True)
        model = LlavaNextForConditionalGeneration(cfg)
    else:
        side, patch = int(spec["vision"]["image_size"]), int(spec["vision"]["patch_size"])
        cfg = LlavaConfig(**common, image_seq_length=(side // patch) ** 2)
        cfg.pad_token_id = tok.pad_token_id  # llava-1.5-7b-hf's config names its pad row
        model = LlavaForConditionalGeneration(cfg)
    gen = torch.Generator().manual_seed(seed)
    perturb = float(spec["perturb"])
    with torch.no_grad():
        base_sd = {k: v.float() for k, v in base.model.state_dict().items()}
        for name, p in model.model.language_model.named_parameters():
            src = base_sd[name]
            p.data[: src.shape[0]] = src
            _perturb_(p.data, perturb, gen)
        model.lm_head.weight.data[:base_vocab] = base.lm_head.weight.float()
        _perturb_(model.lm_head.weight.data, perturb, gen)
    model = model.to(getattr(torch, kind.dtypes[1]))
    model.save_pretrained(out, max_shard_size="10GB")
    _processor(kind, tok, spec["vision"]).save_pretrained(out)
    _hub_template_files(out, tok)
    (out / "generation_config.json").write_text(json.dumps(_ids(tok, kind.mllm_generation),
                                                           indent=2))
    set_layout(out, "old")
    _nest_vision_model(out / "model.safetensors")
    _declare_text_dtype(out / "config.json", kind.text_dtype)


def _declare_text_dtype(path: Path, dtype: str) -> None:
    """The hub configs declare a dtype for the text model of their own (bfloat16 over the
    float16 weights of the LLaVA-NeXT repos); transformers writes none."""
    cfg = json.loads(path.read_text())
    cfg["text_config"]["dtype"] = dtype
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _hub_template_files(out: Path, tok) -> None:
    """The hub repos' template files: the processor's in the legacy chat_template.json, the
    tokenizer's own (the base LLM's text template) in tokenizer_config.json."""
    jinja = out / "chat_template.jinja"
    template = jinja.read_text()
    jinja.unlink()
    (out / "chat_template.json").write_text(json.dumps({"chat_template": template}, indent=2))
    tok.save_pretrained(out, save_jinja_files=False)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("is_local", "local_files_only"):  # loading arguments, not tokenizer settings
        cfg.pop(key, None)
    cfg["processor_class"] = "LlavaNextProcessor" if "llava_next" in str(
        json.loads((out / "config.json").read_text())["model_type"]) else "LlavaProcessor"
    cfg_path.write_text(json.dumps(cfg, indent=2))


def _nest_vision_model(path: Path) -> None:
    """`vision_tower.X` → `vision_tower.vision_model.X`: the hub checkpoints were saved when
    CLIPVisionModel nested its modules under `vision_model` (transformers 5 strips it on load)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    renamed = {("vision_tower.vision_model." + k[len("vision_tower."):]
                if k.startswith("vision_tower.") else k): t for k, t in tensors.items()}
    save_file(renamed, str(path), metadata={"format": "pt"})


def build_pair(out: Path, spec: dict) -> dict:
    """Build both twins of `spec` (a pair config's `build:` block) into out/base and out/mllm."""
    kind = get_kind(spec["kind"])
    fmt = base_format(spec)
    start = time.perf_counter()
    base, _ = build_base(out / "base", kind, spec)
    build_mllm(out / "mllm", kind, spec, base, out / "base")
    if fmt == "bin":  # as the hub has it: torch.save shards + their index, no safetensors
        size = sum(p.stat().st_size for p in (out / "base").glob("*.safetensors"))
        safetensors_to_bin(out / "base", out / "base", shard_bytes=size // 2)
    stats = {"build": spec, "real_base": kind.real_base, "real_mllm": kind.real_mllm,
             "seconds": round(time.perf_counter() - start, 2), "torch": torch.__version__}
    (out / DONE).write_text(json.dumps(stats, indent=2))
    return stats


def base_format(spec: dict) -> str:
    """The weight format of the base twin (`build.base_format`: safetensors, the default, or
    bin for a base that the hub ships as `pytorch_model*.bin` only)."""
    fmt = spec.get("base_format", "safetensors")
    if fmt not in ("safetensors", "bin"):
        raise ValueError(f"build.base_format={fmt!r} is not valid; choose safetensors or bin")
    return fmt


def ensure_built(spec: dict, root: Path, key: str) -> Path:
    """The directory of a complete build of `spec` under `root/<key>`, building it if missing."""
    return build_once(root, key, f"{spec['kind']} twin pair", lambda tmp: build_pair(tmp, spec))
