"""What a checkpoint directory holds, as a fingerprint: the identity of local weights.

A fingerprint lists every weight file (the caller's list, e.g. `weight_files(directory)`, so
any format the reader handles fits) and every other file beside them (config, tokenizer,
processor, chat template) with its size and the SHA-256 of its content, and sums them in one
digest. Hashing a weight file reads it once (about 1.4 GB/s); the result is cached under
`<cache root>/fingerprints/` keyed by the file's absolute path, size, mtime and ctime, so later
fingerprints of unchanged files only `stat` them. A file rewritten in place (a checkpoint
rebuilt at the same path) has a new mtime and is hashed again. A file of the HF cache stored as
an LFS blob is named by its SHA-256 already, and is not read.

The merge engine (as its input identity, `CheckpointReader.identity`) and the run records (as
the pair's identity) both use `fingerprint`, so a merge and a record agree on what they read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from harness import paths

log = logging.getLogger(__name__)

# Files beside the weights that are not part of what a model computes.
IGNORED = {"README.md", ".gitattributes", "LICENSE", "LICENSE.txt", "USE_POLICY.md"}
SHA256 = re.compile(r"[0-9a-f]{64}")
# Non-weight files up to this size are hashed every time (configs, tokenizers).
SMALL_BYTES = 256 << 20


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def file_sha256(path: Path, cache: Path | None = None) -> str:
    """SHA-256 of a file's content, cached by (absolute path, size, mtime, ctime) under
    `<cache>/fingerprints/` (default cache: harness.paths.cache_root()). An unwritable cache
    only costs the hash next time."""
    path = Path(path).resolve()
    if path.parent.name == "blobs" and SHA256.fullmatch(path.name):
        return path.name  # an HF cache blob of an LFS file is named by its content's SHA-256
    key = _stat_key(path)
    folder = Path(cache if cache is not None else paths.cache_root()) / "fingerprints"
    entry = folder / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")
    try:
        stored = json.loads(entry.read_text())
        if stored.get("key") == key and stored.get("path") == str(path):
            return stored["sha256"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    digest = _sha256(path)
    if _stat_key(path) != key:  # written while we read it: do not remember this hash
        return digest
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fp-", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"path": str(path), "key": key, "sha256": digest}, fh)
        os.replace(tmp, entry)
    except OSError as err:
        log.debug("fingerprint cache %s not written (%s)", folder, err)
    return digest


def fingerprint(directory: Path, weights: list[Path], cache: Path | None = None) -> dict:
    """The fingerprint of a checkpoint directory whose weight files are `weights`:
    {"digest": "sha256:<16 hex>", "files": [{"file", "bytes", "sha256"}, ...]} over the weight
    files and the other (non-hidden, top-level) files beside them. Paths are not part of it: the
    same checkpoint copied elsewhere has the same fingerprint."""
    directory = Path(directory)
    weights = sorted(Path(w) for w in weights)
    names = {w.name for w in weights}
    others = sorted(p for p in directory.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.name not in IGNORED
                    and p.name not in names and p.stat().st_size <= SMALL_BYTES
                    and not p.name.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt",
                                             ".msgpack", ".h5")))
    files = [{"file": w.name, "bytes": w.stat().st_size, "sha256": file_sha256(w, cache)}
             for w in weights]
    files += [{"file": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p)} for p in others]
    text = json.dumps(files, sort_keys=True)
    return {"digest": "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16], "files": files}
