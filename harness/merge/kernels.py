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
The random draws are the counter-based SplitMix64 stream of harness/merge/randomness.py, two
per generator output.

The torch path (harness/merge/stream.py) stays the definition and runs on GPUs, on other dtypes
and with merge.kernels=torch. Compiled kernels are cached on disk (numba cache=True); the first
use on a machine compiles each one it needs (a few seconds).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from harness.merge.accel import DTYPES
from harness.merge.select import (
    _SAMPLE,
    bracket_margin,
    bracket_positions,
    delta_brackets,
)

BLOCK = 1 << 16  # entries per selection block (per-block counts, tie quotas)
ROW_BLOCK = 16  # rows per della task
RANK_BINS = 8192  # most half-bins of a della row's count (and at most 2 per entry)
LONG_INSERTION = 96  # most long keys of a row sorted by insertion (more: radix sort)
SUB = 256  # entries per vectorised sub-block of the sub-band passes
DRAW_RUN = 2048  # draws per buffered run of dare's kernel
CUTS = 5  # sample values that cut each bracket into sub-bands (two count edges each)
DEFER_SHARE = 1 / 16  # most entries a sub-band merge may defer before the band path takes over
_I32MAX = np.iinfo(np.int32).max
SERIAL_BELOW = 1 << 18  # entries: smaller tensors run on one thread


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


def _u32_op(name):
    """A uint32 binary op in 32-bit arithmetic (numba widens uint32 arithmetic to 64 bits, which
    halves the lanes of vectorised loops)."""
    @intrinsic
    def op(typingctx, a, b):
        sig = types.uint32(types.uint32, types.uint32)

        def codegen(context, builder, signature, args):
            return getattr(builder, name)(args[0], args[1])
        return sig, codegen
    return op


_add32, _sub32, _mul32 = _u32_op("add"), _u32_op("sub"), _u32_op("mul")
_shr32, _shl32 = _u32_op("lshr"), _u32_op("shl")
_and32, _or32 = _u32_op("and_"), _u32_op("or_")


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
            u = _f2u(f)  # 32-bit arithmetic (see _u32_op): only NaNs carry out of bit 31
            h = _shr32(_add32(u, _add32(_and32(_shr32(u, np.uint32(16)), np.uint32(1)),
                                        np.uint32(0x7FFF))), np.uint32(16))
            if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
                h = np.uint32(0x7FC0)  # NaN
            return np.uint16(h)
        return bf16
    if dtype == types.int16:
        def f16(f, like):
            u = _f2u(f)
            sign = (u >> np.uint32(16)) & np.uint32(0x8000)
            a = u & np.uint32(0x7FFFFFFF)
            # rebias the exponent (normal results; the others wrap, and are replaced below)
            m = _sub32(a, np.uint32(0x38000000))
            h = _shr32(_add32(_add32(m, np.uint32(0xFFF)), _and32(_shr32(m, np.uint32(13)),
                                                                    np.uint32(1))), np.uint32(13))
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


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's state step


@njit
def _state(seed, i):
    """SplitMix64's state for its i-th output (seeded with `seed`): seed + (i + 1)·_GOLDEN; the
    next output's state is this + _GOLDEN. Loops over consecutive draws add the step instead of
    multiplying (a third of the multiplies of a draw, which AVX2 builds from three 32-bit ones)."""
    return seed + np.uint64(i + 1) * _GOLDEN


@njit
def _scramble(z):
    """SplitMix64's output for state z."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit
def _mix(seed, i):
    """The i-th 64-bit output of SplitMix64 seeded with `seed` (see randomness.py)."""
    return _scramble(_state(seed, i))


_DRAW = np.float32(5.960464477539063e-08)  # 2^-24: one draw's step


@njit
def _even(x):
    """The even-index draw of generator output x: its top 24 bits (see randomness.py)."""
    return np.float32(x >> np.uint64(40)) * _DRAW


@njit
def _odd(x):
    """The odd-index draw of generator output x: its next 24 bits."""
    return np.float32((x >> np.uint64(16)) & np.uint64(0xFFFFFF)) * _DRAW


@njit
def _draw(seed, i):
    """Draw i of the stream seeded with `seed` (output i // 2)."""
    x = _mix(seed, i >> 1)
    return _odd(x) if i & 1 else _even(x)


@njit
def _fill_draws(seed, at, u):
    """u[c] = draw at + c of the stream seeded with `seed`, c < u.size: one output per two
    draws, its state stepped by adding _GOLDEN."""
    n = u.size
    c = 0
    if n > 0 and at & 1:
        u[0] = _draw(seed, at)
        c = 1
    z = _state(seed, (at + c) >> 1)
    for j in range((n - c) >> 1):
        x = _scramble(z)
        u[c + 2 * j] = _even(x)
        u[c + 2 * j + 1] = _odd(x)
        z += _GOLDEN
    if (n - c) & 1:
        u[n - 1] = _even(_scramble(z))


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


@njit(parallel=True, cache=True, nogil=True)
def dare_merge(base, tuned, seed, density, wkeep):
    """tuned ← lerp(base, tuned, wkeep·[u_i < density]), u_i the tensor's i-th draw."""
    n = base.size
    for j in prange((n + BLOCK - 1) // BLOCK):
        lo, hi = j * BLOCK, min(n, (j + 1) * BLOCK)
        _dare_block(base[lo:hi], tuned[lo:hi], seed, lo, density, wkeep,
                    np.empty(DRAW_RUN, np.float32))


@njit(cache=True)
def _dare_block(base, tuned, seed, at, density, wkeep, u):
    """dare_merge over one block (its first draw: number `at`): DRAW_RUN draws at a time into
    u (two per 64-bit output, 4 lanes), then the keep/lerp loop over them (8 lanes)."""
    n = base.size
    for s in range(0, n, DRAW_RUN):
        b = base[s:s + DRAW_RUN]
        t = tuned[s:s + DRAW_RUN]
        v = u[:b.size]
        _fill_draws(seed, at + s, v)
        for i in range(b.size):
            w = wkeep if v[i] < density else np.float32(0.0)
            t[i] = _store(_lerp(_load(b[i]), _load(t[i]), w), t)


@njit(cache=True)
def _sort_radix(keys, k0, c0, k1, c1, hist):
    """The positions 0…n−1 of keys (n = keys.size) in stable ascending order of key: an LSD
    radix sort of (key, position) pairs over only the bits in which the keys differ, in passes
    of at most 11-bit digits. Returns k0, c0, k1 or c1 (scratch of ≥ n entries; hist ≥ 2048):
    its first n entries."""
    m = keys.size
    all_and = np.uint32(0xFFFFFFFF)
    all_or = np.uint32(0)
    for c in range(m):
        all_and &= keys[c]
        all_or |= keys[c]
    for c in range(m):
        k0[c] = keys[c]
        c0[c] = c
    diff = all_and ^ all_or
    if diff == 0:  # all keys equal: position order
        return c0
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
    return c0


@njit
def _key_stats(kmax, kmin, k_and, k_or, k):
    """Fold key k into a row's running (largest, smallest non-zero, AND and OR of non-zero)."""
    nz = k if k != np.uint32(0) else np.uint32(0xFFFFFFFF)
    return max(kmax, k), min(kmin, nz), _and32(k_and, nz), _or32(k_or, k)


@njit(cache=True)
def rank_work(m):
    """Scratch arrays of _row_ranks for rows of m entries: half of each entry, columns and keys
    of the mixed-half entries, four sort buffers (m each), half counts and table (RANK_BINS)."""
    return (np.empty(m, np.uint32), np.empty(m, np.uint32), np.empty(m, np.uint32),
            np.empty(m, np.uint32), np.empty(m, np.uint32), np.empty(m, np.uint32),
            np.empty(m, np.uint32), np.empty(RANK_BINS, np.uint32),
            np.empty(RANK_BINS, np.uint32))



@intrinsic
def _ends(typingctx, h, table, n):
    """Bin prefix over n = 8L counts in the lane layout of _row_ranks (slot 8i + s holds half
    s·L + i; L even): table[slot] = start + end of its half, and for a long half of >= 2 entries
    0xFFFFFFFF, with its start in h. LLVM vector code, eight lanes wide: one pass sums each
    lane's counts, a second walks the lanes' halves in step, an 8-wide running total started at
    each lane's offset (the counts of the lanes before it) — 8 halves per step where a scalar
    prefix does one (LLVM does not vectorise a prefix sum, nor numba's indexed loops of this
    shape)."""
    sig = types.void(h, table, types.intp)

    def codegen(context, builder, signature, args):
        hp = context.make_array(signature.args[0])(context, builder, args[0]).data
        tp = context.make_array(signature.args[1])(context, builder, args[1]).data
        n = args[2]
        i32, intp = ir.IntType(32), n.type
        v8 = ir.VectorType(i32, 8)
        zero = ir.Constant(v8, [0] * 8)
        two = ir.Constant(v8, [2] * 8)
        mixed_mark = ir.Constant(v8, [0xFFFFFFFF] * 8)

        def at(ptr, slot):
            return builder.bitcast(builder.gep(ptr, [slot]), v8.as_pointer())

        def lane_step(i, shift):
            return builder.shl(i, ir.Constant(intp, shift))

        rows = builder.lshr(n, ir.Constant(intp, 3))
        totals = cgutils.alloca_once_value(builder, zero)
        with cgutils.for_range(builder, rows) as loop:
            c = builder.load(at(hp, lane_step(loop.index, 3)), align=4)
            builder.store(builder.add(builder.load(totals), c), totals)
        t = builder.load(totals)
        offsets, run = zero, ir.Constant(i32, 0)
        for s in range(8):
            offsets = builder.insert_element(offsets, run, ir.Constant(i32, s))
            run = builder.add(run, builder.extract_element(t, ir.Constant(i32, s)))
        acc = cgutils.alloca_once_value(builder, offsets)
        with cgutils.for_range(builder, builder.lshr(rows, ir.Constant(intp, 1))) as loop:
            short = lane_step(loop.index, 4)  # rows 2i (short halves) and 2i + 1 (long)
            long = builder.add(short, ir.Constant(intp, 8))
            a = builder.load(acc)
            c = builder.load(at(hp, short), align=4)
            builder.store(builder.add(builder.add(a, a), c), at(tp, short), align=4)
            a = builder.add(a, c)
            c = builder.load(at(hp, long), align=4)
            many = builder.icmp_unsigned(">=", c, two)
            builder.store(builder.select(many, mixed_mark, builder.add(builder.add(a, a), c)),
                          at(tp, long), align=4)
            builder.store(a, at(hp, long), align=4)  # its start (read for mixed halves only)
            builder.store(builder.add(a, c), acc)
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True)
def _count(dig, h, nb):
    """h[:nb] = the number of entries in each half."""
    h[:nb] = 0
    for c in range(dig.size):
        h[dig[c]] += 1


@njit(cache=True)
def _gather(dig, table, mixed, r2, keys, lcol, lkey):
    """r2 = table − 1 by slot; the columns and keys of the entries of halves marked `mixed`,
    in column order; returns how many."""
    nl = 0
    for c in range(dig.size):
        v = table[dig[c]]
        r2[c] = np.int32(v) - 1
        if v == mixed:
            lcol[nl] = c
            lkey[nl] = keys[c]
            nl += 1
    return nl


@njit(cache=True)
def _place_long(nl, lcol, lkey, dig, start, r2, work):
    """Sort the nl entries of mixed halves by key (insertion, or radix for many) and give each
    group of equal keys lo + hi − 1 from the next places of its half (start[half] = the
    half's first place)."""
    if nl <= LONG_INSERTION:  # insertion sort of their positions by key
        order = work[3]
        for i in range(nl):
            k = lkey[i]
            j = i - 1
            while j >= 0 and lkey[order[j]] > k:
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = i
    else:
        order = _sort_radix(lkey[:nl], work[3], work[4], work[5], work[6], work[8])
    g = 0
    half = np.uint32(0xFFFFFFFF)
    first = 0
    while g < nl:  # groups of equal keys, ascending: each takes the next places of its half
        k = lkey[order[g]]
        e = g + 1
        while e < nl and lkey[order[e]] == k:
            e += 1
        d = dig[lcol[order[g]]]
        if d != half:
            half = d
            first = g
        value = np.int32(2 * (np.int64(start[d]) + (g - first)) + (e - g) - 1)
        for q in range(g, e):
            r2[lcol[order[q]]] = value
        g = e


@njit
def _lane_layout(nb):
    """(L, inv, spread) of the lane layout of _row_ranks for nb halves: L = 2·ceil(nb/16)
    halves per lane (even), inv = float32(1/L), spread = 8L − 1 (the arguments of _slot)."""
    lanes = 2 * ((nb + 15) // 16)
    return lanes, np.float32(1.0) / np.float32(lanes), np.uint32(8 * lanes - 1)


@njit
def _slot(j, inv, spread):
    """Slot 8·(j mod L) + j div L of half j (a uint32) in the lane layout of _row_ranks, for
    inv = float32(1/L) and spread = 8L − 1 (see there why the float quotient is exact)."""
    lane = np.uint32(np.int32((np.float32(np.int32(j)) + np.float32(0.5)) * inv))
    return _sub32(_shl32(j, np.uint32(3)), _mul32(lane, spread))


@njit(cache=True)
def _row_ranks(keys, kmax, kmin, diff, r2, work):
    """r2[c] = lo + hi − 1 for column c, lo (hi) = the number of the row's keys < (≤)
    keys[c]: twice the average rank of its group of equal keys. kmax, kmin and diff (AND ^ OR
    of the non-zero keys): the row's _key_stats; work: rank_work(m).

    One count of the keys by bin. Bin 0 holds the zeros; the non-zero keys are cut to their top
    bits above a shift s (the least that keeps the bins within min(RANK_BINS / 2, max(32, m))),
    and a key is "long" when it also has bits below s in which the row's keys differ. Each bin
    is split: its short keys (one value, the lowest in the bin) first, then its long keys; both
    halves order like the keys. A half of one value (any short half, a long half of one entry)
    gives each of its entries lo + hi − 1 = start + end − 1 from a table. Entries of the other
    halves (|Δ| of a bf16 fine-tune has few significant bits: a few long keys per row, rarely
    two in one bin) are sorted among themselves, and each group of equal keys takes the next
    places of its half.

    The nb halves j are counted in a lane layout for the vectorised prefix (_ends): 8 lanes of
    L = 2·ceil(nb / 16) halves each, half j = s·L + i in slot 8i + s (L is even, so a lane's
    odd i are long halves). The slot is computed in the vectorised digit pass, s = j div L by a
    float32 reciprocal: (j + 1/2)/L lies ≥ 1/(2L) ≥ 2⁻¹¹ from an integer and its float error is
    under 2⁻¹⁹ (j < 2¹³), so the quotient is exact."""
    dig, lcol, lkey = work[0], work[1], work[2]
    m = keys.size
    nb_max = min(RANK_BINS // 2, max(32, m))  # bins; twice as many halves
    s0 = 0
    while s0 < 31 and not (diff >> np.uint32(s0)) & np.uint32(1):
        s0 += 1
    s = s0
    while (kmax >> np.uint32(s)) - (kmin >> np.uint32(s)) + 2 > nb_max:
        s += 1
    us = np.uint32(s)
    nb = 2 * ((kmax >> us) - (kmin >> us) + 2) if kmax != 0 else 2
    lanes, inv, spread = _lane_layout(nb)
    below = np.uint32((kmin >> us) - np.uint32(1))
    low = np.uint32((np.uint32((1 << s) - 1) & diff) if s > s0 else np.uint32(0))
    one, zero = np.uint32(1), np.uint32(0)
    for c in range(m):  # vectorised: half j = 2·bin + long, then its slot
        k = keys[c]
        d = _sub32(_shr32(k, us), below) if k != zero else zero
        j = _add32(_add32(d, d), one if _and32(k, low) != zero else zero)
        dig[c] = _slot(j, inv, spread)
    h, table = work[7], work[8]
    n = 8 * lanes
    _count(dig, h, n)
    _ends(h, table, n)
    nl = _gather(dig, table, np.uint32(0xFFFFFFFF), r2, keys, lcol, lkey)
    if nl:
        _place_long(nl, lcol, lkey, dig, h, r2, work)


@njit(cache=True, error_model="numpy")  # IEEE division (p > 0): no zero check, vectorises
def _della_row(base, tuned, at, seed, density, ranked, half_step, offset, scale, keys, r2, u,
               work):
    """One row (slices base, tuned; `at` = flat index of its first entry; scratch keys, r2, u of
    m entries and work = rank_work(m)); see della_merge."""
    m = base.size
    _fill_draws(seed, at, u)
    if ranked:
        kmax, kmin = np.uint32(0), np.uint32(0xFFFFFFFF)
        k_and, k_or = np.uint32(0xFFFFFFFF), np.uint32(0)
        for c in range(m):
            k = _key(_load(base[c]), _load(tuned[c]))
            keys[c] = k
            kmax, kmin, k_and, k_or = _key_stats(kmax, kmin, k_and, k_or, k)
        _row_ranks(keys, kmax, kmin, k_and ^ k_or, r2, work)
        for c in range(m):
            _keep_lerp(base, tuned, c, u[c], np.float32(r2[c]) * half_step + offset, scale)
    else:
        for c in range(m):
            _keep_lerp(base, tuned, c, u[c], density, scale)


@njit(error_model="numpy")
def _keep_lerp(base, tuned, c, u, p, scale):
    """Entry c kept when its draw u < p, with weight (1/p)·scale (0/p·scale when dropped)."""
    keep = np.float32(1.0) if u < p else np.float32(0.0)
    w = (keep / p) * scale
    tuned[c] = _store(_lerp(_load(base[c]), _load(tuned[c]), w), tuned)


@njit(parallel=True, cache=True, nogil=True)
def della_merge(base, tuned, m, seed, density, epsilon, half_step, offset, scale):
    """Per row of m entries: r2 = lo + hi − 1 of |Δ| (twice its average rank: equal |Δ| share
    one), p = r2·half_step + offset (float32), keep with u < p, weight scale·1/p;
    tuned ← lerp(base, tuned, w). epsilon = 0 or m = 1: p = density."""
    rows = base.size // m
    nblk = (rows + ROW_BLOCK - 1) // ROW_BLOCK
    ranked = m > 1 and epsilon > 0
    for j in prange(nblk):
        keys = np.empty(m, np.uint32)
        r2 = np.empty(m, np.int32)
        u = np.empty(m, np.float32)
        work = rank_work(m)
        for row in range(j * ROW_BLOCK, min(rows, (j + 1) * ROW_BLOCK)):
            lo = row * m
            _della_row(base[lo:lo + m], tuned[lo:lo + m], lo, seed, density, ranked, half_step,
                       offset, scale, keys, r2, u, work)


# ---- torch-facing helpers --------------------------------------------------------------------

@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run a small tensor's kernels on one thread: a parallel region ends only when every
    thread has finished, and with the reader and writer threads busy a worker can wait a whole
    scheduler slice (measured ~5 ms per 2048-entry tensor, against 0.2 ms alone)."""
    if n >= SERIAL_BELOW:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


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
    with _threads(b.size):
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


def dare(base: torch.Tensor, tuned: torch.Tensor, seed: int, density: float,
         scale: float) -> torch.Tensor:
    """DARE over `tuned` (harness/merge/methods/dare.py), fused."""
    with _threads(base.numel()):
        dare_merge(storage(base), storage(tuned), np.uint64(seed), np.float32(density),
                   np.float32(scale / density))
    return tuned


def della(base: torch.Tensor, tuned: torch.Tensor, seed: int, density: float, epsilon: float,
          scale: float) -> torch.Tensor:
    """DELLA over `tuned` (harness/merge/methods/della.py), fused."""
    m = tuned.shape[-1] if tuned.dim() > 0 else 1
    half_step = epsilon / (m - 1) if m > 1 else 0.0
    with _threads(base.numel()):
        della_merge(storage(base), storage(tuned), m, np.uint64(seed), np.float32(density),
                    np.float32(epsilon), np.float32(half_step), np.float32(density - epsilon),
                    np.float32(scale))
    return tuned


def warm(family: str, dtype: torch.dtype) -> None:
    """Load (or compile into numba's on-disk cache) every kernel of `family` (topk, dare, della;
    see harness/merge/accel.py) for `dtype`, by running it on small tensors."""
    g = torch.Generator().manual_seed(0)
    for shape in ((64,), (4 * _SAMPLE // 64 + 1, 64)):  # the band path; the sub-band path
        base = torch.randn(shape, generator=g).to(dtype)
        tuned = (base.float() + torch.randn(shape, generator=g)).to(dtype)
        if family == "topk":
            topk_band_merge(base, tuned, base.numel() // 5, base.numel() // 50, 1.0)
        elif family == "dare":
            dare(base, tuned, 1, 0.5, 1.0)
        elif family == "della":
            della(base, tuned, 1, 0.5, 0.1, 1.0)
        else:
            raise ValueError(f"unknown fused kernel family {family!r}")
