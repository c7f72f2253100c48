"""The optional CPU accelerator: fused numba kernels (harness/merge/kernels/) for the methods
whose torch form takes many passes (ties, breadcrumbs, dare, della). They give the same bits as
the methods' definitions (tests/test_kernels.py, tests/test_merge_golden.py); method files know
nothing of them. The engine asks `try_merge` for every tensor: the one dispatch point.

numba costs ~0.3 s to import and ~0.4 s to load the cached kernels (minutes the first time on a
machine, when it compiles into its on-disk cache). The engine therefore starts `preload` in a
background thread as soon as it knows the method and dtypes, and runs the torch path on small
tensors until the kernels are ready; a large tensor (an embedding: the torch path of DARE takes
~2 s on it) waits up to WAIT_S for them.

merge.kernels:
- `auto`: kernels once loaded (preloaded when the model has at least PRELOAD_ABOVE entries),
  the torch path before and for smaller models;
- `fused`: always, loading them on first use (tests, benchmarks of the kernels);
- `torch`: never.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import torch

log = logging.getLogger(__name__)

KERNEL_SETTINGS = ("auto", "fused", "torch")
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
PRELOAD_ABOVE = 1 << 27  # entries of a merge (~134 M): smaller ones stay on the torch path
WAIT_ABOVE = 1 << 25  # entries (a 32k × 1k embedding): larger tensors wait for loading kernels
WAIT_S = 3.0  # longest such wait (a first compile takes longer: the torch path goes on then)


def _ties(base, tuned, p, ctx):
    from harness.merge import kernels
    from harness.merge.methods import ties

    return kernels.topk_band_merge(base, tuned, ties.kept(p, base.numel()), 0, p.scale)


def _breadcrumbs(base, tuned, p, ctx):
    from harness.merge import kernels
    from harness.merge.methods import breadcrumbs

    dropped, end = breadcrumbs.band(p, base.numel())
    return kernels.topk_band_merge(base, tuned, end, dropped, p.scale)


def _dare(base, tuned, p, ctx):
    from harness.merge import kernels
    from harness.merge.methods import dare

    return kernels.dare(base, tuned, dare.stream_seed(p, ctx), p.density, dare.kept_weight(p))


def _della(base, tuned, p, ctx):
    from harness.merge import kernels
    from harness.merge.methods import della

    m = tuned.shape[-1] if tuned.dim() > 0 else 1
    return kernels.della(base, tuned, della.stream_seed(p, ctx), p.density,
                         della.rank_line(p.density, p.epsilon, m), p.scale)


def fused_for(spec) -> tuple[str, Callable[..., Any]] | None:
    """(kernel family of kernels.warm, the fused merge of one tensor written over tuned) of a
    registered method, or None: the kernels accelerate exactly these definitions (matched by
    their weight function, so a method registered elsewhere under the same name is not), and
    take the parameters the way the method's own module derives them (ties.kept,
    breadcrumbs.band, dare.stream_seed / kept_weight, della.stream_seed / rank_line)."""
    from harness.merge.methods import breadcrumbs, dare, della, ties

    return {ties.weight: ("topk", _ties), breadcrumbs.weight: ("topk", _breadcrumbs),
            dare.weight: ("dare", _dare), della.weight: ("della", _della)}.get(spec.weight)


_READY: set[tuple[str, torch.dtype]] = set()  # (family, dtype) pairs loaded in this process
_DONE: dict[tuple[str, torch.dtype], threading.Event] = {}  # set when loading ended (or failed)
_LOCK = threading.Lock()


def try_merge(spec, base: torch.Tensor, tuned: torch.Tensor, p, ctx, setting: str) -> bool:
    """Merge one tensor with the fused kernel of method `spec` (over `tuned`) when the setting
    allows it and the kernel takes this pair: CPU, contiguous, both of one DTYPES dtype, loaded
    (for `auto`). False: the caller runs the method's definition."""
    fused = None if setting == "torch" else fused_for(spec)
    if fused is None:
        return False
    fits = (base.device.type == "cpu" and tuned.device.type == "cpu"
            and base.dtype == tuned.dtype and base.dtype in DTYPES
            and base.is_contiguous() and tuned.is_contiguous() and base.numel() > 0)
    if not fits:
        return False
    family, merge = fused
    if setting == "auto":
        key = (family, base.dtype)
        done = _DONE.get(key)
        if key not in _READY and done is not None and base.numel() >= WAIT_ABOVE:
            done.wait(WAIT_S)
        if key not in _READY:
            return False
    merge(base, tuned, p, ctx)
    return True


def preload(spec, dtypes: Iterable[torch.dtype],
            entries: int = PRELOAD_ABOVE) -> threading.Thread | None:
    """Start loading the kernels of method `spec` for `dtypes` in a background thread, for a
    merge of `entries` tensor entries (None when there is nothing to load, or the merge is
    smaller than PRELOAD_ABOVE: loading would cost more than it saves, and its Python work would
    hold up the merge's own through the GIL); each (family, dtype) is usable by `auto` once
    loaded."""
    fused = fused_for(spec)
    if entries < PRELOAD_ABOVE or fused is None:
        return None
    family = fused[0]
    todo = [(family, d) for d in dict.fromkeys(dtypes) if d in DTYPES and (family, d) not in _READY]
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
