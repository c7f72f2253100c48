"""The `hub` and `local` pair sources: two checkpoints given as HF ids (found in the local HF
cache, never downloaded) or directories.

A checkpoint is identified by what it holds, not by what it is called: an HF cache snapshot by
its repository and resolved commit sha (a revision such as `main` is resolved offline, through
the cache's refs), any other directory by its fingerprint (harness.models.fingerprint: content
hashes of the weight files and of the files beside them). A checkpoint rebuilt at the same path
therefore gives new merge and run ids.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import CheckpointError, ConfigError
from harness.models.checkpoint import weight_files
from harness.models.fingerprint import fingerprint
from harness.models.pair import resolve_model
from harness.pairs import PairSource, register

COMMIT = re.compile(r"[0-9a-f]{40}")


def snapshot_commit(directory: Path) -> str | None:
    """The commit sha of an HF cache snapshot directory (`.../snapshots/<sha>`), else None."""
    directory = Path(directory)
    if directory.parent.name == "snapshots" and COMMIT.fullmatch(directory.name):
        return directory.name
    return None


def checkpoint_identity(ref, revision: str | None = None) -> dict:
    """What identifies one checkpoint: {"repo", "commit"} for an HF cache snapshot,
    {"fingerprint", "files", "bytes"} for a directory, or {"ref", "revision", "missing": true}
    when it cannot be found here (resolving the pair then fails with the fetch command)."""
    try:
        path = resolve_model(ref, revision)
    except CheckpointError:
        return {"ref": str(ref), "revision": revision, "missing": True}
    commit = snapshot_commit(path)
    if commit is not None and not Path(str(ref)).expanduser().is_dir():
        return {"repo": str(ref), "commit": commit}
    fp = fingerprint(path, weight_files(path))
    return {"fingerprint": fp["digest"], "files": len(fp["files"]),
            "bytes": sum(f["bytes"] for f in fp["files"])}


def _check(pair: dict) -> None:
    for key in ("base", "mllm"):
        if pair.get(key) in (None, "???"):
            raise ConfigError(f"pair {pair.get('name')} needs pair.{key}=<directory or HF id>")


def resolve(pair: dict, cache: Path) -> tuple[Path, Path]:
    """(base, mllm) directories: existing directories, or HF ids in the local HF cache."""
    _check(pair)
    hub = pair.get("name") if pair.get("source") == "hub" else None  # prefetch knows hub pairs
    return (resolve_model(pair["base"], pair.get("base_revision"), hub),
            resolve_model(pair["mllm"], pair.get("mllm_revision"), hub))


def identity(pair: dict) -> dict:
    """{"base": ..., "mllm": ...}: checkpoint_identity of each side."""
    _check(pair)
    return {"base": checkpoint_identity(pair["base"], pair.get("base_revision")),
            "mllm": checkpoint_identity(pair["mllm"], pair.get("mllm_revision"))}


register(PairSource("hub", resolve, identity))
register(PairSource("local", resolve, identity))
