"""Checkpoint I/O: lazy (mmap) reads of safetensors shards and a sharded, threaded writer.

Nothing here loads a whole model: `CheckpointReader.get` maps one tensor at a time, and
`ShardedWriter` holds at most one shard's worth of tensors before handing it to a writer thread.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from harness.errors import CheckpointError

log = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (by its index when it has one)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    index = directory / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{index} is not a valid safetensors index: {err}") from err
        files = sorted({directory / f for f in weight_map.values()})
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} lists {missing[0].name}, which is missing from "
                                  f"{directory}; re-download the checkpoint")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        bins = sorted(p.name for p in directory.glob("*.bin"))
        hint = (f" (it has {bins[0]}: convert it to safetensors with transformers' "
                f"save_pretrained(safe_serialization=True))" if bins else "")
        raise CheckpointError(f"no *.safetensors weights in {directory}{hint}")
    return files


class CheckpointReader:
    """Name → tensor access over all safetensors shards of a directory, memory-mapped."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.files = weight_files(self.directory)
        self._handles = {}
        self._where: dict[str, Path] = {}
        for path in self.files:
            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
            except Exception as err:  # safetensors raises its own error types
                raise CheckpointError(f"cannot read {path}: {err}") from err
            self._handles[path] = handle
            for name in handle.keys():
                self._where[name] = path

    def names(self) -> list[str]:
        """All tensor names, in file order."""
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str) -> torch.Tensor:
        """One tensor (a view of the mmap for CPU; no copy until it is converted)."""
        try:
            return self._handles[self._where[name]].get_tensor(name)
        except KeyError:
            raise CheckpointError(f"tensor {name} is not in {self.directory}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of a tensor without reading it."""
        return tuple(self._handles[self._where[name]].get_slice(name).get_shape())

    def dtype_name(self, name: str) -> str:
        """safetensors dtype string (e.g. 'BF16') of a tensor without reading it."""
        return self._handles[self._where[name]].get_slice(name).get_dtype()

    def nbytes(self) -> int:
        """Total size of the weight files on disk."""
        return sum(p.stat().st_size for p in self.files)

    def identity(self) -> list[dict]:
        """What identifies the weights cheaply: file names, sizes and modification times."""
        return [{"file": p.name, "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
                for p in self.files]


class ShardedWriter:
    """Writes tensors into `model-0000i-of-0000N.safetensors` shards plus an index.

    Tensors are buffered up to `shard_bytes`; full shards are saved by a background thread so
    writing overlaps with computing the next tensors. `close()` renames shards to their final
    names and writes the index; it must be called once, after the last `add`.
    """

    def __init__(self, directory: Path, shard_bytes: int, metadata: dict | None = None,
                 fsync: bool = False):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shard_bytes = max(1, int(shard_bytes))
        self.metadata = metadata or {"format": "pt"}
        self.fsync = fsync
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffer_bytes = 0
        self._shards: list[tuple[Path, list[str]]] = []
        self._total = 0
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            path, tensors = item
            if self._error is not None:
                continue
            try:
                save_file(tensors, str(path), metadata=self.metadata)
                if self.fsync:
                    with open(path, "rb") as fh:
                        os.fsync(fh.fileno())
            except BaseException as err:  # surfaced in add()/close()
                self._error = err

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise CheckpointError(f"writing {self.directory} failed: {self._error}") from self._error

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Queue one tensor (contiguous, CPU) for writing."""
        self._raise_if_failed()
        nbytes = tensor.numel() * tensor.element_size()
        if self._buffer and self._buffer_bytes + nbytes > self.shard_bytes:
            self._flush()
        self._buffer[name] = tensor.contiguous()
        self._buffer_bytes += nbytes
        self._total += nbytes

    def _flush(self) -> None:
        if not self._buffer:
            return
        path = self.directory / f".shard-{len(self._shards):05d}.safetensors"
        self._shards.append((path, list(self._buffer)))
        self._queue.put((path, self._buffer))
        self._buffer, self._buffer_bytes = {}, 0

    def close(self) -> dict:
        """Flush, wait for the writer thread, name shards, write the index; return it."""
        self._flush()
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()
        n = len(self._shards)
        weight_map = {}
        for i, (tmp, names) in enumerate(self._shards):
            final = self.directory / (f"model-{i + 1:05d}-of-{n:05d}.safetensors" if n > 1
                                      else "model.safetensors")
            os.replace(tmp, final)
            weight_map.update({name: final.name for name in names})
        index = {"metadata": {"total_size": self._total}, "weight_map": dict(sorted(weight_map.items()))}
        if n > 1:
            (self.directory / INDEX_NAME).write_text(json.dumps(index, indent=2))
        return index

    def abort(self) -> None:
        """Stop the writer thread after a failure (the caller removes the directory)."""
        self._buffer = {}
        self._queue.put(None)
        self._thread.join(timeout=60)
