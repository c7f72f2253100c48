"""`python -m harness.tables` (= `make tables`): paper-style tables and plots from run records.

Reads every complete `<results>/runs/*/result.json` (a long pandas frame first, pivoted last) and
writes to `<results>/tables/`:
- `main_<pair>_<suite>.{md,tex,csv}`: rows Base LLM, MLLM and the seven merges, each at its chosen
  configuration; columns every benchmark (percent), then language, visual and overall averages;
  the best merge per column in bold. Several seeds of one configuration → mean ± std.
- `sweep_<pair>_<suite>_<method>.{md,csv}`: every configuration of a method that was run.
- `tradeoff_<pair>_<suite>.{png,pdf}` and `sweep_<pair>_<suite>_<method>.{png,pdf}` (harness.plots).
- `generation_<pair>_<suite>.{md,tex,csv,png,pdf}`, `..._by_benchmark.csv`, `..._examples.md`: the
  category shares of the answers of the suite's generative language benchmarks, read from the
  runs' sample logs (harness.generation, docs/generation.md), for the main table's rows; runs
  without sample logs are skipped and named.
A table pools only records that differ by seed alone: records of one pair and suite in other
setups (evaluation: limit, data mirror, backend, dtype, chat template, task files, tool releases;
or checkpoints: fingerprints, commits, build keys) get tables of their own,
`main_<pair>_<suite>_<setup>`, each with a note naming what split them.
A missing benchmark is a gap, never a zero; incomplete, unreadable or malformed records are
skipped and named.
The chosen configuration of a method is picked by the rule in conf/tables/default.yaml (or
`--select`): `defaults`, `best_overall`, or `validation` (the configuration with the best overall
average on the suite's validation suite, e.g. micro_val for micro; its test scores are the row).
The rule and the chosen configurations are written under every table.

Modules: read.py (records → long frame), group.py (tables, rows, selection), write.py (md, tex,
csv), build.py (all of it); the command line is here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import paths
from harness.cost_table import build_cost_tables
from harness.tables.build import build_tables, load_rule
from harness.tables.group import (
    RULES,
    aggregate,
    choose,
    choose_by_validation,
    choose_on_validation,
)
from harness.tables.read import load_records, long_frame

__all__ = ["RULES", "aggregate", "build_tables", "choose", "choose_by_validation",
           "choose_on_validation", "load_records", "load_rule", "long_frame", "main"]


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m harness.tables", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=paths.results_root(),
                        help=f"results root holding runs/; tables go to its tables/ (default: "
                             f"${paths.RESULTS_ENV} or {paths.DEFAULT_RESULTS})")
    parser.add_argument("--no-plots", action="store_true", help="tables only, no figures")
    parser.add_argument("--select", choices=RULES,
                        help="selection rule (default: conf/tables/default.yaml)")
    parser.add_argument("--judge", metavar="MODEL_DIR",
                        help="a local causal LM that classifies the wrong answers of the "
                             "generation analysis instead of the rules (docs/generation.md)")
    args = parser.parse_args(argv)
    if args.judge is not None and not (Path(args.judge) / "config.json").is_file():
        parser.error(f"--judge {args.judge}: not a model directory (no config.json in it); give "
                     f"the folder of a local causal LM, or leave --judge out to use the rules")
    if args.results.exists() and not args.results.is_dir():
        parser.error(f"--results {args.results}: not a directory; give the results folder "
                     f"(the one holding runs/)")
    files = build_tables(args.results, plots=not args.no_plots, select=args.select,
                         judge=args.judge)
    files += build_cost_tables(args.results)
    for f in files:
        print(f"wrote {f}")
