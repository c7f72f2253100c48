"""Silent failures are failures: empty generations and errors the evaluators only logged."""

from __future__ import annotations

from harness.errors import EvalError


def _texts(resps) -> list[str]:
    """Flatten a sample's responses to the strings among them."""
    if isinstance(resps, str):
        return [resps]
    if isinstance(resps, (list, tuple)):
        return [t for r in resps for t in _texts(r)]
    return []


def check_generations(tool: str, task: str, samples: list[dict], logged_errors: list[str]) -> None:
    """EvalError naming the task, the first failing doc and the tool's message, if any response
    of a generative task is empty or the tool logged a generation error."""
    for sample in samples:
        texts = _texts(sample.get("resps"))
        if texts and all(not t.strip() for t in texts):
            message = logged_errors[0] if logged_errors else "(the tool logged no error)"
            raise EvalError(
                f"{tool} task {task}: doc {sample.get('doc_id')} got an empty generation; "
                f"{tool} turns failed generations into empty answers that score 0, so no score "
                f"is reported. The tool said: {message}. Prompt: "
                f"{str(sample.get('arguments', ''))[:300]}")
    if logged_errors:
        raise EvalError(f"{tool} task {task}: the tool logged a generation error: "
                        f"{logged_errors[0]}")
