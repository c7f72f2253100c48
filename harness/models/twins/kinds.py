"""What each twin copies from its real pair: classes, config fields, tokens, templates, dtypes.

Values are those of the real hub files (config.json, generation_config.json, tokenizer_config.json,
preprocessor_config.json, processor_config.json) of the named repos; sizes (hidden size, layers,
vocabulary, image size) come from the pair config's `build:` block instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.models.twins import templates as T

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# LLaVA-1.6's anyres grid in units of the vision tower's input side (336 px in the real models)
ANYRES_GRID = [[1, 2], [2, 1], [2, 2], [3, 1], [1, 3]]


@dataclass(frozen=True)
class TwinKind:
    """The fixed facts of one real pair."""

    real_base: str
    real_mllm: str
    base_arch: str                 # llama | mistral
    tokenizer: str                 # llama3 | sentencepiece
    mllm_class: str                # llava | llava_next
    base_fields: dict              # real config.json fields of the base (sizes excluded)
    base_generation: dict          # real generation_config.json, token names for ids
    base_template: str | None      # the base tokenizer's chat template (None: the hub has none)
    mllm_template: str             # the processor's (chat_template.json)
    dtypes: tuple[str, str]        # (base, mllm) torch dtypes of the real checkpoints
    text_dtype: str                # what the MLLM's config.json declares for its text model
    tokenizer_args: dict = field(default_factory=dict)
    mllm_generation: dict = field(default_factory=dict)
    # the MLLM tokenizer's own settings where they differ from the base's
    mllm_tokenizer_args: dict = field(default_factory=dict)


KINDS = {
    "llava_next_llama3": TwinKind(
        real_base="meta-llama/Meta-Llama-3-8B-Instruct",
        real_mllm="llava-hf/llama3-llava-next-8b-hf",
        base_arch="llama", tokenizer="llama3", mllm_class="llava_next",
        base_fields={"rope_theta": 500000.0, "max_position_embeddings": 8192,
                     "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_bias": False,
                     "tie_word_embeddings": False, "bos": "<|begin_of_text|>",
                     "eos": "<|eot_id|>"},
        base_generation={"bos_token_id": "<|begin_of_text|>",
                         "eos_token_id": ["<|end_of_text|>", "<|eot_id|>"],
                         "do_sample": True, "temperature": 0.6, "top_p": 0.9,
                         "max_length": 4096},
        base_template=T.LLAMA3_INSTRUCT, mllm_template=T.LLAVA_NEXT_LLAMA3,
        dtypes=("bfloat16", "float16"), text_dtype="bfloat16",
        mllm_generation={"bos_token_id": "<|begin_of_text|>", "eos_token_id": "<|eot_id|>"}),
    "llava_next_mistral": TwinKind(
        real_base="mistralai/Mistral-7B-Instruct-v0.2",
        real_mllm="llava-hf/llava-v1.6-mistral-7b-hf",
        base_arch="mistral", tokenizer="sentencepiece", mllm_class="llava_next",
        base_fields={"rope_theta": 1000000.0, "max_position_embeddings": 32768,
                     "rms_norm_eps": 1e-5, "hidden_act": "silu", "sliding_window": None,
                     "tie_word_embeddings": False, "bos": "<s>", "eos": "</s>"},
        base_generation={"bos_token_id": "<s>", "eos_token_id": "</s>"},
        base_template=T.MISTRAL_INSTRUCT_V02, mllm_template=T.LLAVA_NEXT_MISTRAL,
        dtypes=("bfloat16", "float16"), text_dtype="bfloat16",
        tokenizer_args={"legacy": True, "pad_token": None,
                        "model_max_length": 1000000000000000019884624838656,
                        "padding_side": "left"},
        mllm_generation={"bos_token_id": "<s>", "eos_token_id": "</s>"}),
    "llava15_vicuna": TwinKind(
        real_base="lmsys/vicuna-7b-v1.5",
        real_mllm="llava-hf/llava-1.5-7b-hf",
        base_arch="llama", tokenizer="sentencepiece", mllm_class="llava",
        base_fields={"rope_theta": 10000.0, "max_position_embeddings": 4096,
                     "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_bias": False,
                     "tie_word_embeddings": False, "bos": "<s>", "eos": "</s>", "pad": "<unk>"},
        base_generation={"bos_token_id": "<s>", "eos_token_id": "</s>", "pad_token_id": "<unk>",
                         "temperature": 0.9, "top_p": 0.6, "max_length": 4096},
        # lmsys/vicuna-7b-v1.5 on main and llava-1.5-7b-hf's tokenizer have no chat template
        base_template=None, mllm_template=T.LLAVA15,
        dtypes=("float16", "float16"), text_dtype="float16",
        tokenizer_args={"legacy": False, "pad_token": "<unk>", "model_max_length": 4096,
                        "padding_side": "right"},
        mllm_generation={"bos_token_id": "<s>", "eos_token_id": "</s>", "pad_token_id": "<pad>"},
        mllm_tokenizer_args={"padding_side": "left",
                             "model_max_length": 1000000000000000019884624838656}),
}


def get_kind(name: str) -> TwinKind:
    """The TwinKind called `name` (pair config key `build.kind`)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"build.kind={name!r} is not a twin kind; choose one of "
                         f"{', '.join(sorted(KINDS))}") from None
