"""Which files of a hub model repository the harness reads: a pure function of its file list.

A repository often holds more than a transformers checkpoint: the same weights in a second
format (`pytorch_model*.bin` beside `model*.safetensors`, TensorFlow/Flax files, Mistral's
`consolidated.safetensors`), Meta's `original/` folder, ONNX exports, README and licence files.
The harness reads one weight format (safetensors; `.bin` only where a repository has no
safetensors, harness/models/checkpoint.py) and the configuration, tokenizer, processor and
chat-template files transformers loads — nothing else is fetched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fnmatch import fnmatch

from harness.errors import HarnessError

SAFETENSORS = re.compile(r"model(-\d+-of-\d+)?\.safetensors")
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN = re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin")
BIN_INDEX = "pytorch_model.bin.index.json"
# what transformers' AutoConfig / AutoTokenizer / AutoProcessor / GenerationConfig read
SUPPORT_FILES = ("config.json", "generation_config.json", "preprocessor_config.json",
                 "processor_config.json", "video_preprocessor_config.json",
                 "chat_template.json", "chat_template.jinja", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                 "tokenizer.model", "vocab.json", "merges.txt")
SUPPORT_PATTERNS = ("additional_chat_templates/*.jinja",)


def select_files(files: Mapping[str, int], repo: str) -> list[str]:
    """The files of repository `repo` (path → size in bytes, as the hub lists them) that the
    harness reads, sorted: one weight format with its index, and the support files.

    Raises HarnessError when the repository has no transformers weights or no config.json.
    """
    def top(pattern: re.Pattern) -> list[str]:
        return [f for f in files if pattern.fullmatch(f)]

    weights = top(SAFETENSORS)
    index = SAFETENSORS_INDEX
    if not weights:
        weights, index = top(BIN), BIN_INDEX
    if not weights:
        found = sorted(f for f in files if "/" not in f and not f.startswith("."))
        raise HarnessError(f"{repo} has no transformers weights (model*.safetensors or "
                           f"pytorch_model*.bin) at its top level; its files: "
                           f"{', '.join(found) or 'none'}")
    if "config.json" not in files:
        raise HarnessError(f"{repo} has no config.json: it is not a transformers checkpoint")
    chosen = set(weights)
    if index in files:
        chosen.add(index)
    chosen.update(f for f in SUPPORT_FILES if f in files)
    chosen.update(f for f in files if any(fnmatch(f, p) for p in SUPPORT_PATTERNS))
    return sorted(chosen)


def human_size(n: int) -> str:
    """`n` bytes in decimal units, e.g. '13.48 GB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
