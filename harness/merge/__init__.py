"""Merge a base LLM with the language model of a model tuned from it.

    from harness.merge import merge_checkpoints
    report = merge_checkpoints(base=DIR, mllm=DIR, method="ties", params={"density": 0.2},
                               out=DIR, device="cpu", seed=0)
"""

from harness.merge.engine import merge_checkpoints
from harness.merge.registry import METHODS, get_method
from harness.merge.report import load_merge_report

__all__ = ["merge_checkpoints", "load_merge_report", "get_method", "METHODS"]
