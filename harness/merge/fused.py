"""When the fused CPU kernels (harness/merge/kernels.py) run, and loading them off the critical path.

numba costs ~0.3 s to import and ~0.5 s for its first compiled call in a process (minutes the
first time on a machine, when it compiles into its on-disk cache). The merge engine therefore
starts `preload` in a background thread as soon as it knows the method and dtypes, and runs the
torch path, which gives the same bits, on small tensors until the kernels are ready; a large
tensor (an embedding: the torch path of DARE takes ~2 s on it) waits up to WAIT_S for them.
Methods ask `fused_ok`.

merge.kernels (MergeContext.kernels):
- `auto`: fused kernels once loaded (the engine preloads those its method uses when the model
  has at least PRELOAD_ABOVE entries), torch before and for smaller models;
- `fused`: always fused on CPU, loading them on first use (tests, benchmarks of the kernels);
- `torch`: never.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Iterable

import torch

log = logging.getLogger(__name__)

FUSED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
FAMILIES = ("topk", "dare", "della")  # the kernel entry points of harness/merge/kernels.py
KERNEL_SETTINGS = ("auto", "fused", "torch")

PRELOAD_ABOVE = 1 << 27  # entries of a merge (~134 M): smaller ones stay on the torch path
WAIT_ABOVE = 1 << 25  # entries (a 32k × 1k embedding): larger tensors wait for loading kernels
WAIT_S = 3.0  # longest such wait (a first compile takes longer: the torch path goes on then)

_READY: set[tuple[str, torch.dtype]] = set()  # (family, dtype) pairs loaded in this process
_DONE: dict[tuple[str, torch.dtype], threading.Event] = {}  # set when loading ended (or failed)
_LOCK = threading.Lock()


def fused_ok(base: torch.Tensor, tuned: torch.Tensor, ctx, family: str) -> bool:
    """Whether `family`'s fused kernel takes this pair now: CPU, contiguous, both of one
    FUSED_DTYPES dtype, allowed by ctx.kernels and (for `auto`) already loaded."""
    if ctx.kernels == "torch":
        return False
    fits = (base.device.type == "cpu" and tuned.device.type == "cpu"
            and base.dtype == tuned.dtype and base.dtype in FUSED_DTYPES
            and base.is_contiguous() and tuned.is_contiguous() and base.numel() > 0)
    if not fits or ctx.kernels == "fused":
        return fits
    key = (family, base.dtype)
    done = _DONE.get(key)
    if key not in _READY and done is not None and base.numel() >= WAIT_ABOVE:
        done.wait(WAIT_S)
    return key in _READY


def preload(family: str | None, dtypes: Iterable[torch.dtype],
            entries: int = PRELOAD_ABOVE) -> threading.Thread | None:
    """Start loading `family`'s kernels for `dtypes` in a background thread, for a merge of
    `entries` tensor entries (None when there is nothing to load, or the merge is smaller than
    PRELOAD_ABOVE: loading would cost more than it saves, and its Python work would hold up the
    merge's own through the GIL); each (family, dtype) is usable by `auto` once loaded."""
    if entries < PRELOAD_ABOVE:
        return None
    todo = [(family, d) for d in dict.fromkeys(dtypes)
            if family is not None and d in FUSED_DTYPES and (family, d) not in _READY]
    if not todo:
        return None
    for key in todo:
        _DONE.setdefault(key, threading.Event())
    thread = threading.Thread(target=_load, args=(todo,), name="fused-kernels")
    thread.start()  # not a daemon: exiting waits for it, so numba never dies mid cache write
    return thread


def _load(todo: list[tuple[str, torch.dtype]]) -> None:
    with _LOCK:
        try:
            _registries_without_blas_probe()
            from harness.merge import kernels

            for key in todo:
                if key not in _READY:
                    kernels.warm(*key)
            # all at once: the merge then never launches kernels while this thread still does
            # (numba's workqueue threading layer, used where OpenMP is missing, is not
            # thread-safe)
            _READY.update(todo)
        except Exception as err:  # the torch path gives the same result, only slower
            log.warning("fused merge kernels unavailable (%s); using the torch path", err)
        finally:
            for key in todo:
                _DONE[key].set()


def _registries_without_blas_probe() -> None:
    """Import numba's array-function registry (numba.np.arraymath, which numba imports on its
    first compile or cache load in a process) without its BLAS probe: the probe imports
    scipy.linalg (0.15-0.3 s of Python under the GIL; the engine's first large tensor waits for
    the kernels, and a 1b merge measured ~0.5 s faster without it). The probe only picks how
    numba compiles np.correlate / np.convolve (a plain loop without it; the kernels use
    neither); np.dot & co. still find BLAS, as the probe is restored right after the import.
    Does nothing when the registry is loaded already or numba's layout differs."""
    if "numba.np.arraymath" in sys.modules:
        return
    try:
        from numba.np import linalg

        probe = linalg.ensure_blas
    except (ImportError, AttributeError):
        return

    def no_blas() -> None:
        raise ImportError("BLAS probe skipped by harness.merge.fused")

    linalg.ensure_blas = no_blas
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        linalg.ensure_blas = probe
