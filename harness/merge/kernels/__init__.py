"""Fused CPU kernels (numba) for the methods whose torch form needs many passes: top-k
selection (TIES, Breadcrumbs: topk.py + topk_passes.py), random drops (DARE: dare_kernel.py)
and per-row ranks (DELLA: della_kernel.py), over the bit-level helpers of common.py.

They accelerate, never define: each computes its method's definition (harness/merge/methods/)
with the same float32 steps and rounding, in one or two passes over memory spread on all cores,
and takes the method's parameters through the functions its module exposes
(harness/merge/accel.py, the one dispatch point). Checked bit for bit against the definitions
by tests/test_kernels.py and by the recorded digests of tests/test_merge_golden.py (torch and
kernel paths give the same bytes). The torch path stays the definition and runs on GPUs, on
other dtypes and with merge.kernels=torch. Compiled kernels are cached on disk (numba
cache=True); the first use on a machine compiles each one it needs (a few seconds each).
What they save is measured in docs/performance.md ("Why the kernels stay").
"""

from __future__ import annotations

import torch

from harness.merge.kernels.common import storage
from harness.merge.kernels.dare_kernel import dare
from harness.merge.kernels.della_kernel import della
from harness.merge.kernels.topk import subband_merge, topk_band_merge
from harness.merge.select import _SAMPLE

__all__ = ["dare", "della", "storage", "subband_merge", "topk_band_merge", "warm"]


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
            della(base, tuned, 1, 0.5, (0.4, 0.1 / (shape[-1] - 1)), 1.0)
        else:
            raise ValueError(f"unknown fused kernel family {family!r}")
