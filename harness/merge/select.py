"""Exact top-k selection without a full sort.

`topk_mask(x, k)` marks exactly the k largest entries of `x` (ties at the threshold broken by
lower flat index first). It estimates the threshold from a random sample, then finds the exact
k-th value among the few candidates near it; a full `kthvalue` is the fallback when the sample's
bracket misses. Measured on one 5632×2048 matrix on 2 cores: full kthvalue ≈0.5 s, this ≈0.04 s.
"""

from __future__ import annotations

import torch

_SAMPLE = 1 << 15


def kth_largest(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of a flat tensor (1 ≤ k ≤ numel), exactly."""
    n = x.numel()
    if n <= 4 * _SAMPLE:
        return torch.kthvalue(x.float() if x.dtype == torch.float16 else x, n - k + 1).values
    gen = torch.Generator(device=x.device).manual_seed(n * 31 + k)
    idx = torch.randint(0, n, (_SAMPLE,), generator=gen, device=x.device)
    sample = x[idx].sort().values
    q = 1.0 - k / n
    margin = 4.0 * (q * (1 - q) / _SAMPLE) ** 0.5 + 2.0 / _SAMPLE
    lo = sample[max(0, int((q - margin) * _SAMPLE))]
    hi = sample[min(_SAMPLE - 1, int((q + margin) * _SAMPLE) + 1)]
    above = int((x > hi).sum())
    band = x[(x >= lo) & (x <= hi)]
    # the k-th largest lies in [lo, hi] iff fewer than k are above hi and at least k are ≥ lo
    if above < k <= above + band.numel():
        return torch.kthvalue(band, band.numel() - (k - above) + 1).values
    return torch.kthvalue(x, n - k + 1).values


def topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (shape of x) of exactly the k largest entries of x."""
    flat = x.reshape(-1)
    n = flat.numel()
    if k <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(x, dtype=torch.bool)
    v = kth_largest(flat, k)
    mask = flat > v
    missing = k - int(mask.sum())
    if missing > 0:  # ties at the threshold: take the first `missing` equal entries by index
        eq = (flat == v).nonzero().reshape(-1)[:missing]
        mask[eq] = True
    return mask.reshape(x.shape)
