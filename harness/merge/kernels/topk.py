"""TIES and Breadcrumbs, fused: tuned ← base + scale·Δ on the entries whose |Δ| ranks in
[k_drop, k_keep) (ties at a threshold: lower flat index first), base elsewhere — exactly the
mask of harness/merge/select.py's DeltaTopK, in one or two parallel passes over memory instead
of the definition's sample + gather + kthvalue + masked lerp. The ranks come from the methods
(`ties.kept`, `breadcrumbs.band`; harness/merge/accel.py). Checked: tests/test_kernels.py (both
paths, ties, crowded sub-bands, every dtype) and tests/test_merge_golden.py.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.merge.kernels.common import (
    _I32MAX,
    BLOCK,
    f32_key,
    serial_if_small,
    storage,
)
from harness.merge.kernels.topk_passes import (
    band_pass,
    count_pass,
    defer_merge,
    sample_keys,
    select_merge,
    settle_deferred,
)
from harness.merge.select import (
    _SAMPLE,
    bracket_margin,
    bracket_positions,
    delta_brackets,
)

CUTS = 5  # sample values that cut each bracket into sub-bands (two count edges each)
DEFER_SHARE = 1 / 16  # most entries a sub-band merge may defer before the band path takes over


_NONE = np.iinfo(np.int64).max  # a threshold no key exceeds


def _block_rules(b: np.ndarray, t: np.ndarray, k: int, bracket: tuple[float, float],
                 nblk: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Per-block rule of "in the top k of |Δ|" (ties at the k-th value by lower index first):
    (thr, v, quota) with thr, quota per block as `_select_block` reads them."""
    n = b.size
    if k <= 0:
        return np.full(nblk, _NONE, np.int64), 0, np.full(nblk, -1, np.int64)
    if k >= n:
        return np.full(nblk, -1, np.int64), 0, np.full(nblk, -1, np.int64)
    lo, hi = bracket
    klo = 0 if lo == float("-inf") else f32_key(lo)
    khi = 0xFFFFFFFF if hi == float("inf") else f32_key(hi)
    cap = BLOCK if (klo, khi) == (0, 0xFFFFFFFF) else \
        min(BLOCK, 1024 + int(2 * BLOCK * _band_share(n, k)))
    for _attempt in range(2):
        above, counts, buf = band_pass(b, t, np.uint32(klo), np.uint32(khi), cap)
        total_above = int(above.sum())
        overflow = bool((counts > cap).any())
        if not overflow and total_above < k <= total_above + int(counts.sum()):
            break
        # the bracket missed the k-th value (or a block overflowed): widen it to everything on
        # the side where the k-th value lies, with room for every entry
        if overflow:
            klo, khi = 0, 0xFFFFFFFF
        elif total_above >= k:
            klo, khi = khi + 1, 0xFFFFFFFF
        else:
            klo, khi = 0, klo - 1
        cap = BLOCK
    else:
        raise RuntimeError("top-k threshold did not converge")  # unreachable: 2nd pass is exact
    per_block = [buf[j * cap: j * cap + counts[j]] for j in range(nblk)]
    band = np.concatenate(per_block)
    r = k - total_above  # rank of the k-th value among the band, from the top
    v = int(np.partition(band, band.size - r)[band.size - r])
    greater = total_above + int(np.count_nonzero(band > v))
    missing = k - greater  # entries equal to v still to take, by lower index first
    eq = np.array([np.count_nonzero(b == v) for b in per_block] if missing > 0 else [0] * nblk,
                  np.int64)
    thr, quota = tie_rule(eq, v, missing)
    return thr, v, quota


def _band_share(n: int, k: int) -> float:
    """Expected share of entries inside a sample bracket (see select.delta_brackets)."""
    return min(1.0, 2 * bracket_margin(n, k) + 4.0 / _SAMPLE)


def topk_band_merge(base: torch.Tensor, tuned: torch.Tensor, k_keep: int, k_drop: int,
                    scale: float) -> torch.Tensor:
    """tuned ← base + scale·Δ on the entries in the top k_keep of |Δ| but not in the top k_drop
    (ties by lower index first), base elsewhere; ties uses k_drop = 0.

    Sampled tensors take the sub-band path (`subband_merge`); small ones, and the rare tensor
    whose sample bracket misses or whose sub-band is crowded by ties, the band path."""
    b, t = storage(base), storage(tuned)
    with serial_if_small(b.size):
        if b.size > 4 * _SAMPLE and subband_merge(b, t, k_keep, k_drop, scale):
            return tuned
        _band_merge(base, tuned, k_keep, k_drop, scale)
    return tuned


def _band_merge(base: torch.Tensor, tuned: torch.Tensor, k_keep: int, k_drop: int,
                scale: float) -> None:
    """The band path of `topk_band_merge`: exact for any tensor, two passes plus a partition."""
    b, t = storage(base), storage(tuned)
    nblk = (b.size + BLOCK - 1) // BLOCK
    brackets = delta_brackets(base, tuned, {s: k for s, k in enumerate((k_keep, k_drop))
                                            if 0 < k < b.size})
    rules = [_block_rules(b, t, k, brackets.get(s, (0.0, 0.0)), nblk)
             for s, k in enumerate((k_keep, k_drop))]
    thr = np.stack([r[0] for r in rules], axis=1)
    v = np.array([[r[1] for r in rules]] * nblk, np.int64)
    quota = np.stack([r[2] for r in rules], axis=1)
    select_merge(b, t, thr, v, quota, np.float32(scale))


def subband_edges(sample: np.ndarray, n: int, ks: list[int]) -> np.ndarray:
    """Increasing int32 key thresholds around each k-th largest of n keys, from a sorted sample:
    each sample bracket (as select.delta_brackets) is cut at CUTS sample values x, and both x − 1
    and x become edges, so a value that is tied often enough to be cut gets a sub-band
    (x − 1, x] of its own."""
    vals: set[int] = set()
    for k in ks:
        lo, hi = bracket_positions(n, k, sample.size)
        for c in range(CUTS):
            x = int(sample[lo + (hi - lo) * c // (CUTS - 1)])
            vals |= {x - 1, x}
    return np.array(sorted(vals), np.int32)


def tie_rule(eq: np.ndarray, v: int, missing: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-block (thr, quota) of "key > v, plus the first `missing` keys equal to v by index"
    (eq: per-block count of keys equal to v), as `_select_block` reads them."""
    thr = np.full(eq.size, v, np.int64)
    quota = np.full(eq.size, -1, np.int64)
    if missing > 0:
        left = missing - (np.cumsum(eq) - eq)
        thr[left >= eq] = v - 1  # every tie of the block is taken
        partial = (left > 0) & (left < eq)
        quota[partial] = left[partial]
    return thr, quota


def subband_merge(b: np.ndarray, t: np.ndarray, k_keep: int, k_drop: int, scale: float) -> str:
    """The top-k merge of `topk_band_merge` in two passes over memory:

    1. a random sample brackets each k-th largest key; `count_pass` counts, per block, the keys
       above a few thresholds across the brackets (`subband_edges`; vectorised, read-only);
    2. the counts name the sub-band (lo, hi] that holds each k-th key. If it is one value (the
       usual case for bfloat16 models, whose |Δ| repeat), the counts give each block's tie
       quota and `select_merge` merges in one pass. Otherwise `defer_merge` merges every entry
       outside the sub-bands and notes the few inside them, which `settle_deferred` merges by
       the exact k-th key, found among them.

    Returns how it merged ("counted" or "deferred"), or "" having written nothing when a bracket
    misses its k-th key or the sub-bands hold more than DEFER_SHARE of the entries: the band
    path then runs."""
    n = b.size
    nblk = (n + BLOCK - 1) // BLOCK
    ks = (k_keep, k_drop)
    active = [s for s, k in enumerate(ks) if 0 < k < n]
    edges = np.zeros(0, np.int32)
    if active:
        sample = np.sort(sample_keys(b, t, np.uint64(n * 31 + min(ks[s] for s in active)),
                                     _SAMPLE))  # numpy's SIMD sort: ~10x numba's
        edges = subband_edges(sample, n, [ks[s] for s in active])
    counts = count_pass(b, t, edges)
    total = counts.sum(axis=0)
    thr = np.full((nblk, 2), _NONE, np.int64)  # "none" selects nothing
    v = np.zeros((nblk, 2), np.int64)
    quota = np.full((nblk, 2), -1, np.int64)
    bands = [_I32MAX] * 4  # for defer_merge: slot s is (lo, hi] = bands[2s: 2s + 2]
    cols: dict[int, tuple[int, int]] = {}  # slot → count columns of its lo and hi
    above = [0, 0]
    for s, k in enumerate(ks):
        if k >= n:  # "all"
            thr[:, s] = -1
            bands[2 * s: 2 * s + 2] = [-1, -1]
        if s not in active:
            continue
        if not total[-1] < k <= total[0]:
            return ""  # the bracket missed the k-th key
        j = int(np.nonzero(total >= k)[0][-1])  # total[j] ≥ k > total[j + 1]
        lo, hi = int(edges[j]), int(edges[j + 1])
        bands[2 * s: 2 * s + 2] = [lo, hi]
        cols[s] = (j, j + 1)
        above[s] = int(total[j + 1])
        if hi == lo + 1:  # the k-th key is hi, and the counts give its ties per block
            thr[:, s], quota[:, s] = tie_rule(counts[:, j] - counts[:, j + 1], hi, k - above[s])
            v[:, s] = hi
    if all(bands[2 * s + 1] == bands[2 * s] + 1 for s in cols):
        select_merge(b, t, thr, v, quota, np.float32(scale))
        return "counted"
    per_block = _deferred_per_block(counts, bands, cols)
    if per_block.sum() > DEFER_SHARE * n:
        return ""
    offsets = np.zeros(per_block.size, np.int64)
    np.cumsum(per_block[:-1], out=offsets[1:])
    pos = np.empty(int(per_block.sum()), np.int64)
    dkeys = np.empty(pos.size, np.int32)
    defer_merge(b, t, np.array(bands, np.int32), np.float32(scale), offsets, pos, dkeys)
    rule = []
    for s, k in enumerate(ks):
        if s not in cols:
            rule += [bands[2 * s + 1], 0]  # key > hi decides: no ties to take
            continue
        lo, hi = bands[2 * s: 2 * s + 2]
        band = dkeys[(dkeys > lo) & (dkeys <= hi)]
        r = k - above[s]  # rank of the k-th key among the band, from the top
        kth = int(np.partition(band, band.size - r)[band.size - r])
        rule += [kth, k - above[s] - int(np.count_nonzero(band > kth))]
    settle_deferred(b, t, pos, dkeys, rule[0], rule[1], rule[2], rule[3], np.float32(scale))
    return "deferred"


def _deferred_per_block(counts: np.ndarray, bands: list[int],
                        cols: dict[int, tuple[int, int]]) -> np.ndarray:
    """Per block, how many keys lie in band 0 or band 1 (their union when they overlap)."""
    def inside(c_lo: int, c_hi: int) -> np.ndarray:
        return counts[:, c_lo] - counts[:, c_hi]

    if len(cols) < 2:
        return inside(*next(iter(cols.values()))) if cols else np.zeros(counts.shape[0],
                                                                         np.int64)
    (a_lo, a_hi), (b_lo, b_hi) = cols[0], cols[1]
    lo0, hi0, lo1, hi1 = bands
    if hi0 <= lo1 or hi1 <= lo0:  # disjoint
        return inside(a_lo, a_hi) + inside(b_lo, b_hi)
    c_lo = a_lo if lo0 <= lo1 else b_lo
    c_hi = a_hi if hi0 >= hi1 else b_hi
    return inside(c_lo, c_hi)
