"""Model answers are data: whatever a model generates is scored, never a reason to crash.

A merge with bad hyperparameters talks nonsense: long random text with control characters
(byte-fallback tokens decode to them). lmms-eval's task code writes answers into files whose
writers refuse such characters: MMBench's xlsx export fails with openpyxl's
IllegalCharacterError on any of U+0000-U+0008, U+000B, U+000C, U+000E-U+001F (XML 1.0 cannot
hold them). No benchmark answer contains one, so removing them from an answer changes no score
except by letting the run finish; tab, newline and carriage return stay. The number of answers
changed per task is recorded (`cleaned` in the score entry).
"""

from __future__ import annotations

import dataclasses
import logging
import re

log = logging.getLogger(__name__)

UNWRITABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def clean(text: str) -> str:
    """`text` without the control characters file writers refuse (see the module docstring)."""
    return UNWRITABLE.sub("", text)


def _clean_output(output):
    """A generate_until output (a str or lmms-eval's GenerationResult) cleaned; None when it
    needed no change."""
    text = output if isinstance(output, str) else getattr(output, "text", None)
    if not isinstance(text, str) or not UNWRITABLE.search(text):
        return None
    if isinstance(output, str):
        return clean(text)
    return dataclasses.replace(output, text=clean(text))


def guard_answers(lm) -> dict[str, int]:
    """Clean every answer `lm.generate_until` returns (on this model object only); return the
    live count of cleaned answers per task name."""
    counts: dict[str, int] = {}
    generate = lm.generate_until

    def generate_until(requests):
        outputs = list(generate(requests))
        for i, (request, output) in enumerate(zip(requests, outputs)):
            fixed = _clean_output(output)
            if fixed is not None:
                outputs[i] = fixed
                task = getattr(request, "task_name", "?")
                counts[task] = counts.get(task, 0) + 1
        return outputs

    lm.generate_until = generate_until
    return counts
