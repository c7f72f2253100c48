"""Evaluation cost tables (`make tables`): where the hours of a pair's evaluation go.

For every pair and suite, `cost_<pair>_<suite>.{md,csv}` under `<results>/tables/`: one row per
benchmark and evaluation setting (device, batch size, dtype, limit) with the number of runs it
pools, the requests and seconds of one run (medians over the runs: every merge of a pair has the
same size, so their evaluations cost the same up to noise) and requests per second; then one
`total` row per device and limit. Records without a `cost` field are counted under the table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

KEYS = ["benchmark", "tool", "device", "batch_size", "dtype", "limit"]
COLUMNS = KEYS + ["runs", "requests", "seconds", "requests_per_s"]


def cost_frame(records: list[dict]) -> pd.DataFrame:
    """Long frame: one row per (record, benchmark) with its cost entry."""
    rows = []
    for rec in records:
        for bench, c in (rec.get("cost") or {}).items():
            rows.append({"pair": rec.get("pair"), "suite": rec.get("eval_suite"),
                         "run_id": rec.get("run_id"), "benchmark": bench,
                         "tool": c.get("tool", ""), "device": c.get("device", ""),
                         "batch_size": str(c.get("batch_size", "")),
                         "dtype": c.get("dtype", ""),
                         "limit": "" if rec.get("eval_limit") is None
                         else str(rec.get("eval_limit")),
                         "requests": c.get("requests"), "seconds": c.get("seconds")})
    return pd.DataFrame(rows)


def cost_table(part: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The cost table of one pair and suite (benchmarks in `order`, then totals)."""
    agg = (part.groupby(KEYS, sort=False)
           .agg(runs=("run_id", "nunique"), requests=("requests", "median"),
                seconds=("seconds", "median"))
           .reset_index())
    agg["rank"] = agg.benchmark.map({b: i for i, b in enumerate(order)})
    agg = agg.sort_values(["device", "limit", "rank", "batch_size", "dtype"]).drop(columns="rank")
    totals = (agg.groupby(["device", "limit"], sort=True)
              .agg(requests=("requests", "sum"), seconds=("seconds", "sum"),
                   runs=("runs", "max"))
              .reset_index())
    totals["benchmark"], totals["tool"], totals["batch_size"], totals["dtype"] = \
        "total", "", "", ""
    table = pd.concat([agg, totals[agg.columns]], ignore_index=True)
    table["requests_per_s"] = [r / s if s else float("nan")
                               for r, s in zip(table.requests, table.seconds)]
    return table[COLUMNS]


def _markdown(table: pd.DataFrame, title: str, notes: list[str]) -> str:
    head = ["benchmark", "tool", "device", "batch", "dtype", "limit", "runs", "requests",
            "seconds", "requests/s"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    for r in table.itertuples(index=False):
        cells = [r.benchmark, r.tool, r.device, r.batch_size, r.dtype, r.limit or "none",
                 str(int(r.runs)), f"{r.requests:.0f}", f"{r.seconds:.1f}",
                 "" if pd.isna(r.requests_per_s) else f"{r.requests_per_s:.2f}"]
        if r.benchmark == "total":
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + notes
    return "\n".join(lines) + "\n"


def write_cost_tables(records: list[dict], out: Path) -> list[Path]:
    """Write `cost_<pair>_<suite>.{md,csv}` for every pair and suite of `records`; return
    the files."""
    frame = cost_frame(records)
    written: list[Path] = []
    if frame.empty:
        return written
    out.mkdir(parents=True, exist_ok=True)
    for (pair, suite), part in sorted(frame.groupby(["pair", "suite"])):
        order = list(dict.fromkeys(part.benchmark))
        table = cost_table(part, order)
        without = sum(1 for r in records if r.get("pair") == pair
                      and r.get("eval_suite") == suite and not r.get("cost"))
        notes = [("Seconds: wall time of the benchmark's own tool call (model load, requests, "
                  "scoring), median over the runs; requests: model requests (log-likelihoods "
                  "or generations) of one run.")]
        if without:
            notes.append(f"{without} record(s) without cost information are not counted.")
        stem = out / f"cost_{pair}_{suite}"
        table.to_csv(f"{stem}.csv", index=False)
        Path(f"{stem}.md").write_text(
            _markdown(table, f"Evaluation cost: {pair}, {suite}", notes))
        written += [Path(f"{stem}.md"), Path(f"{stem}.csv")]
    return written


def build_cost_tables(results: Path) -> list[Path]:
    """Cost tables of every complete record under `<results>/runs` (skipped records are named
    by the main tables)."""
    from harness.tables import load_records

    records, _ = load_records(Path(results) / "runs")
    return write_cost_tables(records, Path(results) / "tables")
