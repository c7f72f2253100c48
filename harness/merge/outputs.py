"""The non-weight files of a merge output: configs, tokenizer, processor, chat template."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

from harness.errors import MergeError
from harness.models.checkpoint import INDEX_NAMES, WEIGHT_SUFFIXES

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "added_tokens.json", "vocab.json", "merges.txt",
                   "chat_template.jinja", "chat_template.json")


# text model type → causal-LM class, for the families LLaVA checkpoints use (no transformers import)
CAUSAL_LM = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
             "qwen2": "Qwen2ForCausalLM", "gemma": "GemmaForCausalLM",
             "vicuna": "LlamaForCausalLM"}


def check_free_disk(directory: Path, needed_bytes: int) -> None:
    """MergeError when `directory`'s file system has less room than the output needs."""
    free = shutil.disk_usage(directory).free
    margin = 64 * 1024 * 1024
    if free < needed_bytes * 1.02 + margin:
        raise MergeError(f"not enough free disk in {directory}: the merge needs about "
                         f"{(needed_bytes * 1.02 + margin) / 1e9:.2f} GB (outputs "
                         f"{needed_bytes / 1e9:.2f} GB, plus 2 % and 64 MB of margin), "
                         f"{free / 1e9:.2f} GB are free. Free space or point paths.merges "
                         f"elsewhere.")


def _is_weight(path: Path) -> bool:
    return path.name in INDEX_NAMES or path.suffix in WEIGHT_SUFFIXES or path.name.startswith(".")


def write_mllm_files(out: Path, tuned_dir: Path) -> None:
    """Copy every non-weight file of the tuned model (config, processor, tokenizer, template);
    the config then declares the dtypes the merge wrote (`declare_written_dtypes`)."""
    for src in sorted(Path(tuned_dir).rglob("*")):
        if src.is_file() and not _is_weight(src):
            dst = out / src.relative_to(tuned_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    declare_written_dtypes(out)


def write_llm_files(out: Path, tuned_dir: Path, base_dir: Path, tuned_cfg: dict,
                    multimodal: bool, vocab_rows: int | None) -> None:
    """Config, generation config and tokenizer of out/llm (a text-only causal LM).

    For a multimodal tuned model the config is its text config as a *ForCausalLM with the tuned
    vocabulary size; the tokenizer and chat template come from the tuned model (so prompts match
    the MLLM's), falling back to the base's.
    """
    if not multimodal:
        write_mllm_files(out, tuned_dir)
        return

    text = dict(tuned_cfg.get("text_config") or {})
    model_type = text.get("model_type", "llama")
    arch = CAUSAL_LM.get(model_type)
    if arch is None:  # rare types: ask transformers (a slow import, hence the table above)
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if arch is None:
        raise MergeError(f"{tuned_dir}: the text model type {model_type!r} has no causal-LM "
                         f"class in transformers; cannot write out/llm")
    text["model_type"] = model_type
    text["architectures"] = [arch]
    text.setdefault("tie_word_embeddings", bool(tuned_cfg.get("tie_word_embeddings", False)))
    for key in ("dtype", "torch_dtype", "transformers_version"):
        if key in tuned_cfg and key not in text:
            text[key] = tuned_cfg[key]
    if vocab_rows is not None:
        text["vocab_size"] = vocab_rows
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(text, indent=2, sort_keys=True))
    declare_written_dtypes(out)
    for name in ("generation_config.json",):
        src = tuned_dir / name if (tuned_dir / name).is_file() else base_dir / name
        if src.is_file():
            shutil.copy2(src, out / name)
    source = tuned_dir if (tuned_dir / "tokenizer_config.json").is_file() else base_dir
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    keep_text_template(out, base_dir)


# safetensors dtype → the name config.json uses
CONFIG_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}


def written_dtypes(directory: Path) -> tuple[str | None, str | None]:
    """(dtype of the checkpoint, dtype of its language model) as config.json names them: the
    floating-point dtype holding the most bytes among all tensors, and among the language
    model's (None when there is no such tensor)."""
    from harness.models.checkpoint import CheckpointReader
    from harness.models.keymap import detect_layout, to_base_name

    reader = CheckpointReader(directory)
    try:
        names = reader.names()
        layout = detect_layout(names, str(directory))
        every, language = Counter(), Counter()
        for name in names:
            dtype = CONFIG_DTYPES.get(reader.dtype_name(name))
            if dtype is None:
                continue
            every[dtype] += reader.nbytes_of(name)
            if to_base_name(name, layout) is not None:
                language[dtype] += reader.nbytes_of(name)
    finally:
        reader.close()

    def top(counts: Counter) -> str | None:
        return counts.most_common(1)[0][0] if counts else None

    return top(every), top(language)


def declare_written_dtypes(out: Path) -> None:
    """Make out/'s config.json declare the dtype its weights were written in (`dtype` and
    `torch_dtype`; the text_config's from the language model's tensors): a tuned config may
    declare another (llava-hf's LLaVA-NeXT repos: bfloat16 for the text model over float16
    weights), and an evaluator loading with dtype `auto` follows the declaration."""
    path = out / "config.json"
    cfg = json.loads(path.read_text())
    overall, language = written_dtypes(out)
    if overall is None:
        return
    cfg["dtype"] = cfg["torch_dtype"] = overall
    if isinstance(cfg.get("text_config"), dict):
        cfg["text_config"]["dtype"] = cfg["text_config"]["torch_dtype"] = language or overall
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


PROBE = "What is the capital of France?"


def chat_template(directory: Path) -> str | None:
    """The chat template a tokenizer loaded from `directory` uses: chat_template.jinja, else
    tokenizer_config.json's `chat_template` (a string, or the `default` of a named list)."""
    jinja = Path(directory) / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = Path(directory) / "tokenizer_config.json"
    try:
        template = json.loads(config.read_text()).get("chat_template")
    except (OSError, ValueError):
        return None
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def keeps_text(template: str) -> bool:
    """True when `template` renders a plain-string user message with its text. A processor's
    multimodal template iterates content parts and silently drops a string."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def fail(message):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = fail
    try:
        text = env.from_string(template).render(
            messages=[{"role": "user", "content": PROBE}], add_generation_prompt=True,
            bos_token="", eos_token="", pad_token="", unk_token="")
    except Exception:  # a template that fails on a string message drops it just the same
        return False
    return PROBE in text


def text_template(template: str | None, base_dir: Path) -> str | None:
    """The chat template out/llm keeps given the tuned tokenizer's `template`: that one when it
    keeps a plain-string message (or is None: no template), else the base LLM's when that one
    does, else none."""
    if template is None or keeps_text(template):
        return template
    base = chat_template(base_dir)
    return base if base is not None and keeps_text(base) else None


def llm_template(tuned_dir: Path, base_dir: Path, multimodal: bool) -> str | None:
    """The chat template `write_llm_files` gives out/llm for this pair, read from the pair's own
    files before anything is merged or loaded (None: out/llm will have none)."""
    tuned_dir, base_dir = Path(tuned_dir), Path(base_dir)
    if not multimodal:
        return chat_template(tuned_dir)
    source = tuned_dir if (tuned_dir / "tokenizer_config.json").is_file() else base_dir
    return text_template(chat_template(source), base_dir)


def keep_text_template(out: Path, base_dir: Path) -> None:
    """out/llm is a text-only model: its chat template must keep a plain-string message. When
    the tuned model's is a multimodal one that drops it (a processor's chat_template.jinja saved
    beside the tokenizer), out/llm gets the base LLM's template instead, or none (then
    eval.chat_template=true is refused before anything loads: harness/eval/preflight.py)."""
    template = chat_template(out)
    (out / "chat_template.json").unlink(missing_ok=True)  # a processor file; out/llm has none
    kept = text_template(template, base_dir)
    if kept == template:
        return
    _drop_template(out)
    if kept is not None:
        (out / "chat_template.jinja").write_text(kept)
        log.warning("out/llm: the tuned model's chat template drops plain-text messages (a "
                    "multimodal processor template); out/llm uses the base LLM's (%s)", base_dir)
    else:
        log.warning("out/llm: the tuned model's chat template drops plain-text messages and the "
                    "base LLM has none that keeps them; out/llm has no chat template")


def _drop_template(out: Path) -> None:
    (out / "chat_template.jinja").unlink(missing_ok=True)
    config = out / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        if data.pop("chat_template", None) is not None:
            config.write_text(json.dumps(data, indent=2))
