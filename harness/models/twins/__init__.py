"""Twin pairs: tiny random-weight copies of the paper's three pairs, built on first use.

A twin has its real pair's model classes, config fields, tokenizer family and special-token
layout, processor, image-token handling, chat templates, dtypes and safetensors key layout; only
sizes shrink (pair config `build:` block) and the weights are random (the MLLM's language model is
the base's plus Gaussian noise). It exercises everything the harness does with a real pair —
key mapping, vocabulary rows, both evaluators' loading, prompting and anyres image expansion — in
seconds on a CPU. docs/twins.md has the fidelity table.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import OmegaConf

KEYS = ("kind", "version", "seed", "perturb", "text", "vision")
# Bump when the builder writes other files or weights for the same build block: cached twins
# (and the merges and runs named after them) are then rebuilt, not reused.
BUILDER_REVISION = 2


def build_key(spec: dict) -> str:
    """Cache key of a twin build: its spec, the builder revision and the torch / transformers /
    tokenizers releases (they decide the random weights and the files written)."""
    import tokenizers
    import torch
    import transformers

    ident = {"build": spec, "builder": BUILDER_REVISION, "torch": torch.__version__, "transformers": transformers.__version__,
             "tokenizers": tokenizers.__version__}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def twin_spec(pair_cfg) -> dict:
    """The `build:` block of a twin pair config as a plain dict, checked for its keys."""
    build = pair_cfg.get("build")
    build = OmegaConf.to_container(build, resolve=True) if OmegaConf.is_config(build) else build
    name = pair_cfg.get("name")
    if not isinstance(build, dict):
        raise ValueError(f"pair {name}: source=twin needs a build: block with {', '.join(KEYS)}")
    missing = [k for k in KEYS if k not in build]
    if missing:
        raise ValueError(f"pair {name}: build: lacks {', '.join(missing)} "
                         f"(see conf/pair/twin_llava15_vicuna_7b.yaml)")
    return build


def ensure_pair(pair_cfg, cache_root: Path) -> tuple[Path, Path]:
    """(base_dir, mllm_dir) of the twin pair `pair_cfg`, built into
    `<cache_root>/twins/<name>/<build key>/` on first use and reused afterwards."""
    from harness.models.twins.build import ensure_built

    spec = twin_spec(pair_cfg)
    root = Path(cache_root) / "twins" / str(pair_cfg.name)
    final = ensure_built(spec, root, build_key(spec))
    return final / "base", final / "mllm"
