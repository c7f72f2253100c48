"""Artefacts built here on first use (the micro pair, the twins): built once per key, under a
file lock, into a temporary folder that is renamed into place when complete."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

DONE = "build.json"  # written last by a builder: its presence marks a complete build


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_once(root: Path, key: str, what: str, build: Callable[[Path], dict]) -> Path:
    """`root/key`, complete. Unless it already holds DONE, `build(tmp)` writes it into a
    temporary folder (and DONE last, returning its stats), which is then renamed into place;
    parallel callers wait on the lock and reuse the result."""
    final = Path(root) / key
    with file_lock(Path(root) / f".{key}.lock"):
        if (final / DONE).is_file():
            log.info("reusing the %s in %s", what, final)
            return final
        log.info("building the %s into %s (once; cached afterwards)", what, final)
        tmp = Path(root) / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            stats = build(tmp)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("%s built in %.1f s", what, stats["seconds"])
    return final
