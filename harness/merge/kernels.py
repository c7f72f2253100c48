"""Fused CPU kernels (numba) for the methods whose torch form needs many passes: top-k selection
(ties, breadcrumbs), random drops (dare) and per-row ranks (della).

Each kernel reads the stored tensors directly (bfloat16 as uint16 bits, float16 as int16 bits,
float32 as is), computes in float32 and writes the merged value, rounded once, over `tuned`, in
one or two passes over memory spread on all cores. The arithmetic is the torch path's, step by
step, so the two give the same bits (tests/test_kernels.py):
    Δ = t − b (float32);  |Δ| compared through its float32 bits (non-negative floats order
    like their bit patterns);
    θ = fma(w, Δ, b) if |w| < 0.5 else fma(w − 1, Δ, t)       (torch's vectorised lerp)
    rounded to the stored dtype to nearest, ties to even.
The random draws are the counter-based SplitMix64 stream of harness/merge/randomness.py.

The torch path (harness/merge/stream.py) stays the definition and runs on GPUs, on other dtypes
and with merge.kernels=torch. Compiled kernels are cached on disk (numba cache=True); the first
use on a machine compiles each one it needs (a few seconds).
"""

from __future__ import annotations

import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from harness.merge.stream import FUSED_DTYPES as DTYPES

BLOCK = 1 << 16  # entries per selection block (per-block counts, tie quotas)
ROW_BLOCK = 16  # rows per della task


# ---- bit-level helpers ---------------------------------------------------------------------

@intrinsic
def _fma(typingctx, a, b, c):
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return sig, codegen


@intrinsic
def _u2f(typingctx, x):
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return sig, codegen


@intrinsic
def _f2u(typingctx, x):
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return sig, codegen


def _load(x):
    """float32 value of one stored entry (dispatch on the storage type)."""


def _store(f, like):
    """One float32 value rounded to the storage type of `like` (an array)."""


@overload(_load)
def _load_impl(x):
    if x == types.uint16:  # bfloat16 bits
        return lambda x: _u2f(np.uint32(x) << np.uint32(16))
    if x == types.int16:  # float16 bits
        def f16(x):
            h = np.uint32(np.uint16(x))
            sign = (h & np.uint32(0x8000)) << np.uint32(16)
            e = (h >> np.uint32(10)) & np.uint32(0x1F)
            m = h & np.uint32(0x3FF)
            bits = sign | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13))
            if e == 31:
                bits = sign | np.uint32(0x7F800000) | (m << np.uint32(13))
            elif e == 0:  # zero or subnormal: m units of 2^-24, exact in float32
                bits = sign | _f2u(np.float32(m) * np.float32(5.960464477539063e-08))
            return _u2f(bits)
        return f16
    if x == types.float32:
        return lambda x: x
    return None


@overload(_store)
def _store_impl(f, like):
    dtype = like.dtype
    if dtype == types.uint16:
        def bf16(f, like):
            u = _f2u(f)
            h = (u + (((u >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF))) >> np.uint32(16)
            if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
                h = np.uint32(0x7FC0)  # NaN
            return np.uint16(h)
        return bf16
    if dtype == types.int16:
        def f16(f, like):
            u = _f2u(f)
            sign = (u >> np.uint32(16)) & np.uint32(0x8000)
            a = u & np.uint32(0x7FFFFFFF)
            m = a - np.uint32(0x38000000)  # rebias the exponent (normal results)
            h = (m + np.uint32(0xFFF) + ((m >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
            if a > np.uint32(0x7F800000):
                h = np.uint32(0x7E00)  # NaN
            elif a >= np.uint32(0x477FF000):
                h = np.uint32(0x7C00)  # rounds to inf
            elif a < np.uint32(0x38800000):  # subnormal: units of 2^-24, to nearest even
                h = np.uint32(np.rint(_u2f(a) * np.float32(16777216.0)))
            return np.int16(np.uint16(sign | h))
        return f16
    if dtype == types.float32:
        return lambda f, like: f
    return None


@njit
def _lerp(b, t, w):
    d = t - b
    if abs(w) < np.float32(0.5):
        return _fma(w, d, b)
    return _fma(w - np.float32(1.0), d, t)


@njit
def _key(b, t):
    return _f2u(abs(t - b))


@njit
def _uniform(seed, i):
    """The i-th U[0,1) float32 draw of SplitMix64 seeded with `seed` (see randomness.py)."""
    z = seed + np.uint64(i + 1) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float32(z >> np.uint64(40)) * np.float32(5.960464477539063e-08)


# ---- kernels -------------------------------------------------------------------------------

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


@njit(parallel=True, cache=True)
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


@njit(cache=True)
def _select_block(base, tuned, thr, v, quota, scale):
    """Entries with key > thr[s] are selected for s = 0 (kept) and s = 1 (removed again); with
    quota[s] ≥ 0 also the first quota[s] entries whose key equals v[s]."""
    if quota[0] < 0 and quota[1] < 0:
        t0 = thr[0]
        t1 = thr[1]
        for i in range(base.size):
            b = _load(base[i])
            t = _load(tuned[i])
            k = np.int64(_key(b, t))
            w = scale if (k > t0) & (k <= t1) else np.float32(0.0)
            tuned[i] = _store(_lerp(b, t, w), tuned)
        return
    left0 = quota[0]
    left1 = quota[1]
    for i in range(base.size):
        b = _load(base[i])
        t = _load(tuned[i])
        k = np.int64(_key(b, t))
        in0 = k > thr[0]
        if not in0 and left0 > 0 and k == v[0]:
            in0 = True
            left0 -= 1
        in1 = k > thr[1]
        if not in1 and left1 > 0 and k == v[1]:
            in1 = True
            left1 -= 1
        w = scale if (in0 and not in1) else np.float32(0.0)
        tuned[i] = _store(_lerp(b, t, w), tuned)


@njit(parallel=True, cache=True)
def select_merge(base, tuned, thr, v, quota, scale):
    """tuned ← lerp(base, tuned, scale·[in selection 0 and not in selection 1]) per block; thr,
    v, quota are (blocks, 2) arrays of the per-block rule of `_select_block`."""
    n = base.size
    nblk = (n + BLOCK - 1) // BLOCK
    for j in prange(nblk):
        lo, hi = j * BLOCK, min(n, (j + 1) * BLOCK)
        _select_block(base[lo:hi], tuned[lo:hi], thr[j], v[j], quota[j], scale)


@njit(parallel=True, cache=True)
def dare_merge(base, tuned, seed, density, wkeep):
    """tuned ← lerp(base, tuned, wkeep·[u_i < density]), u_i the tensor's i-th draw."""
    for i in prange(base.size):
        w = wkeep if _uniform(seed, i) < density else np.float32(0.0)
        tuned[i] = _store(_lerp(_load(base[i]), _load(tuned[i]), w), tuned)


@njit(cache=True)
def _rank_row(keys, rank, work):
    """rank[c] = position of column c in the stable ascending order of keys (ties: lower column
    first). An LSD radix sort of (key, column) pairs over only the bits in which the row's keys
    differ (|Δ| of a fine-tuned model spans a few exponents and mantissa bits: usually one or
    two passes of at most 11-bit digits)."""
    k0, c0, k1, c1, hist = work
    m = keys.size
    all_and = np.uint32(0xFFFFFFFF)
    all_or = np.uint32(0)
    for c in range(m):
        all_and &= keys[c]
        all_or |= keys[c]
    diff = all_and ^ all_or
    if diff == 0:  # all keys equal: column order
        for c in range(m):
            rank[c] = c
        return
    lo = 0
    while not (diff >> np.uint32(lo)) & np.uint32(1):
        lo += 1
    hi = 31
    while not (diff >> np.uint32(hi)) & np.uint32(1):
        hi -= 1
    span = hi - lo + 1
    passes = (span + 10) // 11
    width = (span + passes - 1) // passes
    mask = np.uint32((1 << width) - 1)
    bins = 1 << width
    for c in range(m):
        k0[c] = keys[c]
        c0[c] = c
    for p in range(passes):
        shift = np.uint32(lo + p * width)
        h = hist[:bins]
        h[:] = 0
        for r in range(m):
            h[(k0[r] >> shift) & mask] += 1
        total = np.uint32(0)
        for d in range(bins):
            n_d = h[d]
            h[d] = total
            total += n_d
        for r in range(m):
            key = k0[r]
            d = (key >> shift) & mask
            pos = h[d]
            h[d] = pos + np.uint32(1)
            k1[pos] = key
            c1[pos] = c0[r]
        k0, k1 = k1, k0
        c0, c1 = c1, c0
    for r in range(m):
        rank[c0[r]] = r


@njit(cache=True)
def _della_row(base, tuned, at, seed, density, ranked, step, offset, scale, keys, rank, work):
    """One row (slices base, tuned; `at` = flat index of its first entry); see della_merge."""
    m = base.size
    if ranked:
        for c in range(m):
            keys[c] = _key(_load(base[c]), _load(tuned[c]))
        _rank_row(keys, rank, work)
    for c in range(m):
        p = density
        if ranked:
            p = np.float32(rank[c]) * step + offset
        keep = np.float32(1.0) if _uniform(seed, at + c) < p else np.float32(0.0)
        w = (keep / p) * scale
        tuned[c] = _store(_lerp(_load(base[c]), _load(tuned[c]), w), tuned)


@njit(parallel=True, cache=True)
def della_merge(base, tuned, m, seed, density, epsilon, step, offset, scale):
    """Per row of m entries: rank r of |Δ| (stable), p_r = r·step + offset (float32), keep with
    u < p_r, weight scale·1/p_r; tuned ← lerp(base, tuned, w). epsilon = 0 or m = 1: p = density."""
    rows = base.size // m
    nblk = (rows + ROW_BLOCK - 1) // ROW_BLOCK
    ranked = m > 1 and epsilon > 0
    for j in prange(nblk):
        keys = np.empty(m, np.uint32)
        rank = np.empty(m, np.uint32)
        work = (np.empty(m, np.uint32), np.empty(m, np.uint32), np.empty(m, np.uint32),
                np.empty(m, np.uint32), np.empty(2048, np.uint32))
        for row in range(j * ROW_BLOCK, min(rows, (j + 1) * ROW_BLOCK)):
            lo = row * m
            _della_row(base[lo:lo + m], tuned[lo:lo + m], lo, seed, density, ranked, step,
                       offset, scale, keys, rank, work)


# ---- torch-facing helpers --------------------------------------------------------------------

def storage(x: torch.Tensor) -> np.ndarray:
    """The flat numpy view of a tensor's storage the kernels read: bfloat16 → uint16,
    float16 → int16, float32 → float32 (a view: writes go to the tensor)."""
    flat = x.reshape(-1)
    if x.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy().view(np.uint16)
    if x.dtype == torch.float16:
        return flat.view(torch.int16).numpy()
    if x.dtype == torch.float32:
        return flat.numpy()
    raise TypeError(f"fused kernels take {DTYPES}, not {x.dtype}")


def f32_key(value: float) -> int:
    """The bit pattern of a non-negative float as float32 (orders like the value)."""
    return int(np.array(value, dtype=np.float32).view(np.uint32))


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
    thr = np.full(nblk, v, np.int64)
    quota = np.full(nblk, -1, np.int64)
    if missing > 0:
        eq = np.array([np.count_nonzero(b == v) for b in per_block], np.int64)
        left = missing - (np.cumsum(eq) - eq)
        thr[left >= eq] = v - 1  # every tie of the block is taken
        partial = (left > 0) & (left < eq)
        quota[partial] = left[partial]
    return thr, v, quota


def _band_share(n: int, k: int) -> float:
    """Expected share of entries inside a sample bracket (see select.delta_brackets)."""
    from harness.merge.select import _SAMPLE

    q = 1.0 - k / n
    margin = 4.0 * (q * (1 - q) / _SAMPLE) ** 0.5 + 2.0 / _SAMPLE
    return min(1.0, 2 * margin + 4.0 / _SAMPLE)


def topk_band_merge(base: torch.Tensor, tuned: torch.Tensor, k_keep: int, k_drop: int,
                    scale: float) -> torch.Tensor:
    """tuned ← base + scale·Δ on the entries in the top k_keep of |Δ| but not in the top k_drop
    (ties by lower index first), base elsewhere; ties uses k_drop = 0."""
    from harness.merge.select import delta_brackets

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
    return tuned


def dare(base: torch.Tensor, tuned: torch.Tensor, seed: int, density: float,
         scale: float) -> torch.Tensor:
    """DARE over `tuned` (harness/merge/methods/dare.py), fused."""
    dare_merge(storage(base), storage(tuned), np.uint64(seed), np.float32(density),
               np.float32(scale / density))
    return tuned


def della(base: torch.Tensor, tuned: torch.Tensor, seed: int, density: float, epsilon: float,
          scale: float) -> torch.Tensor:
    """DELLA over `tuned` (harness/merge/methods/della.py), fused."""
    m = tuned.shape[-1] if tuned.dim() > 0 else 1
    step = 2 * epsilon / (m - 1) if m > 1 else 0.0
    della_merge(storage(base), storage(tuned), m, np.uint64(seed), np.float32(density),
                np.float32(epsilon), np.float32(step), np.float32(density - epsilon),
                np.float32(scale))
    return tuned
