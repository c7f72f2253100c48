"""The rule-based taxonomy of one answer: pure functions, text in, category out.

Rules, in order (the first that applies wins):
  1. correct                — the task's own metric, read from the sample log, says so
  2. context_hallucination  — the answer uses a context phrase (it speaks of an absent image,
                              picture or context) or, where the rules list them, a word of the
                              visual vocabulary; a listed number counts only when the reference
                              is not itself a number (a wrong sum is not a count)
  3. not_known              — the answer is empty, or uses a declining phrase
  4. other_error            — anything else
Phrases are matched on normalised text (normalise) with word boundaries, so "no" never matches
inside "know" and "red" never inside "reduced". A refusal that names the absent image ("I cannot
see the image") is a context hallucination: it shows the model assuming a picture.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

APOSTROPHES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"}


def normalise(text: str) -> str:
    """Lower case, NFKC, apostrophes unified, punctuation other than inner apostrophes replaced
    by spaces, whitespace collapsed: "I DON’T know!" -> "i don't know"."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    for src, dst in APOSTROPHES.items():
        text = text.replace(src, dst)
    text = re.sub(r"[^\w\s']", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def _pattern(phrases) -> re.Pattern | None:
    words = sorted({normalise(p) for p in phrases} - {""}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<![\w'])(?:" + "|".join(map(re.escape, words)) + r")(?![\w'])")


@dataclass(frozen=True)
class Rules:
    """The phrase lists of one model family (conf/generation/<name>.yaml)."""

    name: str
    declining: tuple[str, ...] = ()
    context: tuple[str, ...] = ()
    visual_words: tuple[str, ...] = ()
    visual_numbers: tuple[str, ...] = ()

    @cached_property
    def _declining(self) -> re.Pattern | None:
        return _pattern(self.declining)

    @cached_property
    def _context(self) -> re.Pattern | None:
        return _pattern(self.context + self.visual_words)

    @cached_property
    def _numbers(self) -> re.Pattern | None:
        return _pattern(self.visual_numbers)


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[\d\s.,-]+", text)) and any(c.isdigit() for c in text)


def is_context_hallucination(answer: str, rules: Rules, reference: str = "") -> bool:
    """Whether the answer speaks of an absent image or context (rule 2)."""
    text = normalise(answer)
    if rules._context is not None and rules._context.search(text):
        return True
    if rules._numbers is not None and not _is_number(normalise(reference)):
        return bool(rules._numbers.search(text))
    return False


def is_not_known(answer: str, rules: Rules) -> bool:
    """Whether the answer is empty or declines to answer (rule 3)."""
    text = normalise(answer)
    return not text or bool(rules._declining is not None and rules._declining.search(text))


def classify(answer: str, correct: bool, rules: Rules, reference: str = "") -> str:
    """The category of one answer: `correct` is the task's own verdict from the sample log,
    `reference` the target (used only to tell a count from a number answer)."""
    if correct:
        return "correct"
    if is_context_hallucination(answer, rules, reference):
        return "context_hallucination"
    if is_not_known(answer, rules):
        return "not_known"
    return "other_error"
