"""Checkpoints of a pair: finding one (a directory or an HF id in the local cache), reading its
config, and the default name of a local pair. Which source a pair comes from (hub, local, micro,
twin) and what identifies it: harness.pairs."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import CheckpointError, HarnessError

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


def local_pair_name(base, mllm) -> str:
    """Default name of a local pair: `local-<mllm folder name>-<6 hex of both absolute paths>`,
    so two local pairs never share a name (and a table) unless given one (`pair.name=...`)."""
    where = [str(Path(str(p)).expanduser().resolve()) for p in (base, mllm)]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(where[1]).name).strip("._-") or "pair"
    return f"local-{stem}-{hashlib.sha256(chr(0).join(where).encode()).hexdigest()[:6]}"


def _local_name_resolver(*, _parent_) -> str:
    from omegaconf import OmegaConf

    if any(OmegaConf.is_missing(_parent_, k) or _parent_.get(k) is None
           for k in ("base", "mllm")):
        return "local"  # resolve_pair then asks for the missing directory
    return local_pair_name(_parent_.base, _parent_.mllm)


def register_resolver() -> None:
    """Register `${local_pair_name:}` (conf/pair/local.yaml's default name; idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("local_pair_name"):
        OmegaConf.register_new_resolver("local_pair_name", _local_name_resolver)
