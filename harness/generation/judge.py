"""Optional judge: a local causal LM (a directory, never a network service) that classifies the
answers the task's metric marks wrong, instead of the phrase rules. Off by default
(conf/tables/default.yaml `generation_judge: null`); `correct` always stays the task's verdict.

The judge reads one instruction per answer and picks the category whose name it gives the
highest log-likelihood as the continuation (no free-text parsing, so every answer gets exactly
one category).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.errors import ConfigError
from harness.generation import CATEGORIES

INSTRUCTION = (
    "Classify a model's wrong answer to a question.\n"
    "not_known: the answer is empty or declines to answer.\n"
    "context_hallucination: the answer speaks of an image, picture or context that was not "
    "given.\n"
    "other_error: any other wrong answer.\n\n"
    "Question: {prompt}\nReference answer: {reference}\nModel answer: {answer}\nCategory:")
WRONG = tuple(c for c in CATEGORIES if c != "correct")


def judge_prompt(prompt: str, reference: str, answer: str) -> str:
    """The judge's input for one answer (the prompt's last 500 characters)."""
    return INSTRUCTION.format(prompt=" ".join(str(prompt).split())[-500:],
                              reference=reference, answer=" ".join(str(answer).split()))


class Judge:
    """A local model that relabels wrong answers."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"generation judge {path} is not a local model directory; give "
                              f"the path of a downloaded causal LM (tables `--judge DIR` or "
                              f"conf/tables/default.yaml generation_judge), or null for the rules")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = path
        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device)
        self.model.eval()
        self.device = device

    def category(self, prompt: str, reference: str, answer: str) -> str:
        """The wrong-answer category the judge finds most likely."""
        import torch

        context = self.tok(judge_prompt(prompt, reference, answer))["input_ids"]
        best, best_lp = WRONG[-1], float("-inf")
        for cat in WRONG:
            cont = self.tok(" " + cat, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([context + cont], device=self.device)
            with torch.no_grad():
                logp = self.model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            lp = float(sum(logp[len(context) - 1 + i, t] for i, t in enumerate(cont)))
            if lp > best_lp:
                best, best_lp = cat, lp
        return best

    def relabel(self, answers: pd.DataFrame) -> pd.DataFrame:
        """A copy of the answers frame with the judge's category for every wrong answer."""
        out = answers.copy()
        wrong = ~out.correct.astype(bool)
        out.loc[wrong, "category"] = [self.category(r.prompt, r.reference, r.answer)
                                      for r in out[wrong].itertuples()]
        return out
