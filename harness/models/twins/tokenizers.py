"""Family-style fast tokenizers for the twins, trained in code on a fixed corpus (deterministic).

- `byte_level_llama3`: a tiktoken-style byte-level BPE (Llama-3's split regex, ByteLevel
  alphabet, `ignore_merges`) of `vocab` regular tokens, followed by Llama-3's 256 special tokens in
  their real order (`<|begin_of_text|>`, `<|end_of_text|>`, reserved 0-3, `<|start_header_id|>`,
  `<|end_header_id|>`, reserved 4, `<|eot_id|>`, reserved 5-250); the post-processor prepends
  `<|begin_of_text|>` as the real tokenizer.json does.
- `sentencepiece_llama`: a SentencePiece-style BPE in transformers' `LlamaTokenizer` (Llama-2,
  Vicuna, Mistral-7B v0.x): `<unk>`=0, `<s>`=1, `</s>`=2, the 256 byte-fallback tokens
  `<0x00>`..`<0xFF>` at 3..258, then `vocab - 259` learned pieces with the `▁` word marker.
"""

from __future__ import annotations

import json
import random

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

WORDS = (
    "the of and to in is was that for on with as it by at from this be are or an have not "
    "which one all were they but has their there been more can other if who will would when "
    "what where why how many much some any each every image picture photo shown see look color "
    "red green blue yellow black white orange purple brown gray pink shape circle square "
    "triangle star left right top bottom middle above below next count number answer question "
    "user assistant system helpful detailed polite curious artificial intelligence chat human "
    "describe explain tell me please thank you yes no true false maybe option choose correct "
    "wrong science history math cat dog car tree house person people table chair book water "
    "sky sun moon city street road river mountain food apple banana pizza train bus plane boat "
    "bird horse cow sheep elephant bear zebra giraffe umbrella bag tie phone clock vase "
    "language model vision text token sentence word letter read write think reason step first "
    "second third then finally because therefore however although while during before after "
    "Hello World The This What Which How Why Where When Who Answer Question Image USER "
    "ASSISTANT INST SYS Describe Please Is Are Does Do Can [INST] [/INST] <<SYS>> <</SYS>>"
).split()
PUNCT = [".", ",", "?", "!", ":", ";", "'s", "'t", "(", ")", "-", "\"", "\n", "\n\n"]


def corpus(seed: int = 0, n_lines: int = 3000) -> list[str]:
    """A fixed pseudo-English corpus (seeded word sequences, punctuation, numbers)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = []
        for _ in range(rng.randint(4, 16)):
            r = rng.random()
            if r < 0.08:
                words.append(str(rng.randint(0, 2025)))
            elif r < 0.2:
                words.append(rng.choice(WORDS) + rng.choice(PUNCT))
            else:
                words.append(rng.choice(WORDS))
        lines.append(" ".join(words))
    return lines


def llama3_special_tokens() -> list[str]:
    """Llama-3's 256 special tokens in id order (ids vocab+0 .. vocab+255)."""
    names = ["<|begin_of_text|>", "<|end_of_text|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(4)]
    names += ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>",
              "<|eot_id|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(5, 251)]
    assert len(names) == 256
    return names


def _check_size(got: int, want: int, what: str) -> None:
    if got != want:
        raise ValueError(f"twin tokenizer ({what}): training reached {got} tokens, not the "
                         f"requested build.text.vocab={want}; choose a vocab between 300 and 2000")


def byte_level_llama3(vocab: int, seed: int = 0):
    """A Llama-3-style byte-level BPE tokenizer (PreTrainedTokenizerFast) of `vocab` regular
    tokens plus the 256 Llama-3 special tokens; bos `<|begin_of_text|>`, eos `<|eot_id|>`
    (the Instruct model's), no pad token."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(seed), trainer)
    _check_size(tok.get_vocab_size(), vocab, "byte-level BPE")
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in llama3_special_tokens()])
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|eot_id|>",
                                   clean_up_tokenization_spaces=True,
                                   model_max_length=1000000000000000019884624838656,
                                   model_input_names=["input_ids", "attention_mask"])


def sentencepiece_llama(vocab: int, seed: int = 0, *, legacy: bool, pad_token: str | None,
                        model_max_length: int, padding_side: str = "left"):
    """A Llama-2-style (SentencePiece BPE with byte fallback) `LlamaTokenizer` of `vocab` tokens:
    `<unk>` `<s>` `</s>`, 256 byte tokens, learned `▁`-pieces; adds `<s>` in front."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    n_learned = vocab - 3 - 256
    if n_learned < 40:
        raise ValueError(f"twin tokenizer: build.text.vocab={vocab} leaves no room for learned "
                         f"pieces after <unk> <s> </s> and the 256 byte tokens; use >= 300")
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=n_learned, show_progress=False)
    trainer_tok.train_from_iterator(corpus(seed), trainer)
    state = json.loads(trainer_tok.to_str())["model"]
    learned = sorted(state["vocab"].items(), key=lambda kv: kv[1])
    _check_size(len(learned) + 3 + 256, vocab, "sentencepiece BPE")
    table = {"<unk>": 0, "<s>": 1, "</s>": 2}
    table.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece, _ in learned:
        table.setdefault(piece, len(table))
    _check_size(len(table), vocab, "sentencepiece BPE")
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    return LlamaTokenizer(vocab=table, merges=merges, legacy=legacy, add_bos_token=True,
                          add_eos_token=False, pad_token=pad_token, padding_side=padding_side,
                          model_max_length=model_max_length, clean_up_tokenization_spaces=False)
