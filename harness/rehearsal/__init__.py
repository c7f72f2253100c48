"""Rehearsal data: tiny, deterministic, schema-faithful copies of the benchmark datasets, laid
out as a local Hugging Face Hub mirror so the installed lm-eval / lmms-eval task code runs on
them offline (run with the working directory at the mirror root)."""

from harness.rehearsal.data import BENCHMARKS, REPOS, write_mirror

__all__ = ["BENCHMARKS", "REPOS", "write_mirror"]
