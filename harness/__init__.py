"""Locate-then-Merge harness: merge an MLLM's language model back toward its base LLM and measure
what it forgot (lm-eval) and what it kept (lmms-eval)."""

import os

from harness import numerics, paths
from harness.models import pair as _pair

__version__ = "0.1.0"

# OpenMP threads (torch's and numba's) sleep when idle instead of spinning: a merge interleaves
# short parallel kernels with reader/writer threads busy in the kernel, and the spinning took
# 1.2-2.3 s of CPU from them per 1b merge on 2 cores (docs/performance.md). Set before torch is
# imported when `harness` comes first (the CLI); an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Portable CPU kernels (AVX2 everywhere, thread-count independent MKL) before torch computes
# anything, so the micro pair and its scores are the same on every machine (harness/numerics.py).
numerics.apply()

# Resolvers conf/ uses (`${harness_path:...}`, `${local_pair_name:}`), before anything composes.
paths.register_resolver()
_pair.register_resolver()
