"""Reading run records for the tables: every complete, well-formed result.json → a long frame.

A record that cannot be tabulated (unreadable, incomplete, or missing a field the tables use) is
skipped and named with the reason, never a crash. Each record also gets its *setup*: everything
in its identity (harness/records.py) except the method, its parameters and the seed — the
evaluation (suite, benchmarks, limit, backend, dtype, chat template, task files, data mirror,
tool releases) and the checkpoints (fingerprints, commits, build keys). Records pool in one row
only when their setups agree (harness.tables.group).
"""

from __future__ import annotations

import hashlib
import json
from numbers import Real
from pathlib import Path

import pandas as pd

from harness.method_catalog import config_label
from harness.records import SCORE_LIBRARIES

SUITES = ("language", "vision")
COLUMNS = ["pair", "suite", "method", "config", "seed", "run_id", "validation", "setup",
           "checkpoints", "variant", "column", "kind", "value"]


def schema_problem(rec) -> str | None:
    """Why a parsed record cannot be tabulated (the first missing or malformed field), or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    if rec.get("status") != "complete":
        return "incomplete"
    for key in ("pair", "method", "eval_suite"):
        if not isinstance(rec.get(key), str) or not rec[key]:
            return f"missing field {key}"
    if not isinstance(rec.get("scores"), dict):
        return "missing field scores"
    for bench, s in rec["scores"].items():
        if not isinstance(s, dict):
            return f"scores.{bench} is not an object"
        if s.get("suite") not in SUITES:
            return f"missing field scores.{bench}.suite (language or vision)"
        if not isinstance(s.get("percent"), Real) or isinstance(s.get("percent"), bool):
            return f"missing field scores.{bench}.percent (a number)"
    for key in ("params", "averages", "identity", "config", "versions"):
        if rec.get(key) is not None and not isinstance(rec[key], dict):
            return f"field {key} is not an object"
    for name, value in (rec.get("averages") or {}).items():
        if value is not None and (not isinstance(value, Real) or isinstance(value, bool)):
            return f"averages.{name} is not a number"
    return None


def load_records(runs_dir: Path) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Complete, well-formed records under runs_dir, and (path, reason) of every skipped one."""
    records, skipped = [], []
    for path in sorted(Path(runs_dir).glob("*/result.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            skipped.append((path, f"unreadable ({type(err).__name__})"))
            continue
        problem = schema_problem(rec)
        if problem:
            skipped.append((path, problem))
            continue
        records.append(rec)
    return records, skipped


def flatten(obj, prefix: str = "") -> dict[str, object]:
    """Nested dicts as {"a.b.c": leaf}; lists stay leaves."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, object] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def setup_of(rec: dict) -> dict[str, object]:
    """The record's setup, flat: `score.*` (its evaluation) and `pair.*` (its checkpoints)."""
    ident = rec.get("identity")
    if isinstance(ident, dict):
        pair = dict((ident.get("merge") or {}).get("pair") or {})
        pair.pop("name", None)  # the table's own key
        return {**flatten(ident.get("score") or {}, "score"), **flatten(pair, "pair")}
    # a record without its identity: what it says about the evaluation
    versions = rec.get("versions") or {}
    return {"score.limit": rec.get("eval_limit"),
            **{f"score.versions.{lib}": versions.get(lib) for lib in SCORE_LIBRARIES
               if versions}}


def variant_of(rec: dict) -> dict[str, object]:
    """What else besides the parameters and seed makes a merge differ (the draw definition of a
    stochastic method, the method's revision), flat."""
    merge = dict(((rec.get("identity") or {}).get("merge")) or {})
    for key in ("pair", "method", "params", "seed"):
        merge.pop(key, None)
    return flatten(merge)


def digest(flat: dict) -> str:
    """A short stable hash of a flat dict."""
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:10]


def long_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (record, benchmark) plus one per (record, average); `setup`, `checkpoints`
    and `variant` are digests (setups() maps a setup digest back to its fields)."""
    rows = []
    for r in records:
        setup = setup_of(r)
        base = {"pair": r["pair"], "suite": r["eval_suite"], "method": r["method"],
                "config": config_label(r.get("params")), "seed": r.get("seed", 0),
                "run_id": r.get("run_id"),
                "validation": ((r.get("config") or {}).get("eval") or {}).get("validation"),
                "setup": digest(setup),
                "checkpoints": digest({k: v for k, v in setup.items() if k.startswith("pair.")}),
                "variant": digest(variant_of(r))}
        for bench, s in r["scores"].items():
            rows.append({**base, "column": bench, "kind": s["suite"], "value": s["percent"]})
        for name, value in (r.get("averages") or {}).items():
            if value is not None:
                rows.append({**base, "column": name, "kind": "average", "value": value})
    return pd.DataFrame(rows, columns=COLUMNS)


def setups(records: list[dict]) -> dict[str, dict[str, object]]:
    """Setup digest → the setup's fields, for every record."""
    return {digest(s): s for s in map(setup_of, records)}


def variants(records: list[dict]) -> dict[str, dict[str, object]]:
    """Variant digest → the variant's fields, for every record."""
    return {digest(v): v for v in map(variant_of, records)}
