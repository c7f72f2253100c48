"""Exact top-k selection with ties broken by lower flat index first (= a stable descending
sort's first k).

`topk_mask(x, k)` selects among a small tensor (Neuron-Fusion's neuron scores) by an exact
`kthvalue`. `DeltaTopK` selects among the |Δ| of a whole weight, streamed over chunks, without a
full sort: a 32 k-entry random sample brackets the k-th largest value in [lo, hi]; one pass
counts the entries above hi and gathers the few inside the bracket; an exact `kthvalue` on those
gives the threshold v; the selection is x > v plus the first missing entries equal to v. When
the bracket misses (rare: it is 4 standard errors wide) a second pass narrows it. Comparisons
use Python floats (a 0-d tensor operand is ~2× slower on CPU) and `count_nonzero` (a bool `sum`
is ~10× slower).
"""

from __future__ import annotations

import torch

from harness.merge.stream import for_each_delta

_SAMPLE = 1 << 15


def bracket_margin(n: int, k: int, m: int = _SAMPLE) -> float:
    """Half-width, as a quantile, of the bracket around the k-th largest of n values that an
    m-entry sample gives: 4 standard errors of the quantile q = 1 − k/n, plus 2/m."""
    q = 1.0 - k / n
    return 4.0 * (q * (1 - q) / m) ** 0.5 + 2.0 / m


def bracket_positions(n: int, k: int, m: int = _SAMPLE) -> tuple[int, int]:
    """Positions (lo, hi) in an ascending m-entry sample of n values whose values bracket the
    k-th largest with high probability (see `bracket_margin`)."""
    q, margin = 1.0 - k / n, bracket_margin(n, k, m)
    return max(0, int((q - margin) * m)), min(m - 1, int((q + margin) * m) + 1)


def _kth_exact(x: torch.Tensor, k: int) -> float:
    """k-th largest of a flat tensor by `kthvalue` (float16/bfloat16 promoted: CPU kthvalue
    lacks half kernels)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return float(torch.kthvalue(x, x.numel() - k + 1).values)


def topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (shape of x) of exactly the k largest entries of x (ties: lower index first).

    NaN entries are never selected (the merge then fails on the NaN anyway).
    """
    flat = x.reshape(-1)
    n = flat.numel()
    if k <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(x, dtype=torch.bool)
    v = _kth_exact(flat, k)
    mask = flat > v
    missing = k - int(torch.count_nonzero(mask))
    if missing > 0:  # ties at the threshold: take the first `missing` equal entries by index
        eq = (flat == v).nonzero().reshape(-1)[:missing]
        mask[eq] = True
    return mask.reshape(x.shape)


def delta_brackets(base: torch.Tensor, tuned: torch.Tensor,
                   ks: dict[int, int]) -> dict[int, tuple[float, float]]:
    """For each wanted k (0 < k < n, keyed by an id), a bracket [lo, hi] of |Δ| values that holds
    the k-th largest |Δ| with high probability: quantiles of a seeded 32 k-entry random sample,
    4 standard errors wide. Small tensors (≤ 4 samples' worth) get (−inf, inf)."""
    n = base.numel()
    out = {i: (float("-inf"), float("inf")) for i in ks}
    if n <= 4 * _SAMPLE or not ks:
        return out
    gen = torch.Generator(device=base.device).manual_seed(n * 31 + min(ks.values()))
    idx = torch.randint(0, n, (_SAMPLE,), generator=gen, device=base.device)
    sample = (tuned.reshape(-1)[idx].float() - base.reshape(-1)[idx].float()).abs_()
    sample = sample.sort().values
    for i, k in ks.items():
        i_lo, i_hi = bracket_positions(n, k)
        out[i] = (float(sample[i_lo]), float(sample[i_hi]))
    return out


class DeltaTopK:
    """Exact membership in the top k of |Δ| = |tuned − base| for several k at once, streamed
    over chunks (harness/merge/stream.py), with the same tie rule as `topk_mask`.

    Construction makes one read-only pass over the pair: a 32 k-entry random sample brackets each
    k-th largest |Δ| in [lo, hi], and the pass counts the entries above hi and keeps the few inside
    the bracket, whose exact `kthvalue` is the threshold v (a missed bracket is narrowed with one
    more pass). `mask(i, x)` then marks a chunk's members of the top ks[i]: x > v plus the first
    still-missing entries equal to v. Chunks must be passed in order, each once per k.
    """

    def __init__(self, base: torch.Tensor, tuned: torch.Tensor, ks: list[int], ctx):
        n = base.numel()
        self._state: list[list] = []  # per k: [v or None (none) / inf marker, remaining ties]
        todo = {}
        for i, k in enumerate(ks):
            if k <= 0:
                self._state.append(["none", 0])
            elif k >= n:
                self._state.append(["all", 0])
            else:
                self._state.append([None, 0])
                todo[i] = k
        if not todo:
            return
        lo_hi = delta_brackets(base, tuned, todo)
        for _attempt in range(3):
            above = {i: 0 for i in lo_hi}
            bands: dict[int, list[torch.Tensor]] = {i: [] for i in lo_hi}

            def count(lo_, hi_, x):
                x = x.reshape(-1)
                for i, (lo, hi) in lo_hi.items():
                    above_hi = x > hi
                    above[i] += int(torch.count_nonzero(above_hi))
                    bands[i].append(x[(x >= lo).logical_xor_(above_hi)])

            for_each_delta(base, tuned, ctx, count)
            retry = {}
            for i, (lo, hi) in lo_hi.items():
                k, band = todo[i], torch.cat(bands[i])
                if above[i] < k <= above[i] + band.numel():
                    v = _kth_exact(band, k - above[i])
                    greater = above[i] + int(torch.count_nonzero(band > v))
                    self._state[i] = [v, k - greater]
                elif above[i] >= k:  # the k-th largest is above the bracket
                    retry[i] = (hi, float("inf"))
                else:
                    retry[i] = (float("-inf"), lo)
            if not retry:
                return
            lo_hi = retry
        raise RuntimeError("top-k threshold did not converge")  # unreachable: 2nd pass is exact

    def mask(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the chunk x (|Δ| values, in order) that lies in the top ks[i]."""
        state = self._state[i]
        v, remaining = state
        if v in ("none", "all"):
            fill = v == "all"
            return torch.full_like(x, fill, dtype=torch.bool)
        m = torch.gt(x, v)
        if remaining > 0:
            eq = x == v
            n_eq = int(torch.count_nonzero(eq))
            if n_eq <= remaining:
                m[eq] = True
                state[1] = remaining - n_eq
            else:
                first = eq.reshape(-1).nonzero().reshape(-1)[:remaining]
                m.reshape(-1)[first] = True
                state[1] = 0
        return m
