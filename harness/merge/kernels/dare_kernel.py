"""DARE, fused: tuned ← lerp(base, tuned, w·[u_i < density]) with u_i the tensor's i-th draw
of harness/merge/randomness.py and w = scale/density (`dare.kept_weight`), in one parallel pass
that generates the draws in registers-sized runs instead of the definition's draw tensor, mask
and lerp. Checked: tests/test_kernels.py and tests/test_merge_golden.py.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from harness.merge.kernels.common import (
    BLOCK,
    _fill_draws,
    _lerp,
    _load,
    _store,
    serial_if_small,
    storage,
)

DRAW_RUN = 2048  # draws per buffered run of dare's kernel


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


def dare(base: torch.Tensor, tuned: torch.Tensor, stream_seed: int, density: float,
         kept_weight: float) -> torch.Tensor:
    """DARE over `tuned` (harness/merge/methods/dare.py), fused: the draws of `stream_seed`,
    kept entries (u < density) get w = kept_weight."""
    with serial_if_small(base.numel()):
        dare_merge(storage(base), storage(tuned), np.uint64(stream_seed), np.float32(density),
                   np.float32(kept_weight))
    return tuned
