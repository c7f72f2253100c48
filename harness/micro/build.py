"""Building (and caching) the micro pair: `<cache>/micro/<hash of build config>/{base,mllm}`."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

import harness.micro.world as W
from harness import numerics
from harness.models.build_once import DONE, build_once

log = logging.getLogger(__name__)

DEFAULT_BUILD = {
    "version": 1,
    "seed": 0,
    "arch": {"hidden": 128, "layers": 4, "intermediate": 384, "heads": 4,
             "vision_hidden": 64, "vision_layers": 2},
    "language": {"steps": 3000, "batch": 32, "lr": 3e-3, "n_train": 3000},
    "visual": {"steps": 1500, "batch": 32, "lr": 1e-3, "n_train": 1500},
    "threads": 2,
}


def build_key(build_cfg: dict) -> str:
    """Cache key of a build: its config, the torch release and the CPU numerics that train it
    (another torch or other kernels give other weights, so a cached build is not reused)."""
    ident = {"build": build_cfg, "torch": torch.__version__, "numerics": numerics.identity()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def build_pair(out: Path, build_cfg: dict, progress: bool = True) -> dict:
    """Train and save the micro pair into `out/base` and `out/mllm`; return build stats."""
    from transformers import GenerationConfig

    from harness.micro.models import make_llama, make_llava, make_processor
    from harness.micro.tokenizer import build_tokenizer
    from harness.micro.train import train_language, train_visual

    start = time.perf_counter()
    cpu = numerics.describe()
    if cpu["mode"] == "portable" and cpu["aten_capability"] != "AVX2":
        log.warning("building the micro pair with ATen's %s kernels, not AVX2 (torch computed "
                    "before harness was imported, or this CPU lacks AVX2): its weights and "
                    "scores will differ from other machines'", cpu["aten_capability"])
    threads = int(build_cfg.get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    seed = int(build_cfg["seed"])
    world = W.make_world()
    tok = build_tokenizer(world)
    tok_mm = build_tokenizer(world, multimodal=True)
    base = make_llama(tok, build_cfg["arch"], seed)
    lang_loss = train_language(base, tok, world, build_cfg["language"], seed, progress)
    gen = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id, do_sample=False, max_new_tokens=16)
    base.generation_config = gen
    base.save_pretrained(out / "base")
    tok.save_pretrained(out / "base")
    t_base = time.perf_counter() - start
    processor = make_processor(tok_mm)
    mllm = make_llava(base, tok_mm, build_cfg["arch"], seed + 1)
    vis_loss = train_visual(mllm, tok_mm, processor, build_cfg["visual"], seed + 1, progress)
    mllm.generation_config = gen
    mllm.save_pretrained(out / "mllm")
    processor.save_pretrained(out / "mllm")
    stats = {"build": build_cfg, "seconds": round(time.perf_counter() - start, 1),
             "seconds_base": round(t_base, 1), "language_loss": lang_loss,
             "visual_loss": vis_loss, "torch_threads": torch.get_num_threads(),
             "torch": torch.__version__, "cpu_numerics": numerics.describe()}
    (out / DONE).write_text(json.dumps(stats, indent=2))
    return stats


def ensure_built(build_cfg: dict, root: Path, progress: bool = True) -> Path:
    """The directory of a complete build of `build_cfg` under `root`, building it if missing."""
    return build_once(root, build_key(build_cfg), "micro pair",
                      lambda tmp: build_pair(tmp, build_cfg, progress))


def ensure_pair(pair_cfg, cache_root: Path, progress: bool = True) -> tuple[Path, Path]:
    """(base_dir, mllm_dir) of the micro pair described by `pair_cfg.build`."""
    build = pair_cfg.get("build")
    build = OmegaConf.to_container(build, resolve=True) if OmegaConf.is_config(build) else build
    build = build or DEFAULT_BUILD
    root = ensure_built(build, Path(cache_root) / "micro", progress)
    return root / "base", root / "mllm"
