"""Provenance: library versions and the git commit of the harness."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "transformers", "safetensors", "lm_eval", "lmms_eval", "hydra-core",
             "wandb", "numpy")


def library_versions() -> dict:
    """Installed versions of the libraries that can change a result (None when absent)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    from harness import __version__
    out["harness"] = __version__
    return out


def git_sha() -> str | None:
    """Commit of the harness checkout (with `-dirty` when it has local changes), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
