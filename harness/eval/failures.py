"""Silent failures are failures.

lmms-eval's llava_hf catches every exception raised while generating, logs it, and answers ""
— which then scores 0 as if the model had answered wrongly. The runner collects the ERROR records
lmms-eval logs during a run; any generation error fails the run with the task, the first affected
doc and the tool's message, and no score is reported. lm-eval does not swallow errors (they
propagate and fail the run).

An empty answer without a logged error is the model's own answer (a model that forgot a skill
often stops at once); it scores 0 legitimately. Such answers are counted per benchmark
(`empty` in the score entry) and logged as a warning, never hidden.

Model output is data: an error message quotes at most a short, escaped prefix of any text it
carries (`short`), since a broken merge's answer can be kilobytes of control characters.
"""

from __future__ import annotations

import logging
import re

from harness.errors import EvalError

log = logging.getLogger(__name__)

QUOTE_CHARS = 240  # the most of a tool's message (which may quote model output) an error repeats
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def short(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` on one line for an error message: control characters escaped, newlines and tabs
    as spaces, cut to `limit` characters with the number of characters left out."""
    flat = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    flat = " ".join(flat.split())
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit]}... ({len(flat) - limit} more characters)"


def _texts(resps) -> list[str]:
    """Flatten a sample's responses to the strings among them."""
    if isinstance(resps, str):
        return [resps]
    if isinstance(resps, (list, tuple)):
        return [t for r in resps for t in _texts(r)]
    return []


def empty_docs(samples: list[dict]) -> list:
    """doc ids whose every response is an empty string."""
    out = []
    for sample in samples:
        texts = _texts(sample.get("resps"))
        if texts and all(not t.strip() for t in texts):
            out.append(sample.get("doc_id"))
    return out


def check_generations(tool: str, task: str, samples: list[dict], logged_errors: list[str]) -> int:
    """Fail (EvalError) when the tool logged a generation error; return the number of empty
    answers otherwise."""
    empties = empty_docs(samples)
    if logged_errors:
        first = empties[0] if empties else "unknown"
        raise EvalError(
            f"{tool} task {task}: generation failed (first empty answer: doc {first}); {tool} "
            f"swallows such errors and scores the empty answer 0, so no score is reported. "
            f"The tool said: {short(logged_errors[0])}")
    if empties:
        log.warning("%s task %s: %d of %d answers are empty (the model's own answers; "
                    "no generation error was logged)", tool, task, len(empties), len(samples))
    return len(empties)


OFFLINE_HINTS = ("OfflineModeIsEnabled", "Couldn't reach", "couldn't reach", "LocalEntryNotFound",
                 "not found in cache", "offline mode", "HF_HUB_OFFLINE", "ConnectionError")


def root_cause(err: BaseException) -> BaseException:
    """The exception behind retries: lmms-eval retries a task's download and scoring
    (tenacity), which then raises a RetryError that hides the cause in its last attempt."""
    for _ in range(10):
        attempt = getattr(err, "last_attempt", None)
        cause = attempt.exception() if attempt is not None and attempt.failed else None
        if cause is None:
            break
        err = cause
    return err


def tool_error(tool: str, tasks: list[str], where, err: BaseException, suite: str) -> EvalError:
    """An EvalError for an exception raised inside an evaluator (retries unwrapped to their
    cause), with the fix when it is a dataset or model missing from the offline cache."""
    err = root_cause(err)
    text = f"{type(err).__name__}: {err}"
    message = f"{tool} failed on {', '.join(tasks)} ({where}): {short(text)}"
    if any(h in text for h in OFFLINE_HINTS):
        message += (f". A dataset or model is not in the local HF cache and the harness runs "
                    f"offline: on a machine with internet run `python -m harness.prefetch "
                    f"eval={suite}` (plus pair=<pair>), then copy the HF cache (HF_HOME) here")
    return EvalError(message)
