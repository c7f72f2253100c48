"""When the fused CPU kernels (harness/merge/kernels.py) run, and loading them off the critical path.

numba costs ~0.3 s to import and ~0.1 s to load a cached kernel (leanly: see
`_cache_loads_without_registries`; minutes the first time on a machine, when it compiles into
its on-disk cache). The merge engine therefore starts `preload` in a background thread as soon
as it knows the method and dtypes, and runs the torch path, which gives the same bits, on small
tensors until the kernels are ready; a large tensor (an embedding: the torch path of DARE takes
~2 s on it) waits up to WAIT_S for them. Methods ask `fused_ok`.

merge.kernels (MergeContext.kernels):
- `auto`: fused kernels once loaded (the engine preloads those its method uses when the model
  has at least PRELOAD_ABOVE entries), torch before and for smaller models;
- `fused`: always fused on CPU, loading them on first use (tests, benchmarks of the kernels);
- `torch`: never.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

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
            from harness.merge import kernels

            with _cache_loads_without_registries():
                for key in todo:
                    if key not in _READY:
                        kernels.warm(*key)
            # all at once: the merge then never launches kernels while this thread still does
            # (numba's workqueue threading layer, used where OpenMP is missing, is not
            # thread-safe)
            _READY.update(todo)
        except Exception as err:  # noqa: BLE001 - the torch path gives the same bits, slower
            log.warning("fused merge kernels unavailable (%s); using the torch path", err)
        finally:
            for key in todo:
                _DONE[key].set()


@contextmanager
def _cache_loads_without_registries() -> Iterator[None]:
    """Within: numba loads a kernel from its on-disk cache without first installing its typing
    and lowering registries (~1000 templates and ~40 modules, 0.3 s of Python under the GIL
    while the engine's first large tensor waits; what a cached kernel needs is the runtime
    (NRT), which is still initialised). A kernel that is not cached yet compiles as usual, after
    a full refresh; so does a cached one whose lean load fails, and any numba code run later.
    Does nothing when numba's layout differs."""
    try:
        from numba.core import caching
        from numba.core.runtime import rtsys

        full_load = caching.Cache.load_overload
    except (ImportError, AttributeError):
        yield
        return

    def lean_load(cache, sig, target_context, *more, **named):
        try:  # numba's lock is held here: no compile runs meanwhile
            target_context.refresh = lambda: rtsys.initialize(target_context)
            try:
                loaded = full_load(cache, sig, target_context, *more, **named)
            finally:
                del target_context.refresh
        except Exception as err:  # noqa: BLE001 - then the full load decides
            log.debug("lean cache load of a fused kernel failed (%s); loading fully", err)
            loaded = None
        if loaded is None:
            loaded = full_load(cache, sig, target_context, *more, **named)
        return loaded

    caching.Cache.load_overload = lean_load
    try:
        yield
    finally:
        caching.Cache.load_overload = full_load
