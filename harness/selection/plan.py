"""The plan of a selection, printed before anything runs: evaluations per round and the
projected time, from the cost records of earlier runs of the same pair.

A record's `cost` holds each benchmark's evaluation seconds; a run at `eval.limit=L` costs about
L/L' of one at limit L' (linear in the docs), and a record without a limit is the full cost.
Merges cost `merge.seconds`, paid once per configuration (later rounds reuse the merge). Without
a record of a benchmark the projection says "unknown" and names it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from harness.selection.halving import Budget, schedule


def _records(runs: Path, pair: str) -> list[dict]:
    out = []
    for path in sorted(Path(runs).glob("*/result.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("status") == "complete" and rec.get("pair") == pair:
            out.append(rec)
    return out


def eval_seconds(records: list[dict], suite: str, benches: list[str],
                 limit: int | None) -> tuple[float | None, list[str]]:
    """Projected seconds of one evaluation of `suite` at `limit`, and the benchmarks without a
    cost record (then the seconds are None)."""
    total, missing = 0.0, []
    for bench in benches:
        guesses = []
        for rec in records:
            cost = (rec.get("cost") or {}).get(bench) or {}
            seconds, had = cost.get("seconds"), rec.get("eval_limit")
            if rec.get("eval_suite") != suite or seconds is None:
                continue
            if had is None and limit is None:
                guesses.append(float(seconds))
            elif had is not None and limit is not None:
                guesses.append(float(seconds) * limit / had)
        if guesses:
            total += statistics.median(guesses)
        else:
            missing.append(bench)
    return (None if missing else total), missing


def merge_seconds(records: list[dict]) -> float | None:
    """Median merge seconds of the pair's records (None: none has one)."""
    times = [r["merge"]["seconds"] for r in records
             if isinstance((r.get("merge") or {}).get("seconds"), (int, float))]
    return statistics.median(times) if times else None


def _hours(seconds: float | None, missing: list[str]) -> str:
    if seconds is None:
        return f"unknown (no cost record yet at this limit: {', '.join(missing)})"
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def plan_lines(pair: str, runs: Path, validation: str, val_benches: list[str], suite: str,
               benches: list[str], sizes: dict[str, int], budget: Budget,
               user_limit: int | None) -> list[str]:
    """The plan as printable lines: one per round and one for the final evaluations."""
    from harness.selection.walk import round_limit

    records = _records(runs, pair)
    merge = merge_seconds(records)
    searched = {m: n for m, n in sizes.items() if n > 1}
    how = (f"by successive halving (keep {budget.keep} per round)" if budget.rounds > 1
           else "in one round")
    head = (f"selection plan for {pair}: {sum(sizes.values())} configurations of "
            f"{len(sizes)} methods; {len(searched)} methods with a grid are searched on "
            f"{validation} {how}, then each method's choice runs once on {suite}")
    lines = [head]
    total, unknown = 0.0, []
    for r, (counts, docs) in enumerate(zip(schedule(searched, budget),
                                           budget.docs_per_round())):
        limit = round_limit(docs, user_limit)
        n = sum(counts.values())
        seconds, missing = eval_seconds(records, validation, val_benches, limit)
        if r == 0 and merge is None:
            seconds, missing = None, [*missing, "the merge"]
        elif r == 0 and seconds is not None:
            seconds += merge  # every configuration is merged in round 1, then reused
        lines.append(f"  round {r + 1}: {n} evaluations on {validation} at eval.limit="
                     f"{'all' if limit is None else limit} docs per task "
                     f"({', '.join(f'{m} {c}' for m, c in counts.items())}); projected "
                     + _hours(None if seconds is None else seconds * n, missing))
        if seconds is None:
            unknown += missing
        else:
            total += seconds * n
    seconds, missing = eval_seconds(records, suite, benches, user_limit)
    lines.append(f"  final: {len(sizes)} evaluations on {suite} (one per method); projected "
                 + _hours(None if seconds is None else seconds * len(sizes), missing))
    if seconds is None:
        unknown += missing
    else:
        total += seconds * len(sizes)
    lines.append("  total projected: " + (_hours(total, []) if not unknown else
                                          f"unknown ({len(set(unknown))} benchmark(s) without "
                                          f"cost records; known part {_hours(total, [])})"))
    return lines
