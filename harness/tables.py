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
A missing benchmark is a gap, never a zero; incomplete or unreadable records are skipped and named.
The chosen configuration of a method is picked by the rule in conf/tables/default.yaml (or
`--select`): `defaults`, `best_overall`, or `validation` (the configuration with the best overall
average on the suite's validation suite, e.g. micro_val for micro; its test scores are the row).
The rule and the chosen configurations are written under every table, and so are records made
with different library releases.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import pandas as pd
import yaml

from harness.errors import ConfigError

log = logging.getLogger(__name__)

REFERENCE = {"base", "mllm"}
RULES = ("defaults", "best_overall", "validation")
AVERAGES = [("language", "Lang. avg"), ("vision", "Vis. avg"), ("all", "Overall avg")]
CONF = Path(__file__).resolve().parent.parent / "conf" / "tables" / "default.yaml"


def method_rows() -> list[tuple[str, str]]:
    """(method, row label) of every registered merge method, in table order (each method
    declares its label and row: harness/merge/registry.py)."""
    from harness.merge.registry import table_rows

    return table_rows()


def method_label(method: str) -> str:
    """A method's row label (its name when it is not registered)."""
    return dict(method_rows()).get(method, method)


def in_table_order(methods) -> list[str]:
    """`methods` in table order; unregistered names last, sorted."""
    order = [m for m, _ in method_rows()]
    return [m for m in order if m in methods] + sorted(set(methods) - set(order))


def load_records(runs_dir: Path) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Complete records under runs_dir, and (path, reason) of every skipped one."""
    records, skipped = [], []
    for path in sorted(Path(runs_dir).glob("*/result.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            skipped.append((path, f"unreadable ({type(err).__name__})"))
            continue
        if not isinstance(rec, dict) or rec.get("status") != "complete":
            skipped.append((path, "incomplete"))
            continue
        if not all(k in rec for k in ("pair", "method", "scores", "eval_suite")):
            skipped.append((path, "missing fields"))
            continue
        records.append(rec)
    return records, skipped


def _config_label(params: dict) -> str:
    return ", ".join(f"{k}={_fmt_param(v)}" for k, v in sorted((params or {}).items())
                     if k != "seed") or "-"


def _fmt_param(v) -> str:
    if isinstance(v, list):
        return "+".join(map(str, v))
    return str(v)


def long_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (record, benchmark) plus one per (record, average)."""
    rows = []
    for r in records:
        base = {"pair": r["pair"], "suite": r["eval_suite"], "method": r["method"],
                "config": _config_label(r.get("params")), "seed": r.get("seed", 0),
                "run_id": r.get("run_id"),
                "validation": ((r.get("config") or {}).get("eval") or {}).get("validation"),
                "versions": versions_label(r)}
        for bench, s in r["scores"].items():
            rows.append({**base, "column": bench, "kind": s["suite"], "value": s["percent"]})
        for name, value in (r.get("averages") or {}).items():
            if value is not None:
                rows.append({**base, "column": name, "kind": "average", "value": value})
    return pd.DataFrame(rows, columns=["pair", "suite", "method", "config", "seed", "run_id",
                                       "validation", "versions", "column", "kind", "value"])


def versions_label(record: dict) -> str:
    """The releases of the scoring libraries a record was made with, as one string."""
    from harness.records import SCORE_LIBRARIES

    versions = record.get("versions") or {}
    return ", ".join(f"{name} {versions.get(name, '?')}" for name in SCORE_LIBRARIES)


def benchmark_order(frame: pd.DataFrame) -> list[str]:
    """Language benchmarks first, then visual, each in first-seen order."""
    order = []
    for kind in ("language", "vision"):
        order += list(dict.fromkeys(frame.loc[frame.kind == kind, "column"]))
    return order


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (method, config, column)."""
    g = frame.groupby(["method", "config", "column"])["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def choose(agg: pd.DataFrame, rule: str, defaults: dict[str, str]) -> dict[str, str]:
    """The chosen config of each method: `best_overall` (highest overall average) or `defaults`
    (the conf/method/<name>.yaml parameters, falling back to best_overall when not run)."""
    chosen = {}
    for method, sub in agg.groupby("method"):
        configs = sorted(sub.config.unique())
        if rule == "defaults" and defaults.get(method) in configs:
            chosen[method] = defaults[method]
            continue
        overall = sub[sub.column == "all"].sort_values(["mean", "config"], ascending=[False, True])
        chosen[method] = overall.config.iloc[0] if len(overall) else configs[0]
    return chosen


VALIDATION_ORDER = "overall average (ties: language average, then configuration label)"


def choose_on_validation(val_agg: pd.DataFrame) -> dict[str, str]:
    """Per method, the configuration with the best overall average on a validation suite's
    aggregate; ties go to the higher language average, then to the first configuration label."""
    wide = val_agg[val_agg.column.isin(["all", "language"])].pivot_table(
        index=["method", "config"], columns="column", values="mean").reset_index()
    wide = wide.reindex(columns=["method", "config", "all", "language"])  # a suite may lack one
    chosen = {}
    for method, sub in wide.groupby("method"):
        ranked = sub.sort_values(["all", "language", "config"], ascending=[False, False, True],
                                 na_position="last")
        chosen[method] = ranked.config.iloc[0]
    return chosen


def choose_by_validation(agg: pd.DataFrame, val_agg: pd.DataFrame, suite: str,
                         validation: str) -> tuple[dict[str, str], list[str]]:
    """Rule `validation` for a table on `suite`: each method's configuration chosen on
    `val_agg` (choose_on_validation), shown with its `suite` scores. Methods without
    hyperparameters need no validation run. Returns (chosen, notes on methods left out)."""
    on_val = choose_on_validation(val_agg)
    chosen, notes = {}, []
    for method, sub in agg.groupby("method"):
        name = method_label(method)
        if method in on_val and on_val[method] in set(sub.config):
            chosen[method] = on_val[method]
        elif method in on_val:
            notes.append(f"{name} left out: its configuration chosen on {validation} "
                         f"({on_val[method]}) has no {suite} record")
        elif set(sub.config) == {"-"}:
            chosen[method] = "-"
        else:
            notes.append(f"{name} left out: no {validation} record to choose on")
    return chosen, notes


def _cell(mean: float, std: float, n: int, bold: bool, latex: bool) -> str:
    text = f"{mean:.1f}" + (f" ± {std:.1f}" if n > 1 else "")
    if latex:
        text = text.replace("±", r"$\pm$")
        return rf"\textbf{{{text}}}" if bold else text
    return f"**{text}**" if bold else text


def main_table(agg: pd.DataFrame, chosen: dict[str, str], benches: list[str]):
    """(numeric frame, markdown cells, latex cells) of the main table."""
    columns = benches + [a for a, _ in AVERAGES]
    methods = in_table_order(chosen)
    mean = pd.DataFrame(index=methods, columns=columns, dtype=float)
    std, n = mean.copy(), mean.copy()
    for m in methods:
        sub = agg[(agg.method == m) & (agg.config == chosen[m])].set_index("column")
        for c in columns:
            if c in sub.index:
                mean.loc[m, c], std.loc[m, c], n.loc[m, c] = sub.loc[c, ["mean", "std", "n"]]
    merges = [m for m in methods if m not in REFERENCE]
    best = {c: mean.loc[merges, c].max() for c in columns} if merges else {}
    md, tex = [], []
    for m in methods:
        row_md, row_tex = [], []
        for c in columns:
            v = mean.loc[m, c]
            if pd.isna(v):
                row_md.append("")
                row_tex.append("")
                continue
            bold = m in merges and v == best.get(c)
            row_md.append(_cell(v, std.loc[m, c], int(n.loc[m, c]), bold, False))
            row_tex.append(_cell(v, std.loc[m, c], int(n.loc[m, c]), bold, True))
        md.append(row_md)
        tex.append(row_tex)
    return mean, md, tex, methods, columns


def _header(columns: list[str]) -> list[str]:
    names = dict(AVERAGES)
    return [names.get(c, c) for c in columns]


def write_main(out: Path, stem: str, mean, md, tex, methods, columns, chosen, rule,
               notes: list[str] = ()) -> list[Path]:
    """Markdown, LaTeX (booktabs) and CSV of a main table; `notes` are printed under it."""
    header = _header(columns)
    labels = [method_label(m) for m in methods]
    note = "\n\n".join([f"Chosen configuration per method (rule: {rule}): "
                         + "; ".join(f"{method_label(m)}: {chosen[m]}" for m in methods),
                         *notes])
    lines = ["| Method | " + " | ".join(header) + " |",
             "|---|" + "---:|" * len(header)]
    lines += [f"| {lab} | " + " | ".join(cells) + " |" for lab, cells in zip(labels, md)]
    (out / f"{stem}.md").write_text("\n".join(lines) + f"\n\n{note}\n")
    esc = [h.replace("_", r"\_") for h in header]
    tl = [r"\begin{tabular}{l" + "r" * len(header) + "}", r"\toprule",
          "Method & " + " & ".join(esc) + r" \\", r"\midrule"]
    for i, (lab, cells) in enumerate(zip(labels, tex)):
        tl.append(f"{lab} & " + " & ".join(cells) + r" \\")
        if i == 1 and len(labels) > 2 and methods[1] in REFERENCE:
            tl.append(r"\midrule")
    tl += [r"\bottomrule", r"\end{tabular}", *(f"% {line}" for line in note.splitlines() if line)]
    (out / f"{stem}.tex").write_text("\n".join(tl) + "\n")
    csv = mean.copy()
    csv.index = labels
    csv.columns = header
    csv.round(4).to_csv(out / f"{stem}.csv", index_label="Method")
    return [out / f"{stem}.{ext}" for ext in ("md", "tex", "csv")]


def write_sweep(out: Path, stem: str, sub: pd.DataFrame, benches: list[str]) -> list[Path]:
    """One row per configuration of a method (mean over seeds)."""
    columns = benches + [a for a, _ in AVERAGES]
    pivot = sub.pivot_table(index="config", columns="column", values="mean").reindex(
        columns=[c for c in columns if c in set(sub.column)])
    pivot = pivot.sort_index()
    header = _header(list(pivot.columns))
    lines = ["| Configuration | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for config, row in pivot.iterrows():
        lines.append(f"| {config} | " + " | ".join("" if pd.isna(v) else f"{v:.1f}" for v in row)
                     + " |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    pivot.round(4).to_csv(out / f"{stem}.csv")
    return [out / f"{stem}.md", out / f"{stem}.csv"]


def load_rule(path: Path = CONF) -> dict:
    """The selection rule (conf/tables/default.yaml)."""
    return yaml.safe_load(path.read_text()) if path.is_file() else {"select": "best_overall"}


def method_defaults() -> dict[str, str]:
    """Config label of each method's conf/method defaults; a registered method without a YAML
    here (one added from outside the repository) takes its parameter dataclass's defaults."""
    import dataclasses

    from harness.merge.registry import load_methods

    out = {name: _config_label(dataclasses.asdict(spec.params_cls()))
           for name, spec in load_methods().items()}
    for path in sorted((CONF.parent.parent / "method").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        out[spec["name"]] = _config_label(spec.get("params") or {})
    return out


def select_rows(frame: pd.DataFrame, part: pd.DataFrame, agg: pd.DataFrame, pair: str,
                suite: str, select: str, results: Path | None = None
                ) -> tuple[dict[str, str], str, list[str]]:
    """(chosen config per method, rule text, notes) of one main table under rule `select`;
    rule `validation` takes the outcome of a selection run under `results` when there is one."""
    from harness.selection import choice, defaults_note, table_choice

    if select not in RULES:
        raise ConfigError(f"tables select={select!r} is not valid; choose one of "
                          f"{', '.join(RULES)}")
    if select != "validation":
        return choose(agg, select, method_defaults()), select, defaults_note(pair, select)
    outcome = choice(results, pair, suite) if results is not None else None
    if outcome:
        return table_choice(agg, outcome, suite)
    validation = next((v for v in part.validation.dropna()), None)
    if validation is None:
        return (choose(agg, "best_overall", method_defaults()),
                f"validation; {suite} names no validation suite, so best_overall", [])
    val_part = frame[(frame.pair == pair) & (frame.suite == validation)]
    chosen, notes = choose_by_validation(agg, aggregate(val_part), suite, validation)
    return chosen, f"validation, chosen on {validation} by {VALIDATION_ORDER}", notes


def versions_note(part: pd.DataFrame) -> list[str]:
    """A note when a table's records were made with different scoring-library releases."""
    runs = part.drop_duplicates("run_id")
    if runs.versions.nunique() <= 1:
        return []
    counts = runs.groupby("versions").run_id.count()
    return ["Records made with different library releases: "
            + "; ".join(f"{n} with {v}" for v, n in counts.items())]


def generation_outputs(out: Path, runs_dir: Path, records: list[dict], part: pd.DataFrame,
                       pair: str, suite: str, chosen: dict[str, str], plots: bool,
                       judge: str | None = None) -> list[Path]:
    """The generation analysis of one (pair, suite) (harness.generation.report), for the runs
    at the main table's chosen configurations. Runs without sample logs are named."""
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
        print(f"generation {pair}/{suite}: {len(skipped)} run(s) without sample logs skipped: "
              + ", ".join(skipped))
        notes.append("Skipped for lack of per-sample logs (not counted): " + ", ".join(skipped))
    if judge:
        from harness.generation.judge import Judge

        answers = Judge(judge).relabel(answers)
        notes.append(f"Categories of the answers the metric marks wrong by the judge {judge}.")
    rows = method_rows()
    return generation_tables(out, pair, suite, answers, chosen, run_configs,
                             [m for m, _ in rows], dict(rows), notes, plots=plots)


def build_tables(results: Path, plots: bool = True, select: str | None = None,
                 judge: str | None = None) -> list[Path]:
    """Write every table (and plot) for the records under `results`; return the files.
    `select` overrides the selection rule of conf/tables/default.yaml; `judge` (a local model
    path) replaces the generation rules (default: conf/tables/default.yaml, off)."""
    records, skipped = load_records(Path(results) / "runs")
    for path, why in skipped:
        print(f"skipped {path}: {why}")
    if skipped:
        print(f"{len(skipped)} record(s) skipped")
    out = Path(results) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    frame = long_frame(records)
    if frame.empty:
        print(f"no complete records under {Path(results) / 'runs'}; nothing to tabulate")
        return []
    select = select or load_rule().get("select", "best_overall")
    judge = judge or load_rule().get("generation_judge")
    written = []
    for (pair, suite), part in sorted(frame.groupby(["pair", "suite"])):
        benches = benchmark_order(part)
        agg = aggregate(part)
        chosen, rule, notes = select_rows(frame, part, agg, pair, suite, select, Path(results))
        stem = f"main_{pair}_{suite}"
        mean, md, tex, methods, columns = main_table(agg, chosen, benches)
        written += write_main(out, stem, mean, md, tex, methods, columns, chosen, rule,
                              notes + versions_note(part))
        if plots:
            from harness.plots import tradeoff_plot

            written += tradeoff_plot(agg, chosen, out / f"tradeoff_{pair}_{suite}")
        written += generation_outputs(out, Path(results) / "runs", records, part, pair, suite,
                                      chosen, plots, judge)
        for method, sub in agg.groupby("method"):
            if sub.config.nunique() > 1:
                s_stem = f"sweep_{pair}_{suite}_{method}"
                written += write_sweep(out, s_stem, sub, benches)
                if plots:
                    from harness.plots import sweep_plot

                    written += sweep_plot(sub, out / s_stem, method_label(method))
    return written


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m harness.tables", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path,
                        default=Path(os.environ.get("HARNESS_RESULTS", "results")))
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--select", choices=RULES,
                        help="selection rule (default: conf/tables/default.yaml)")
    parser.add_argument("--judge", metavar="MODEL_DIR",
                        help="a local causal LM that classifies the wrong answers of the "
                             "generation analysis instead of the rules (docs/generation.md)")
    args = parser.parse_args(argv)
    files = build_tables(args.results, plots=not args.no_plots, select=args.select,
                         judge=args.judge)
    for f in files:
        print(f"wrote {f}")


if __name__ == "__main__":
    main()
