"""Pair resolution: a pair config → local directories of the base LLM and the tuned model."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from harness.errors import CheckpointError, ConfigError, HarnessError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedPair:
    """Local directories of a pair."""

    name: str
    base: Path
    mllm: Path
    multimodal: bool


def read_config(directory: Path) -> dict:
    """config.json of a checkpoint directory."""
    path = Path(directory) / "config.json"
    try:
        return json.loads(path.read_text())
    except OSError:
        raise CheckpointError(f"{path} is missing: {directory} is not a transformers checkpoint"
                              ) from None
    except ValueError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


def is_multimodal(config: dict) -> bool:
    """True for LLaVA-style configs (a vision tower beside a text model)."""
    return "vision_config" in config or "text_config" in config


def resolve_model(ref, revision: str | None = None, pair: str | None = None) -> Path:
    """A local directory for `ref`: an existing directory, or an HF id in the local cache.

    Never downloads: a missing model is a CheckpointError that says how to fetch it (with
    `python -m harness.prefetch pair=<pair>` when `pair` names a hub pair config).
    """
    path = Path(str(ref)).expanduser()
    if path.is_dir():
        return path.resolve()
    text = str(ref)
    if text.startswith(("/", ".", "~")) or text.count("/") != 1:
        raise CheckpointError(f"checkpoint directory {ref} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, revision=revision, local_files_only=True,
                                      allow_patterns=_cached_selection(text, revision)))
    except HarnessError:
        raise
    except Exception as err:  # the hub client raises several error types for "not cached"
        hint = f"python -m harness.prefetch pair={pair}" if pair else \
            f"hf download {text}" + (f" --revision {revision}" if revision else "")
        raise CheckpointError(
            f"model {text} (revision {revision or 'main'}) is neither a directory nor in the "
            f"local HF cache ({type(err).__name__}). On a machine with internet run `{hint}`, "
            f"then copy the HF cache (HF_HOME) to this machine.") from None


def _cached_selection(repo: str, revision: str | None) -> list[str] | None:
    """The files of `repo` the harness reads, chosen from the repository listing the HF cache
    keeps (None without one). prefetch downloads only these, and the hub client calls a cached
    snapshot incomplete unless it is asked for no more than it holds."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    from harness.models.hub_files import select_files

    try:
        tree = get_cached_repo_tree(repo, revision=revision)
    except CachedRepoTreeNotFoundError:
        return None
    return select_files({f.path: int(f.size or 0) for f in tree}, repo)


def resolve_pair(pair_cfg, paths_cfg) -> ResolvedPair:
    """Local directories of a pair config (`source: hub | local | micro | twin`)."""
    source = pair_cfg.get("source", "local")
    name = pair_cfg.name
    if source == "micro":
        from harness.micro import ensure_pair

        base, mllm = ensure_pair(pair_cfg, Path(paths_cfg.cache), progress=True)
    elif source == "twin":
        from harness.models import twins

        try:
            base, mllm = twins.ensure_pair(pair_cfg, Path(paths_cfg.cache))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    elif source in ("hub", "local"):
        for key in ("base", "mllm"):
            if pair_cfg.get(key) in (None, "???"):
                raise ConfigError(f"pair {name} needs pair.{key}=<directory or HF id>")
        hub = name if source == "hub" else None  # prefetch only knows hub pairs
        base = resolve_model(pair_cfg.base, pair_cfg.get("base_revision"), hub)
        mllm = resolve_model(pair_cfg.mllm, pair_cfg.get("mllm_revision"), hub)
    else:
        raise ConfigError(f"pair.source={source!r} is not valid; choose hub, local, micro or twin")
    return ResolvedPair(name, Path(base), Path(mllm), is_multimodal(read_config(mllm)))
