"""Configs and constructors of the micro models: a Llama LM and a LLaVA around it."""

from __future__ import annotations

import torch

from harness.micro.images import IMAGE_SIZE
from harness.micro.tokenizer import IMAGE_TOKEN
from harness.models.tiny import CHAT_TEMPLATE

PATCH = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2  # "default" feature selection drops the CLS token


def make_llama(tok, arch: dict, seed: int):
    """A randomly initialised LlamaForCausalLM sized by `arch` (hidden, layers, intermediate,
    heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=arch["hidden"],
                      intermediate_size=arch["intermediate"], num_hidden_layers=arch["layers"],
                      num_attention_heads=arch["heads"], num_key_value_heads=arch["heads"],
                      max_position_embeddings=128, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(cfg)


def make_llava(base_lm, tok_mm, arch: dict, seed: int):
    """A LlavaForConditionalGeneration whose language model starts as a copy of `base_lm`; the
    vision tower and projector are new; the <image> row is appended to the vocabulary."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    text = base_lm.config.to_dict()
    text["vocab_size"] = len(tok_mm)
    vision = CLIPVisionConfig(hidden_size=arch["vision_hidden"],
                              intermediate_size=2 * arch["vision_hidden"],
                              num_hidden_layers=arch["vision_layers"], num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=PATCH)
    cfg = LlavaConfig(vision_config=vision.to_dict(), text_config=text,
                      image_token_id=tok_mm.convert_tokens_to_ids(IMAGE_TOKEN),
                      vision_feature_layer=-1, vision_feature_select_strategy="default",
                      tie_word_embeddings=False)
    model = LlavaForConditionalGeneration(cfg)
    with torch.no_grad():
        lm = model.model.language_model
        for name, p in lm.named_parameters():
            src = dict(base_lm.model.named_parameters())[name]
            p.data[: src.shape[0]] = src
        model.lm_head.weight.data[: base_lm.lm_head.weight.shape[0]] = base_lm.lm_head.weight
    return model


def make_processor(tok_mm):
    """The LlavaProcessor lmms-eval's llava_hf loads (CLIP preprocessing at 32×32)."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    improc = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return LlavaProcessor(image_processor=improc, tokenizer=tok_mm, patch_size=PATCH,
                          vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                          num_additional_image_tokens=1)
