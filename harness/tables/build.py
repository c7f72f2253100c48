"""`make tables`: every table and plot from the records under a results root.

Reads the records (harness.tables.read), splits them into tables and rows
(harness.tables.group), writes the tables (harness.tables.write), the plots (harness.plots)
and the generation analysis (harness.generation.report). Labels, order and default
configurations of the methods come from harness.method_catalog.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import yaml

from harness import method_catalog, paths
from harness.tables.group import (
    aggregate,
    select_rows,
    split_by_setup,
    split_by_variant,
)
from harness.tables.read import load_records, long_frame, setups, variants
from harness.tables.write import benchmark_order, main_table, write_main, write_sweep

log = logging.getLogger(__name__)

CONF = Path(__file__).resolve().parents[2] / "conf" / "tables" / "default.yaml"


def load_rule(path: Path = CONF) -> dict:
    """The table settings (conf/tables/default.yaml): selection rule, generation judge."""
    return yaml.safe_load(path.read_text()) if path.is_file() else {"select": "best_overall"}


def generation_outputs(out: Path, runs_dir: Path, records: list[dict], part: pd.DataFrame,
                       stem: str, chosen: dict[str, str], plots: bool,
                       judge: str | None = None) -> list[Path]:
    """The generation analysis of one table (harness.generation.report), for the runs at the
    main table's chosen configurations. Runs without sample logs are named."""
    from harness.generation.collect import answers_frame
    from harness.generation.report import generation_tables
    from harness.generation.rules import rules_for

    run_configs = dict(zip(part.run_id, part.config))
    mine = [r for r in records if r.get("run_id") in run_configs
            and chosen.get(r["method"]) == run_configs[r["run_id"]]]
    answers, skipped = answers_frame(mine, runs_dir,
                                     lambda r: rules_for((r.get("config") or {}).get("pair")
                                                         or {"source": None, "family": None,
                                                             "name": r["pair"]}))
    notes = []
    if skipped:
        print(f"generation {stem}: {len(skipped)} run(s) without sample logs skipped: "
              + ", ".join(skipped))
        notes.append("Skipped for lack of per-sample logs (not counted): " + ", ".join(skipped))
    if judge:
        from harness.generation.judge import Judge

        answers = Judge(judge).relabel(answers)
        notes.append(f"Categories of the answers the metric marks wrong by the judge {judge}.")
    plot = None
    if plots:
        from harness.plots import generation_plot as plot
    rows = method_catalog.rows()
    return generation_tables(out, stem.replace("main_", "generation_", 1), answers, chosen,
                             run_configs, [m for m, _ in rows], dict(rows), notes, plot=plot)


def _one_table(out: Path, results: Path, records: list[dict], frame: pd.DataFrame,
               part: pd.DataFrame, pair: str, suite: str, stem: str, notes: list[str],
               select: str, judge: str | None, plots: bool) -> list[Path]:
    benches = benchmark_order(part)
    agg = aggregate(part)
    chosen, rule, rule_notes = select_rows(frame, part, agg, pair, suite, select,
                                           method_catalog.default_labels(), Path(results))
    labels = method_catalog.labels()
    written = write_main(out, stem, main_table(agg, chosen, benches), chosen, rule, labels,
                         rule_notes + notes)
    tag = stem.removeprefix("main_")
    if plots:
        from harness.plots import tradeoff_plot

        written += tradeoff_plot(agg, chosen, out / f"tradeoff_{tag}", labels,
                                 method_catalog.in_order(set(agg.method)))
    written += generation_outputs(out, paths.runs_dir(results), records, part, stem, chosen,
                                  plots, judge)
    for method, sub in agg.groupby("method"):
        if sub.config.nunique() > 1:
            s_stem = f"sweep_{tag}_{method}"
            written += write_sweep(out, s_stem, sub, benches, notes)
            if plots:
                from harness.plots import sweep_plot

                written += sweep_plot(sub, out / s_stem, labels.get(method, method))
    return written


def build_tables(results: Path, plots: bool = True, select: str | None = None,
                 judge: str | None = None) -> list[Path]:
    """Write every table (and plot) for the records under `results`; return the files.
    `select` overrides the selection rule of conf/tables/default.yaml; `judge` (a local model
    path) replaces the generation rules (default: conf/tables/default.yaml, off)."""
    results = Path(results)
    records, skipped = load_records(paths.runs_dir(results))
    for path, why in skipped:
        print(f"skipped {path}: {why}")
    if skipped:
        print(f"{len(skipped)} record(s) skipped")
    out = paths.tables_dir(results)
    out.mkdir(parents=True, exist_ok=True)
    frame = long_frame(records)
    if frame.empty:
        print(f"no complete records under {paths.runs_dir(results)}; nothing to tabulate")
        return []
    select = select or load_rule().get("select", "best_overall")
    judge = judge or load_rule().get("generation_judge")
    by_setup, by_variant = setups(records), variants(records)
    written = []
    for (pair, suite), part in sorted(frame.groupby(["pair", "suite"])):
        tables = split_by_setup(part, by_setup, f"main_{pair}_{suite}")
        if len(tables) > 1:
            print(f"{pair}/{suite}: records in {len(tables)} setups, not pooled: "
                  + ", ".join(stem for stem, _, _ in tables))
        for stem, sub, notes in tables:
            written += _one_table(out, results, records, frame, split_by_variant(sub, by_variant),
                                  pair, suite, stem, notes, select, judge, plots)
    return written
