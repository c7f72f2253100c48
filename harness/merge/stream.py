"""The chunked in-place lerp: how the engine turns (base, tuned, a method's weight) into the
merged tensor.

Every method is θ = lerp(θ_base, θ_tuned, w) = θ_base + w·(θ_tuned − θ_base) with a scalar or
per-entry weight w (harness/merge/registry.py). `lerp_into` computes it chunk by chunk in
float32 and writes the result, cast once to the tuned dtype, over `tuned` itself: no full-size
float32 copy of either input ever exists, the float32 work stays in a few cache-sized scratch
buffers that are reused for every chunk of every tensor (fresh memory costs a page fault per
4 KiB, which here costs more than the arithmetic), and the output buffer is the tuned tensor's
own read buffer.

A scalar w on inputs of one dtype takes `torch.lerp` directly (one fused pass; for bfloat16 and
float16 it computes in float32 and rounds once, bit-identical to the chunked path).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, Union

import torch

DEFAULT_CHUNK = 1 << 20  # entries per float32 chunk: 4 MiB, about a core's share of L3

Weight = Union[float, Callable[[int, int, torch.Tensor, torch.Tensor], Union[torch.Tensor, float]]]


@dataclass(frozen=True)
class MergeContext:
    """What a method needs besides the tensors: the run seed and the tensor's (base) name, which
    seed stochastic methods, and the chunk size in entries."""

    seed: int = 0
    name: str = ""
    chunk: int = DEFAULT_CHUNK


_LOCAL = threading.local()


def scratch(slot: int, n: int, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    """A reusable 1-D buffer of at least n entries (per thread, slot, device and dtype)."""
    cache = getattr(_LOCAL, "buffers", None)
    if cache is None:
        cache = _LOCAL.buffers = {}
    key = (slot, str(device), dtype)
    buf = cache.get(key)
    if buf is None or buf.numel() < n:
        buf = cache[key] = torch.empty(max(n, DEFAULT_CHUNK), dtype=dtype, device=device)
    return buf[:n]


def release_scratch() -> None:
    """Free this thread's scratch buffers (after a merge)."""
    _LOCAL.buffers = {}


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """x as a 2-D (rows, last dimension) view; a 1-D tensor is one row, a 0-d one a 1×1."""
    if x.dim() == 0:
        return x.reshape(1, 1)
    return x.reshape(-1, x.shape[-1])


def spans(n: int, row_len: int, chunk: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of whole rows covering n rows of row_len entries, ≈chunk entries each."""
    step = max(1, chunk // max(1, row_len))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def flat_spans(n: int, chunk: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of ≤ chunk entries covering n entries."""
    return [(i, min(n, i + chunk)) for i in range(0, n, max(1, chunk))]


def chunks(base: torch.Tensor, tuned: torch.Tensor, chunk: int = DEFAULT_CHUNK,
           rows: bool = False) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """Walk a (base, tuned) pair of one shape in order, one chunk at a time: the one loop of
    every place that reads a tensor pair in chunks (docs/methods.md, "How a method sees the
    tensors").

    Yields (lo, hi, fb, ft): fb / ft are float32 copies of the chunk of base / tuned, in this
    thread's scratch slots 0 and 1, valid until the next step (the consumer may overwrite them).
    Flat chunks are entry ranges [lo, hi) of ≤ `chunk` entries, fb / ft 1-D; with `rows=True`
    they are whole-row ranges [lo, hi) of the (rows, last dimension) view (`as_rows`), ≈`chunk`
    entries each, fb / ft (hi − lo, m). The inputs are only read, so a consumer may write the
    chunk's result back into tuned at [lo, hi) before taking the next step.
    """
    if base.shape != tuned.shape:
        raise ValueError(f"base {tuple(base.shape)} and tuned {tuple(tuned.shape)} differ")
    if rows:
        b2, t2 = as_rows(base), as_rows(tuned)
        m = b2.shape[1]
        ranges = spans(b2.shape[0], m, chunk)
    else:
        b2, t2 = base.reshape(-1), tuned.reshape(-1)
        m = 1
        ranges = flat_spans(b2.numel(), chunk)
    for lo, hi in ranges:
        k = (hi - lo) * m
        fb = scratch(0, k, base.device)
        ft = scratch(1, k, base.device)
        if rows:
            fb, ft = fb.view(-1, m), ft.view(-1, m)
        fb.copy_(b2[lo:hi])
        ft.copy_(t2[lo:hi])
        yield lo, hi, fb, ft


def lerp_into(base: torch.Tensor, tuned: torch.Tensor, weight: Weight, ctx: MergeContext,
              rows: bool = False) -> torch.Tensor:
    """tuned ← base + w·(tuned − base), in float32, cast once to tuned's dtype; returns tuned.

    `weight` is a float, or `weight(lo, hi, fb, ft)` returning the float32 weight of one chunk
    (a tensor broadcastable to fb, or a float), called on the chunks of `chunks` in order.
    """
    if base.shape != tuned.shape:
        raise ValueError(f"base {tuple(base.shape)} and tuned {tuple(tuned.shape)} differ")
    if not callable(weight) and base.dtype == tuned.dtype and tuned.is_floating_point():
        return torch.lerp(base, tuned, float(weight), out=tuned)
    out = as_rows(tuned) if rows else tuned.reshape(-1)
    for lo, hi, fb, ft in chunks(base, tuned, ctx.chunk, rows):
        w = weight(lo, hi, fb, ft) if callable(weight) else weight
        fb.lerp_(ft, w)
        out[lo:hi].copy_(fb)
    return tuned


def abs_delta(fb: torch.Tensor, ft: torch.Tensor, slot: int = 2) -> torch.Tensor:
    """|ft − fb| of one float32 chunk, in a scratch buffer (valid until the slot's next use)."""
    out = scratch(slot, fb.numel(), fb.device).view(fb.shape)
    return torch.sub(ft, fb, out=out).abs_()


def for_each_delta(base: torch.Tensor, tuned: torch.Tensor, ctx: MergeContext,
                   fn: Callable[[int, int, torch.Tensor], None], rows: bool = False) -> None:
    """Call fn(lo, hi, |Δ| chunk) over the chunks of a (base, tuned) pair, in order, without
    changing either (a read-only pass, e.g. to find a top-k threshold)."""
    for lo, hi, fb, ft in chunks(base, tuned, ctx.chunk, rows):
        fn(lo, hi, abs_delta(fb, ft))
