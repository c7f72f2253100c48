"""Locate-then-Merge harness: merge an MLLM's language model back toward its base LLM and measure
what it forgot (lm-eval) and what it kept (lmms-eval)."""

__version__ = "0.1.0"
