"""Run identities and result records: `results/runs/<run_id>/result.json`, written atomically.

A record is complete when its `status` is "complete"; a complete record is never recomputed
unless `force=true`. The run id is a hash of `identity(cfg)`, everything that determines the
result (the merge identity shared with the merge engine, and the score identity), so a rerun of
the same configuration finds its record and a changed method, draw definition, task file or
library release never reuses an old one. The record stores the identity in readable form.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

RESULT_FILE = "result.json"


# Libraries whose release can move a score: a record made with another release is not reused.
SCORE_LIBRARIES = ("torch", "transformers", "lm_eval", "lmms_eval")


def _digest(obj: Any, n: int = 10) -> str:
    """Stable short hash of a JSON-able object."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def pair_identity(cfg: DictConfig) -> dict:
    """What determines a pair's weights, by content (harness.pairs): a local checkpoint's
    fingerprint (content hashes of its files), a hub checkpoint's resolved commit, a built
    pair's build key; plus the pair's name, the label of its records and tables."""
    from harness.pairs import pair_identity as identity_of

    return identity_of(cfg.pair)


def merge_identity(cfg: DictConfig) -> dict:
    """What determines a merged model: the pair, and the method identity the merge engine uses
    too (method, params with defaults, seed, draw definition, method revision)."""
    from harness.merge.identity import method_identity

    return {"pair": pair_identity(cfg),
            **method_identity(cfg.method.name, _plain(cfg.method.get("params")), cfg.seed)}


def merge_id(cfg: DictConfig) -> str:
    """Directory name of a merge output under `paths.merges`."""
    ident = merge_identity(cfg)
    return f"{ident['pair']['name']}-{ident['method']}-{_digest(ident)}"


def score_identity(cfg: DictConfig) -> dict:
    """What determines the scores of a merged model: the suite (benchmarks with task, shots,
    metric, filter), limit, backend, dtype, chat template, the content of the suite's local task
    files, and the releases of the scoring libraries. Not batch size or device."""
    from harness.eval.suite import task_paths
    from harness.versions import library_versions

    ev = _plain(cfg.eval)
    ident = {k: ev.get(k) for k in ("name", "benchmarks", "limit", "backend", "dtype")}
    ident["chat_template"] = bool(ev.get("chat_template", False))
    # keyed as configured (not by absolute path: two checkouts give the same run ids)
    ident["task_files"] = {str(entry): files_digest(path) for entry, path
                           in zip(ev.get("task_paths") or [], task_paths(cfg.eval))}
    versions = library_versions()
    ident["versions"] = {name: versions[name] for name in SCORE_LIBRARIES}
    if ev.get("max_new_tokens"):
        ident["max_new_tokens"] = int(ev["max_new_tokens"])
    if ev.get("data_root"):
        ident["data"] = mirror_identity(cfg.eval)
    return ident


def mirror_identity(eval_cfg) -> str:
    """A hash of the mirror under `eval.data_root` (relative file names, sizes, dataset cards;
    not its absolute path: the same mirror copied elsewhere gives the same run ids)."""
    from harness.eval.mirror import mirror_digest
    from harness.eval.suite import data_root

    return mirror_digest(data_root(eval_cfg))


def files_digest(folder: Path) -> str:
    """Hash of the names and contents of every file under `folder` (caches left out)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(f"{path.relative_to(folder)}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def identity(cfg: DictConfig) -> dict:
    """Everything that determines a run's result, readable: {"merge": ..., "score": ...}."""
    return {"merge": merge_identity(cfg), "score": score_identity(cfg)}


def run_id(cfg: DictConfig) -> str:
    """Id of a run: `<pair>-<method>-<hash of identity(cfg)>`."""
    return run_id_of(identity(cfg))


def run_id_of(ident: dict) -> str:
    """The run id of an identity made by `identity(cfg)`."""
    return f"{ident['merge']['pair']['name']}-{ident['merge']['method']}-{_digest(ident)}"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to `path` via a temporary file in the same directory and an atomic rename.
    The file gets the mode of any file the user creates (0666 less the umask): mkstemp's 0600
    would hide the record from the teammates sharing a results directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        mask = os.umask(0o022)  # reading the umask means setting it; put back at once
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_record(run_dir: Path) -> dict | None:
    """The record in `run_dir` if it exists, parses and is complete; else None."""
    path = Path(run_dir) / RESULT_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("status") != "complete":
        return None
    return record


def write_record(run_dir: Path, record: dict) -> Path:
    """Write a complete record atomically and return its path."""
    record = dict(record)
    record["status"] = "complete"
    path = Path(run_dir) / RESULT_FILE
    write_json_atomic(path, record)
    return path
