"""merge.json: the manifest that says a merge output is complete, and the lock around writing it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

MERGE_JSON = "merge.json"


def identity_digest(identity: dict) -> str:
    """Hash of what determines a merge (method, params, seed, input files)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def load_merge_report(out) -> dict | None:
    """The report of a complete merge in `out`, or None (missing, unreadable or incomplete)."""
    path = Path(out) / MERGE_JSON
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("status") != "complete":
        return None
    if not (Path(out) / "llm").is_dir():
        return None
    return report


@contextlib.contextmanager
def merge_lock(out: Path):
    """Exclusive lock on a merge output: concurrent merges of the same output wait, then reuse."""
    lock_path = out.parent / f".{out.name}.lock"
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is writing %s; waiting for it", out)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
