"""Checks of an evaluation setup against its pair, before anything is merged or loaded.

`eval.dtype` must be a dtype the evaluators take (harness/eval/dtype.py), and
`eval.chat_template=true` needs a text chat template on out/llm, read from the pair's own files.

lm-eval applies the tokenizer's chat template of out/llm; lmms-eval's `llava_hf` always formats
with the processor's template, whatever this option says. Some hub pairs have no text template at
all (lmsys/vicuna-7b-v1.5 and llava-hf/llava-1.5-7b-hf's tokenizer): such a run would merge for
minutes and then fail inside lm-eval, so it is refused up front instead.
"""

from __future__ import annotations

from harness.errors import ConfigError
from harness.eval.dtype import eval_dtype
from harness.eval.suite import load_benchmarks


def check_eval_setup(eval_cfg, pair) -> None:
    """ConfigError for an `eval.dtype` that is not valid or an `eval.chat_template=true` that
    `pair` (a ResolvedPair) cannot honour (`check_chat_template`)."""
    eval_dtype(eval_cfg, "cpu")
    check_chat_template(eval_cfg, pair)


def check_chat_template(eval_cfg, pair) -> None:
    """ConfigError when `eval.chat_template` is true, the suite has lm-eval benchmarks and the
    out/llm that `pair` (a ResolvedPair) merges into would carry no text chat template."""
    from harness.merge.outputs import llm_template

    if not eval_cfg.get("chat_template", False):
        return
    if not any(b.tool == "lm-eval" for b in load_benchmarks(eval_cfg)):
        return
    if llm_template(pair.mllm, pair.base, pair.multimodal) is None:
        raise ConfigError(
            f"eval.chat_template=true, but pair {pair.name} has no text chat template (neither "
            f"the tuned model's tokenizer in {pair.mllm} nor the base LLM's in {pair.base} has "
            f"one that keeps a plain-text message), so lm-eval could not apply one to out/llm; "
            f"run with eval.chat_template=false (the default)")
