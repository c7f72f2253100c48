"""PyTorch `.bin` checkpoints: reading them safely, and writing them from safetensors.

Some hub repositories ship only `pytorch_model*.bin` shards (pickles written by `torch.save`).
They are read with `torch.load(weights_only=True, mmap=True)`: the restricted unpickler accepts
tensors and plain containers only, so a pickle that would run code is refused before anything in
it runs. The tensors stay memory-mapped; one shard is mapped at a time and the pages of each tensor
are dropped from the process once it has been copied out, so memory stays flat however large the
checkpoint is.

transformers 5 no longer writes `.bin` files; `safetensors_to_bin` writes them (sharded, with
the index transformers reads) for tests and for the `.bin` twin.
"""

from __future__ import annotations

import ctypes
import json
import logging
import mmap
import pickle
import threading
import zipfile
from pathlib import Path

import torch

from harness.errors import CheckpointError
from harness.models.weight_index import indexed_files

log = logging.getLogger(__name__)

BIN_INDEX_NAME = "pytorch_model.bin.index.json"
BIN_PATTERN = "pytorch_model*.bin"

_MADV_DONTNEED = 4  # Linux value; elsewhere madvise is not attempted
try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
    _MADVISE = _LIBC.madvise
    _MADVISE.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
except (OSError, AttributeError):
    _MADVISE = None


def _why(err: BaseException) -> str:
    """The informative part of a torch.load error (its messages run to a dozen lines)."""
    text = str(err)
    at = text.find("WeightsUnpickler error:")
    if at >= 0:
        rest = text[at + len("WeightsUnpickler error:"):]
        line = next((ln.strip() for ln in rest.splitlines() if ln.strip()), "")
        return line.split(" was not an allowed global")[0][:160]
    return f"{type(err).__name__}: {(text.splitlines() or [''])[0][:160]}"


def load_shard(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of one `.bin` file through the restricted unpickler, and whether they are
    memory-mapped (torch's zip format) rather than loaded (its legacy format).

    Raises CheckpointError naming the file when the pickle holds anything but a flat dict of
    tensors (code, classes, nested training state) or is no torch checkpoint.
    """
    # a pre-zip (torch < 1.6) file cannot be mapped: it is read whole, still restricted
    mapped = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} was refused by the restricted unpickler ({_why(err)}): it holds more than "
            f"plain tensors (code, objects) or is no torch checkpoint, and was not loaded; get "
            f"the weights as safetensors, or convert the file yourself if you trust its source"
        ) from None
    except (RuntimeError, OSError, ValueError, EOFError) as err:
        raise CheckpointError(
            f"cannot read {path} as a torch checkpoint ({_why(err)}); the file is damaged or "
            f"not a torch.save zip file: re-download it (or get the safetensors weights)"
        ) from None
    if not mapped:
        log.warning("%s is in torch's legacy format: it is loaded whole, not mapped", path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of "
                              f"tensors: it is not a transformers weight file")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor: the file is "
                f"not a transformers state dict (a training checkpoint?); save its model's "
                f"state_dict() instead")
    return obj, mapped


def _drop_pages(tensor: torch.Tensor) -> None:
    """Release the mapped pages behind `tensor` from this process (they are clean copies of the
    file, read again on a later access), so mapped shards do not accumulate in its memory.
    Only for tensors of a private file mapping: on ordinary memory this would zero them."""
    if _MADVISE is None:
        return
    storage = tensor.untyped_storage()
    start, n = storage.data_ptr(), storage.nbytes()
    if n == 0:
        return
    page = mmap.PAGESIZE
    first = start - start % page
    _MADVISE(first, start + n - first, _MADV_DONTNEED)


class BinShards:
    """Name → tensor access over the `.bin` shards of a checkpoint.

    `meta` maps each name to (file, safetensors dtype string, shape, position in its file,
    nbytes): the same table CheckpointReader keeps for safetensors. Reads copy one tensor at a
    time out of the mapping of its shard; only one shard is mapped at once (readers go in file
    order).
    """

    def __init__(self, files: list[Path], dtype_names: dict):
        self.files = list(files)
        self.meta: dict[str, tuple[Path, str, tuple[int, ...], int, int]] = {}
        self._lock = threading.Lock()
        self._open: tuple[Path, dict[str, torch.Tensor], bool] | None = None
        for path in self.files:
            tensors, _ = load_shard(path)
            for pos, (name, t) in enumerate(tensors.items()):
                if name in self.meta:
                    raise CheckpointError(f"tensor {name} is in both {self.meta[name][0].name} "
                                          f"and {path.name}: the checkpoint is inconsistent")
                dtype = dtype_names.get(t.dtype, str(t.dtype).removeprefix("torch."))
                self.meta[name] = (path, dtype, tuple(t.shape), pos,
                                   t.numel() * t.element_size())
            del tensors

    def tensor(self, name: str) -> tuple[torch.Tensor, bool]:
        """Tensor `name` (its shard mapped, or loaded, if it is not already) and whether it is
        memory-mapped."""
        path = self.meta[name][0]
        with self._lock:
            if self._open is None or self._open[0] != path:
                self._open = None  # unmaps the previous shard before mapping the next
                self._open = (path, *load_shard(path))
            return self._open[1][name], self._open[2]

    def read_into(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """Copy tensor `name` into `out` (its dtype and shape) and release its mapped pages."""
        src, mapped = self.tensor(name)
        if src.dtype != out.dtype or tuple(src.shape) != tuple(out.shape):
            raise CheckpointError(f"tensor {name} in {self.meta[name][0]} changed while being "
                                  f"read ({src.dtype} {tuple(src.shape)})")
        out.copy_(src)
        if mapped:
            _drop_pages(src)
        return out

    def close(self) -> None:
        """Unmap the open shard."""
        with self._lock:
            self._open = None


def bin_files(directory: Path) -> list[Path]:
    """The `.bin` weight files of a checkpoint directory (by its index when it has one); empty
    when it has none."""
    index = directory / BIN_INDEX_NAME
    if index.is_file():
        return indexed_files(index)
    return sorted(directory.glob(BIN_PATTERN))


def safetensors_to_bin(src: Path, dst: Path, shard_bytes: int = 10 * 2**30) -> list[Path]:
    """Write the weights of safetensors checkpoint `src` as `.bin` shards in `dst`, as
    transformers 4 saved them: `pytorch_model.bin`, or `pytorch_model-0000i-of-0000N.bin` plus
    `pytorch_model.bin.index.json` when they exceed `shard_bytes`. Tensor names, order, dtypes
    and values are kept. When `dst` is `src`, the safetensors files (and their index) are removed,
    leaving a `.bin`-only checkpoint. Returns the files written."""
    from harness.models.checkpoint import INDEX_NAME, CheckpointReader

    src, dst = Path(src), Path(dst)
    reader = CheckpointReader(src)
    if reader.files[0].suffix != ".safetensors":
        raise CheckpointError(f"{src} has no safetensors weights to convert")
    shards: list[list[str]] = [[]]
    size = 0
    for name in reader.names():
        n = reader.nbytes_of(name)
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    dst.mkdir(parents=True, exist_ok=True)
    total, weight_map, written = 0, {}, []
    for i, names in enumerate(shards):
        fname = (f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin" if len(shards) > 1
                 else "pytorch_model.bin")
        torch.save({name: reader.get(name) for name in names}, dst / fname)
        weight_map.update({name: fname for name in names})
        total += sum(reader.nbytes_of(name) for name in names)
        written.append(dst / fname)
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (dst / BIN_INDEX_NAME).write_text(json.dumps(index, indent=2))
        written.append(dst / BIN_INDEX_NAME)
    sources = list(reader.files)
    reader.close()
    if dst.resolve() == src.resolve():
        for path in [*sources, src / INDEX_NAME]:
            path.unlink(missing_ok=True)
    return written
