"""The micro tokenizer: one token per word of the micro world, one per digit."""

from __future__ import annotations

from harness.micro.world import World
from harness.models.tiny import CHAT_TEMPLATE

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
IMAGE_TOKEN = "<image>"


def build_tokenizer(world: World, multimodal: bool = False):
    """A word-level PreTrainedTokenizerFast with the chat template; `multimodal` adds <image>
    (an extra vocabulary row, as real LLaVA checkpoints have)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + world.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)])
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    if multimodal:
        fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    fast.chat_template = CHAT_TEMPLATE
    return fast
