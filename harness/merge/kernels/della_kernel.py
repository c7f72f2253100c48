"""DELLA, fused: per row, the average rank of each |Δ| (ties share it) from counts of binned
float32 keys — a radix-style count instead of the definition's sort and two searchsorted —
then keep with probability p_r and rescale by 1/p_r, in one parallel pass over row blocks.
Checked: tests/test_kernels.py (ranks against the definition's keep_probability, row layouts,
ties) and tests/test_merge_golden.py.
"""

from __future__ import annotations

import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from harness.merge.kernels.common import (
    _add32,
    _and32,
    _fill_draws,
    _key,
    _lerp,
    _load,
    _mul32,
    _or32,
    _shl32,
    _shr32,
    _store,
    _sub32,
    serial_if_small,
    storage,
)

ROW_BLOCK = 16  # rows per della task
RANK_BINS = 8192  # most half-bins of a della row's count (and at most 2 per entry)
LONG_INSERTION = 96  # most long keys of a row sorted by insertion (more: radix sort)


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
def della_merge(base, tuned, m, seed, density, ranked, half_step, offset, scale):
    """Per row of m entries: r2 = lo + hi − 1 of |Δ| (twice its average rank: equal |Δ| share
    one), p = r2·half_step + offset (float32), keep with u < p, weight scale·1/p;
    tuned ← lerp(base, tuned, w). Not `ranked`: p = density."""
    rows = base.size // m
    nblk = (rows + ROW_BLOCK - 1) // ROW_BLOCK
    for j in prange(nblk):
        keys = np.empty(m, np.uint32)
        r2 = np.empty(m, np.int32)
        u = np.empty(m, np.float32)
        work = rank_work(m)
        for row in range(j * ROW_BLOCK, min(rows, (j + 1) * ROW_BLOCK)):
            lo = row * m
            _della_row(base[lo:lo + m], tuned[lo:lo + m], lo, seed, density, ranked, half_step,
                       offset, scale, keys, r2, u, work)


def della(base: torch.Tensor, tuned: torch.Tensor, stream_seed: int, density: float,
          line: tuple[float, float] | None, scale: float) -> torch.Tensor:
    """DELLA over `tuned` (harness/merge/methods/della.py), fused: the draws of `stream_seed`,
    p = offset + step·(twice the rank) per row for line = (offset, step) (`della.rank_line`),
    p = density for None."""
    m = tuned.shape[-1] if tuned.dim() > 0 else 1
    offset, step = line if line is not None else (density, 0.0)
    with serial_if_small(base.numel()):
        della_merge(storage(base), storage(tuned), m, np.uint64(stream_seed),
                    np.float32(density), line is not None, np.float32(step),
                    np.float32(offset), np.float32(scale))
    return tuned
