"""Checkpoint I/O: positioned reads of safetensors shards (`.bin` shards where a checkpoint has
no safetensors) and a planned, threaded writer.

Nothing here loads a whole model: `CheckpointReader.get` reads one tensor at a time, and
`PlannedWriter` writes each tensor straight to its planned place in a shard.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import weakref
from pathlib import Path

import torch

from harness.errors import CheckpointError
from harness.models.bin_checkpoint import (
    BIN_INDEX_NAME,
    BIN_PATTERN,
    BinShards,
    bin_files,
)
from harness.models.fingerprint import fingerprint
from harness.models.weight_index import indexed_files

log = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
INDEX_NAMES = (INDEX_NAME, BIN_INDEX_NAME)  # weight maps, which are no config to copy
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory: its safetensors (by their index when it has
    one), else its `pytorch_model*.bin` shards (likewise)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    index = directory / INDEX_NAME
    if index.is_file():
        return indexed_files(index)
    files = sorted(directory.glob("*.safetensors")) or bin_files(directory)
    if not files:
        raise CheckpointError(f"no weights in {directory}: it has neither *.safetensors nor "
                              f"{BIN_PATTERN} files")
    return files


TORCH_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
                "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
                "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def _close_fds(fds: dict[Path, int]) -> None:
    """Close a reader's shard files (each once)."""
    while fds:
        _, fd = fds.popitem()
        try:
            os.close(fd)
        except OSError:
            pass


class CheckpointReader:
    """Name → tensor access over all weight shards of a directory (safetensors, or `.bin`).

    Reads each safetensors tensor with one positioned read (`os.pread`) into its own buffer,
    using the shard's header for the offset: nothing is memory-mapped, so the process holds only
    the tensors in use (the kernel's page cache is not charged to it) and memory stays flat.
    `.bin` shards (a checkpoint without safetensors) go through the restricted unpickler and are
    copied out of their mapping tensor by tensor (harness/models/bin_checkpoint.py).
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.files = weight_files(self.directory)
        self._fds: dict[Path, int] = {}
        # closes the files when the reader is collected, or at exit while `os` still exists
        # (a __del__ run during interpreter shutdown finds the os module torn down)
        self._finalize = weakref.finalize(self, _close_fds, self._fds)
        self._meta: dict[str, tuple[Path, str, tuple[int, ...], int, int]] = {}
        self._bin: BinShards | None = None
        if self.files[0].suffix == ".bin":
            self._bin = BinShards(self.files, SAFETENSORS_DTYPES)
            self._meta = self._bin.meta
            return
        for path in self.files:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as err:
                raise CheckpointError(f"cannot open {path}: {err}") from err
            self._fds[path] = fd
            try:
                size = os.fstat(fd).st_size
                n = int.from_bytes(os.pread(fd, 8, 0), "little")
                if size < 8 or n > size - 8:
                    raise ValueError(f"header length {n} does not fit a {size}-byte file")
                header = json.loads(os.pread(fd, n, 8))
                for name, info in header.items():
                    if name == "__metadata__":
                        continue
                    begin, stop = info["data_offsets"]
                    if 8 + n + stop > size:
                        raise ValueError(f"tensor {name} ends at byte {8 + n + stop}, past the "
                                         f"end of the file: the file is truncated")
                    self._meta[name] = (path, info["dtype"], tuple(info["shape"]),
                                        8 + n + begin, stop - begin)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                self.close()
                raise CheckpointError(f"cannot read the safetensors header of {path} "
                                      f"({type(err).__name__}: {err}); the file is damaged or "
                                      f"not safetensors: re-download it") from err

    def close(self) -> None:
        """Close the shard files (also done when the reader is garbage-collected)."""
        self._finalize()
        if self._bin is not None:
            self._bin.close()

    def names(self) -> list[str]:
        """All tensor names, in file and offset order."""
        return sorted(self._meta, key=lambda k: (self._meta[k][0], self._meta[k][3]))

    def __contains__(self, name: str) -> bool:
        return name in self._meta

    def _info(self, name: str):
        try:
            return self._meta[name]
        except KeyError:
            raise CheckpointError(f"tensor {name} is not in {self.directory}") from None

    def get(self, name: str) -> torch.Tensor:
        """One tensor, read into a fresh buffer."""
        return self.read_into(name, torch.empty(self.nbytes_of(name), dtype=torch.uint8))

    def nbytes_of(self, name: str) -> int:
        """Size in bytes of one tensor's data."""
        return self._info(name)[4]

    def read_into(self, name: str, buf: torch.Tensor) -> torch.Tensor:
        """Read one tensor into `buf` (a contiguous uint8 CPU tensor of exactly its size, e.g.
        from a BufferPool) with positioned reads; returns it viewed with the tensor's dtype and
        shape."""
        path, dtype, shape, offset, n = self._info(name)
        if dtype not in TORCH_DTYPES:
            raise CheckpointError(f"tensor {name} in {path} has dtype {dtype}, which the "
                                  f"harness does not handle")
        if buf.numel() != n or buf.dtype != torch.uint8:
            raise ValueError(f"buffer of {buf.numel()} {buf.dtype} for {name} ({n} bytes)")
        if n == 0:
            return torch.empty(shape, dtype=TORCH_DTYPES[dtype])
        if self._bin is not None:
            return self._bin.read_into(name, buf.view(TORCH_DTYPES[dtype]).reshape(shape))
        view, done = memoryview(buf.numpy()), 0
        while done < n:
            got = os.preadv(self._fds[path], [view[done:]], offset + done)
            if got == 0:
                raise CheckpointError(f"{path} is truncated (tensor {name})")
            done += got
        return buf.view(TORCH_DTYPES[dtype]).reshape(shape)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of a tensor without reading it."""
        return self._info(name)[2]

    def dtype_name(self, name: str) -> str:
        """safetensors dtype string (e.g. 'BF16') of a tensor without reading it."""
        return self._info(name)[1]

    def nbytes(self) -> int:
        """Total size of the weight files on disk."""
        return sum(p.stat().st_size for p in self.files)

    def identity(self) -> dict:
        """The checkpoint's fingerprint (harness.models.fingerprint): content hashes of the
        weight files, safetensors or `.bin` (cached by size and mtime), and of the files beside
        them; the run records name a local checkpoint by the same function."""
        return fingerprint(self.directory, self.files)


SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32",
                      torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
                      torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1}


class PlannedWriter:
    """Writes safetensors shards whose layout is planned before any tensor exists.

    The names, shapes and dtypes of every output tensor are known before a merge starts, so each
    shard's header (and every tensor's byte offset) is written first and each tensor is written
    straight to its place (`os.pwrite`) by a background thread as soon as it is computed. Memory
    holds only the tensors in the write queue — never a whole shard. The queue is short (8):
    writing is the merge's slowest stage, so a deeper queue only let the engine's buffer pool
    fill to its budget (a 1b merge peaked ~0.3 GB higher with 64, at no gain in speed;
    docs/performance.md). `close()` checks
    every tensor was written, renames the shards to `model-0000i-of-0000N.safetensors` (or
    `model.safetensors`) and writes the index.
    """

    def __init__(self, directory: Path, entries: list[tuple[str, tuple[int, ...], str]],
                 shard_bytes: int, fsync: bool = False, queue_size: int = 8):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._where: dict[str, tuple[int, int, int]] = {}  # name → (shard, offset, nbytes)
        shards: list[list[tuple[str, tuple[int, ...], str, int]]] = [[]]
        size = 0
        for name, shape, dtype in entries:
            n = DTYPE_BYTES[dtype]
            for d in shape:
                n *= d
            if shards[-1] and size + n > shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append((name, tuple(shape), dtype, n))
            size += n
        self._paths, self._fds, self._sizes = [], [], []
        self._total = 0
        for i, shard in enumerate(shards):
            header, offset = {}, 0
            for name, shape, dtype, n in shard:
                header[name] = {"dtype": dtype, "shape": list(shape),
                                "data_offsets": [offset, offset + n]}
                offset += n
            header["__metadata__"] = {"format": "pt"}
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            start = 8 + len(raw)
            path = self.directory / f".shard-{i:05d}.safetensors"
            fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
            os.pwrite(fd, len(raw).to_bytes(8, "little") + raw, 0)
            os.ftruncate(fd, start + offset)
            for name, _, _, n in shard:
                self._where[name] = (i, start + header[name]["data_offsets"][0], n)
            self._paths.append(path)
            self._fds.append(fd)
            self._sizes.append(offset)
            self._total += offset
        self._names = [[name for name, *_ in shard] for shard in shards]
        self._written: set[str] = set()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            name, tensor, done_cb = item
            if self._error is not None:
                if done_cb is not None:
                    done_cb()
                continue
            try:
                shard, offset, n = self._where[name]
                # reshape(-1): a 0-d tensor cannot be viewed as bytes of another element size
                data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
                if data.nbytes != n:
                    raise CheckpointError(f"tensor {name} has {data.nbytes} bytes, the plan "
                                          f"{n}")
                if n == 0:
                    continue
                view = memoryview(data).cast("B")
                done = 0
                while done < n:
                    done += os.pwrite(self._fds[shard], view[done:], offset + done)
            except BaseException as err:  # surfaced in add()/close()
                self._error = err
            finally:
                if done_cb is not None:
                    done_cb()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise CheckpointError(f"writing {self.directory} failed: {self._error}") from self._error

    def add(self, name: str, tensor: torch.Tensor, written=None) -> None:
        """Queue one CPU tensor for writing at its planned place; `written()` (if given) is
        called once its bytes are out (or the write failed), so its buffer can be reused."""
        self._raise_if_failed()
        if name not in self._where:
            raise CheckpointError(f"tensor {name} is not in the planned output of {self.directory}")
        if name in self._written:
            raise CheckpointError(f"tensor {name} written twice to {self.directory}")
        self._written.add(name)
        self._queue.put((name, tensor, written))

    def close(self) -> dict:
        """Wait for the writes, check completeness, name the shards, write the index."""
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()
        missing = [n for n in self._where if n not in self._written]
        if missing:
            raise CheckpointError(f"{len(missing)} planned tensors were never written to "
                                  f"{self.directory}, e.g. {missing[0]}")
        for fd in self._fds:
            if self.fsync:
                os.fsync(fd)
            os.close(fd)
        n = len(self._paths)
        weight_map = {}
        for i, tmp in enumerate(self._paths):
            final = self.directory / (f"model-{i + 1:05d}-of-{n:05d}.safetensors" if n > 1
                                      else "model.safetensors")
            os.replace(tmp, final)
            weight_map.update({name: final.name for name in self._names[i]})
        index = {"metadata": {"total_size": self._total},
                 "weight_map": dict(sorted(weight_map.items()))}
        if n > 1:
            (self.directory / INDEX_NAME).write_text(json.dumps(index, indent=2))
        return index

    def abort(self) -> None:
        """Stop the writer thread after a failure (the caller removes the directory)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[2] is not None:
                item[2]()
        self._queue.put(None)
        self._thread.join(timeout=60)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
