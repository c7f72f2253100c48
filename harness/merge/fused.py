"""When the fused CPU kernels (harness/merge/kernels.py) run, and loading them off the critical path.

numba costs ~0.3 s to import and ~0.5 s for its first compiled call in a process (minutes the
first time on a machine, when it compiles into its on-disk cache). The merge engine therefore
starts `preload` in a background thread as soon as it knows the method and dtypes, and runs the
torch path, which gives the same bits, until the kernels are ready. Methods ask `fused_ok`.

merge.kernels (MergeContext.kernels):
- `auto`: fused kernels once loaded (the engine preloads those its method uses), torch before;
- `fused`: always fused on CPU, loading them on first use (tests, benchmarks of the kernels);
- `torch`: never.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterable

import torch

log = logging.getLogger(__name__)

FUSED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
FAMILIES = ("topk", "dare", "della")  # the kernel entry points of harness/merge/kernels.py
KERNEL_SETTINGS = ("auto", "fused", "torch")

_READY: set[tuple[str, torch.dtype]] = set()  # (family, dtype) pairs loaded in this process
_LOCK = threading.Lock()


def fused_ok(base: torch.Tensor, tuned: torch.Tensor, ctx, family: str) -> bool:
    """Whether `family`'s fused kernel takes this pair now: CPU, contiguous, both of one
    FUSED_DTYPES dtype, allowed by ctx.kernels and (for `auto`) already loaded."""
    if ctx.kernels == "torch":
        return False
    fits = (base.device.type == "cpu" and tuned.device.type == "cpu"
            and base.dtype == tuned.dtype and base.dtype in FUSED_DTYPES
            and base.is_contiguous() and tuned.is_contiguous() and base.numel() > 0)
    return fits and (ctx.kernels == "fused" or (family, base.dtype) in _READY)


def preload(family: str | None, dtypes: Iterable[torch.dtype]) -> threading.Thread | None:
    """Start loading `family`'s kernels for `dtypes` in a background thread (None when there is
    nothing to load); each (family, dtype) becomes usable by `auto` as soon as it is loaded."""
    todo = [(family, d) for d in dict.fromkeys(dtypes)
            if family is not None and d in FUSED_DTYPES and (family, d) not in _READY]
    if not todo:
        return None
    thread = threading.Thread(target=_load, args=(todo,), name="fused-kernels")
    thread.start()  # not a daemon: exiting waits for it, so numba never dies mid cache write
    return thread


def _load(todo: list[tuple[str, torch.dtype]]) -> None:
    with _LOCK:
        try:
            from harness.merge import kernels

            for family, dtype in todo:
                if (family, dtype) not in _READY:
                    kernels.warm(family, dtype)
                    _READY.add((family, dtype))
        except Exception as err:  # the torch path gives the same result, only slower
            log.warning("fused merge kernels unavailable (%s); using the torch path", err)
