"""Tiny random checkpoints in real transformers formats, for tests and benchmarks.

`build_tiny_llama` writes a LlamaForCausalLM with a character-level tokenizer and a chat template;
`build_tiny_llava` wraps a perturbed copy of it in a LLaVA or LLaVA-NeXT (tiny CLIP vision tower,
projector, extra `<image>` / pad vocabulary rows, processor with chat template), in either key
layout; `build_tiny_tuned_llm` writes a perturbed plain causal LM. Each builds in about a second.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
MM_TOKENS = ["<image>", "<mm_pad>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]


def build_char_tokenizer(extra_tokens: list[str] = (), chat_template: str = CHAT_TEMPLATE):
    """A character-level PreTrainedTokenizerFast (<unk> <s> </s> <pad>, printable ASCII, extras)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIALS + ["<|user|>", "<|assistant|>", "<|system|>"] + CHARS
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS + ["<|user|>", "<|assistant|>", "<|system|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    if extra_tokens:
        fast.add_special_tokens({"additional_special_tokens": list(extra_tokens)})
    fast.chat_template = chat_template
    return fast


def _llama_config(vocab: int, hidden: int, layers: int, intermediate: int, heads: int,
                  kv_heads: int, tie: bool, tok):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=kv_heads, max_position_embeddings=512,
                       tie_word_embeddings=tie, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def build_tiny_llama(out, *, hidden: int = 64, layers: int = 2, intermediate: int = 128,
                     heads: int = 4, kv_heads: int = 2, vocab_extra: int = 0,
                     tie_embeddings: bool = False, seed: int = 0, dtype: str = "float32") -> Path:
    """A random LlamaForCausalLM with tokenizer, chat template and generation config."""
    from transformers import GenerationConfig, LlamaForCausalLM

    out = Path(out)
    tok = build_char_tokenizer([f"<extra_{i}>" for i in range(vocab_extra)])
    torch.manual_seed(seed)
    cfg = _llama_config(len(tok), hidden, layers, intermediate, heads, kv_heads,
                        tie_embeddings, tok)
    model = LlamaForCausalLM(cfg).to(getattr(torch, dtype))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, max_new_tokens=16).save_pretrained(out)
    return out


def _perturb_(tensor: torch.Tensor, perturb: float, gen: torch.Generator) -> None:
    noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float32)
    scale = perturb * (tensor.float().std().item() if tensor.numel() > 1 else 1.0) + 1e-3 * perturb
    tensor.add_((noise * scale).to(tensor.dtype))


def build_tiny_tuned_llm(out, base_dir, *, seed: int = 1, perturb: float = 0.05) -> Path:
    """A plain causal LM: the base with Gaussian noise (perturb × each tensor's std) added."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            _perturb_(p.data, perturb, gen)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


def build_tiny_llava(out, base_dir, *, kind: str = "llava", layout: str = "new", seed: int = 1,
                     perturb: float = 0.05) -> Path:
    """A LLaVA / LLaVA-NeXT around a perturbed copy of the base LM, with processor.

    `layout="new"` keeps transformers' current names (`model.language_model.*`, `lm_head.*`);
    `layout="old"` renames them to the older `language_model.model.*` / `language_model.lm_head.*`
    (and `vision_tower.*`, `multi_modal_projector.*`, `image_newline` at top level).
    """
    from transformers import (
        AutoModelForCausalLM,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        LlavaProcessor,
    )

    if kind not in ("llava", "llava_next") or layout not in ("new", "old"):
        raise ValueError(f"kind={kind!r} layout={layout!r}: kind is llava|llava_next, "
                         f"layout new|old")
    out = Path(out)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    tok = build_char_tokenizer(MM_TOKENS)
    base_vocab = base.config.vocab_size
    text_cfg = base.config.to_dict()
    text_cfg["vocab_size"] = base_vocab + len(MM_TOKENS)
    text_cfg["tie_word_embeddings"] = False
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, image_size=32, patch_size=8,
                              projection_dim=32)
    image_id = tok.convert_tokens_to_ids("<image>")
    common = dict(vision_config=vision.to_dict(), text_config=text_cfg, image_token_id=image_id,
                  vision_feature_layer=-1, vision_feature_select_strategy="default",
                  tie_word_embeddings=False)
    torch.manual_seed(seed)
    if kind == "llava":
        model = LlavaForConditionalGeneration(LlavaConfig(**common))
        improc = CLIPImageProcessor(size={"shortest_edge": 32},
                                    crop_size={"height": 32, "width": 32})
        proc_cls = LlavaProcessor
    else:
        pinpoints = [[32, 32], [32, 64], [64, 32]]
        model = LlavaNextForConditionalGeneration(
            LlavaNextConfig(**common, image_grid_pinpoints=pinpoints))
        improc = LlavaNextImageProcessor(size={"shortest_edge": 32},
                                         crop_size={"height": 32, "width": 32},
                                         image_grid_pinpoints=pinpoints)
        proc_cls = LlavaNextProcessor
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lm = model.model.language_model
        lm_sd = {k: v for k, v in base.model.state_dict().items()}
        for name, p in lm.named_parameters():
            src = lm_sd[name]
            p.data[: src.shape[0]] = src
            _perturb_(p.data, perturb, gen)
        head = base.lm_head.weight if not base.config.tie_word_embeddings \
            else base.model.embed_tokens.weight
        model.lm_head.weight.data[:base_vocab] = head
        _perturb_(model.lm_head.weight.data, perturb, gen)
    model.save_pretrained(out)
    processor = proc_cls(image_processor=improc, tokenizer=tok, patch_size=8,
                         vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                         num_additional_image_tokens=1)
    processor.save_pretrained(out)
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
         "pad_token_id": tok.pad_token_id, "max_new_tokens": 16}))
    set_layout(out, layout)
    return out


OLD_LAYOUT = (("model.language_model.", "language_model.model."),
              ("lm_head.", "language_model.lm_head."),
              ("model.vision_tower.", "vision_tower."),
              ("model.multi_modal_projector.", "multi_modal_projector."),
              ("model.image_newline", "image_newline"))


def _rename(name: str, pairs) -> str:
    for src, dst in pairs:
        if name.startswith(src):
            return dst + name[len(src):]
    return name


def set_layout(directory: Path, layout: str) -> None:
    """Rewrite a single-file LLaVA checkpoint into the `new` or `old` key layout.

    (transformers 5.x writes whichever layout its conversion mapping chooses; tests need both.)
    """
    path = Path(directory) / "model.safetensors"
    tensors = load_file(str(path))
    to_new = [(old, new) for new, old in OLD_LAYOUT]
    renamed = {}
    for name, t in tensors.items():
        name = _rename(name, to_new) if not name.startswith("model.") else name
        if layout == "old":
            name = _rename(name, OLD_LAYOUT)
        renamed[name] = t
    save_file(renamed, str(path), metadata={"format": "pt"})
