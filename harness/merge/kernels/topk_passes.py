"""The numba passes of the top-|Δ| merges (TIES, Breadcrumbs): per-block band gathering,
counting above thresholds, the one-pass select-and-merge, and the deferred sub-band merge.
Driven by harness/merge/kernels/topk.py; checked against the definitions (DeltaTopK in
harness/merge/select.py) by tests/test_kernels.py and the golden digests
(tests/test_merge_golden.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from harness.merge.kernels.common import (
    _I32MAX,
    BLOCK,
    _key,
    _lerp,
    _load,
    _mix,
    _store,
)

SUB = 256  # entries per vectorised sub-block of the sub-band passes


@njit(cache=True)
def _band_block(base, tuned, klo, khi, buf, at, cap):
    # loops run over range(0, size) of slices: a non-negative index lets numba skip the
    # negative-index wraparound that otherwise stops vectorisation (~5x slower)
    # branch-free counting and one rarely taken branch: mispredicted branches, not arithmetic,
    # bound this loop
    above = 0
    c = 0
    width = khi - klo
    for i in range(base.size):
        k = _key(_load(base[i]), _load(tuned[i]))
        above += np.int64(k > khi)
        if np.uint32(k - klo) <= width:  # klo ≤ k ≤ khi
            if c < cap:
                buf[np.uint64(at + c)] = k
            c += 1
    return above, c


@njit(parallel=True, cache=True, nogil=True)
def band_pass(base, tuned, klo, khi, cap):
    """Per block of BLOCK entries: how many |Δ| keys are > khi, and the keys in [klo, khi]
    (at most `cap` per block are kept; counts[j] > cap means that block overflowed)."""
    n = base.size
    nblk = (n + BLOCK - 1) // BLOCK
    above = np.zeros(nblk, np.int64)
    counts = np.zeros(nblk, np.int64)
    buf = np.empty(nblk * cap, np.uint32)
    for j in prange(nblk):
        lo, hi = j * BLOCK, min(n, (j + 1) * BLOCK)
        a, c = _band_block(base[lo:hi], tuned[lo:hi], klo, khi, buf, j * cap, cap)
        above[j] = a
        counts[j] = c
    return above, counts, buf


@njit
def _take(k, thr, v, left):
    """(whether key k is selected, ties left to take): k > thr, or k == v while left > 0."""
    if k > thr:
        return True, left
    if left > 0 and k == v:
        return True, left - 1
    return False, left


@njit(cache=True)
def _select_block(base, tuned, thr, v, quota, scale):
    """Entries with key > thr[s] are selected for s = 0 (kept) and s = 1 (removed again); with
    quota[s] ≥ 0 also the first quota[s] entries whose key equals v[s]."""
    if quota[0] < 0 and quota[1] < 0:
        # keys are < 2^31: thresholds clamped to int32 compare the same, 8 lanes instead of 4
        t0 = np.int32(min(max(thr[0], -1), _I32MAX))
        t1 = np.int32(min(max(thr[1], -1), _I32MAX))
        for i in range(base.size):
            b = _load(base[i])
            t = _load(tuned[i])
            k = np.int32(_key(b, t))
            w = scale if (k > t0) & (k <= t1) else np.float32(0.0)
            tuned[i] = _store(_lerp(b, t, w), tuned)
        return
    left0 = quota[0]
    left1 = quota[1]
    for i in range(base.size):
        b = _load(base[i])
        t = _load(tuned[i])
        k = np.int64(_key(b, t))
        in0, left0 = _take(k, thr[0], v[0], left0)
        in1, left1 = _take(k, thr[1], v[1], left1)
        w = scale if (in0 and not in1) else np.float32(0.0)
        tuned[i] = _store(_lerp(b, t, w), tuned)


@njit(parallel=True, cache=True, nogil=True)
def select_merge(base, tuned, thr, v, quota, scale):
    """tuned ← lerp(base, tuned, scale·[in selection 0 and not in selection 1]) per block; thr,
    v, quota are (blocks, 2) arrays of the per-block rule of `_select_block`."""
    n = base.size
    nblk = (n + BLOCK - 1) // BLOCK
    for j in prange(nblk):
        lo, hi = j * BLOCK, min(n, (j + 1) * BLOCK)
        _select_block(base[lo:hi], tuned[lo:hi], thr[j], v[j], quota[j], scale)


@njit(cache=True)
def sample_keys(base, tuned, seed, m):
    """The |Δ| keys (int32) of m entries drawn uniformly (SplitMix64 from `seed`)."""
    n = base.size
    out = np.empty(m, np.int32)
    for i in range(m):
        u = np.float64(_mix(seed, i) >> np.uint64(11)) * 1.1102230246251565e-16  # 2^-53
        j = min(n - 1, np.int64(u * n))
        out[i] = np.int32(_key(_load(base[j]), _load(tuned[j])))
    return out


@njit
def _count_above(keys, m, thr):
    # int32 sums truncated at every step: numba would widen them to int64 (4 lanes, not 8)
    c = np.int32(0)
    for i in range(m):
        c = np.int32(c + np.int32(keys[i] > thr))
    return c


@njit(cache=True)
def _count_block(base, tuned, edges, keys, out):
    # keys of SUB entries at a time (vectorised), then one vectorised compare-count per edge
    n = base.size
    for s in range(0, n, SUB):
        b = base[s:s + SUB]
        t = tuned[s:s + SUB]
        for i in range(b.size):
            keys[i] = np.int32(_key(_load(b[i]), _load(t[i])))
        for e in range(edges.size):
            out[e] += _count_above(keys, b.size, edges[e])


@njit(parallel=True, cache=True, nogil=True)
def count_pass(base, tuned, edges):
    """counts[j, e] = how many |Δ| keys of block j are > edges[e] (read-only, no branches)."""
    n = base.size
    nblk = (n + BLOCK - 1) // BLOCK
    counts = np.zeros((nblk, edges.size), np.int64)
    for j in prange(nblk):
        keys = np.empty(SUB, np.int32)
        lo, hi = j * BLOCK, min(n, (j + 1) * BLOCK)
        _count_block(base[lo:hi], tuned[lo:hi], edges, keys, counts[j])
    return counts


@njit(cache=True)
def _defer_block(base, tuned, at, bands, scale, keys, pos, dkeys, c):
    lo0, hi0, lo1, hi1 = bands[0], bands[1], bands[2], bands[3]
    n = base.size
    for s in range(0, n, SUB):
        b = base[s:s + SUB]
        t = tuned[s:s + SUB]
        nd = np.int32(0)
        for i in range(b.size):  # vectorised: merge the decided entries, keep the deferred
            bf = _load(b[i])
            tf = _load(t[i])
            k = np.int32(_key(bf, tf))
            keys[i] = k
            d = ((k > lo0) & (k <= hi0)) | ((k > lo1) & (k <= hi1))
            w = scale if (k > hi0) & (k <= hi1) else np.float32(0.0)
            new = _store(_lerp(bf, tf, w), t)
            t[i] = t[i] if d else new
            nd = np.int32(nd + np.int32(d))
        if nd > 0:  # rare: note the deferred entries, in index order
            for i in range(b.size):
                k = keys[i]
                if ((k > lo0) & (k <= hi0)) | ((k > lo1) & (k <= hi1)):
                    pos[c] = at + s + i
                    dkeys[c] = k
                    c += 1
    return c


@njit(parallel=True, cache=True, nogil=True)
def defer_merge(base, tuned, bands, scale, offsets, pos, dkeys):
    """tuned ← lerp(base, tuned, scale·[key > hi0 and key ≤ hi1]) except the entries whose key
    lies in band 0 (lo0, hi0] or band 1 (lo1, hi1] (bands = [lo0, hi0, lo1, hi1]): those stay,
    and their flat index and key go to pos, dkeys from offsets[j] on for block j."""
    n = base.size
    nblk = (n + BLOCK - 1) // BLOCK
    for j in prange(nblk):
        keys = np.empty(SUB, np.int32)
        lo, hi = j * BLOCK, min(n, (j + 1) * BLOCK)
        _defer_block(base[lo:hi], tuned[lo:hi], lo, bands, scale, keys, pos, dkeys, offsets[j])


@njit(cache=True, nogil=True)
def settle_deferred(base, tuned, pos, dkeys, v0, miss0, v1, miss1, scale):
    """Merge the deferred entries (in index order) by the exact rules: in selection s when
    key > v_s, or key == v_s among the first miss_s such entries."""
    left0 = np.int64(miss0)
    left1 = np.int64(miss1)
    for c in range(pos.size):
        k = np.int64(dkeys[c])
        in0, left0 = _take(k, v0, v0, left0)
        in1, left1 = _take(k, v1, v1, left1)
        w = scale if in0 and not in1 else np.float32(0.0)
        i = pos[c]
        tuned[i] = _store(_lerp(_load(base[i]), _load(tuned[i]), w), tuned)
