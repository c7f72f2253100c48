"""Category shares per method for `make tables`: `generation_<pair>_<suite>.{md,tex,csv}` (percent
of a run's classified answers, pooled over the suite's generative benchmarks; rows = methods at
the main table's chosen configuration; mean ± std over seeds), the same per benchmark
(`..._by_benchmark.csv`), a stacked-bar plot and `..._examples.md` (a few answers per method and
category with prompt and reference).

A leaf: it takes frames, labels and an optional plot function, and imports nothing of the tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from harness.generation import CATEGORIES

EXAMPLES_PER_CELL = 3


def run_shares(answers: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Percent of answers per category, one row per run (and per `by` column); rows sum to 100."""
    keys = ["run_id", "method", *by]
    counts = answers.groupby(keys + ["category"]).size().unstack("category", fill_value=0)
    counts = counts.reindex(columns=list(CATEGORIES), fill_value=0)
    return (counts.div(counts.sum(axis=1), axis=0) * 100).reset_index()


def shares_of(answers: pd.DataFrame) -> dict:
    """{category: percent} of a set of answers (all categories, summing to 100; {} when none)."""
    if answers.empty:
        return {}
    counts = answers.category.value_counts()
    return {c: float(counts.get(c, 0)) * 100 / len(answers) for c in CATEGORIES}


def method_table(shares: pd.DataFrame, order: list[str]) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                     pd.DataFrame]:
    """(mean, std, n) over a method's runs, rows in `order`."""
    g = shares.groupby("method")[list(CATEGORIES)]
    idx = [m for m in order if m in set(shares.method)]
    return g.mean().reindex(idx), g.std().fillna(0.0).reindex(idx), g.count().reindex(idx)


def _cell(mean: float, std: float, n: int, latex: bool) -> str:
    text = f"{mean:.1f}" + (f" ± {std:.1f}" if n > 1 else "")
    return text.replace("±", r"$\pm$") if latex else text


def write_shares(out: Path, stem: str, mean, std, n, labels: dict[str, str],
                 note: str) -> list[Path]:
    """Markdown, LaTeX and CSV (columns method + the categories) of a share table."""
    names = [labels.get(m, m) for m in mean.index]
    lines = ["| Method | " + " | ".join(CATEGORIES) + " |", "|---|" + "---:|" * len(CATEGORIES)]
    tex = [r"\begin{tabular}{l" + "r" * len(CATEGORIES) + "}", r"\toprule",
           "Method & " + " & ".join(c.replace("_", r"\_") for c in CATEGORIES) + r" \\",
           r"\midrule"]
    for m, name in zip(mean.index, names):
        k = int(n.loc[m].min())
        lines.append(f"| {name} | " + " | ".join(_cell(mean.loc[m, c], std.loc[m, c], k, False)
                                                 for c in CATEGORIES) + " |")
        tex.append(f"{name} & " + " & ".join(_cell(mean.loc[m, c], std.loc[m, c], k, True)
                                             for c in CATEGORIES) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}", *(f"% {line}" for line in note.splitlines()
                                                 if line)]
    (out / f"{stem}.md").write_text("\n".join(lines) + f"\n\n{note}\n")
    (out / f"{stem}.tex").write_text("\n".join(tex) + "\n")
    csv = mean.round(4).copy()
    csv.insert(0, "method", names)
    csv.to_csv(out / f"{stem}.csv", index=False)
    return [out / f"{stem}.{ext}" for ext in ("md", "tex", "csv")]


def write_by_benchmark(out: Path, stem: str, answers: pd.DataFrame,
                       labels: dict[str, str]) -> Path:
    """Mean share per (method, benchmark, category) over runs, as CSV."""
    shares = run_shares(answers, by=("benchmark",))
    table = shares.groupby(["method", "benchmark"])[list(CATEGORIES)].mean().reset_index()
    table["method"] = table.method.map(lambda m: labels.get(m, m))
    path = out / f"{stem}_by_benchmark.csv"
    table.round(4).to_csv(path, index=False)
    return path


def _quote(text: str) -> str:
    text = " ".join(str(text).split()) or "(empty)"
    return text.replace("|", r"\|")


def write_examples(out: Path, stem: str, answers: pd.DataFrame, order: list[str],
                   labels: dict[str, str], k: int = EXAMPLES_PER_CELL) -> Path:
    """A few answers per method and category (the first k by benchmark and doc id)."""
    lines = [f"# Example answers: {stem.removeprefix('generation_')}", "",
             (f"Categories and rules: docs/generation.md. Up to {k} answers per method and "
              "category, the first by benchmark and doc id."), ""]
    for m in [m for m in order if m in set(answers.method)]:
        lines += [f"## {labels.get(m, m)}", ""]
        sub = answers[answers.method == m].sort_values(["benchmark", "doc_id", "run_id"])
        for cat in CATEGORIES:
            rows = sub[sub.category == cat].drop_duplicates(["benchmark", "doc_id"]).head(k)
            if rows.empty:
                continue
            lines += [f"### {cat}", "", "| benchmark | prompt | answer | reference |",
                      "|---|---|---|---|"]
            lines += [f"| {r.benchmark} | {_quote(r.prompt)[-200:]} | {_quote(r.answer)} | "
                      f"{_quote(r.reference)} |" for r in rows.itertuples()]
            lines.append("")
    path = out / f"{stem}_examples.md"
    path.write_text("\n".join(lines))
    return path


def generation_tables(out: Path, stem: str, answers: pd.DataFrame, chosen: dict[str, str],
                      run_configs: dict[str, str], order: list[str], labels: dict[str, str],
                      notes: list[str], plot: Callable | None = None) -> list[Path]:
    """Every generation output of one table (`<stem>.*`, e.g. `generation_<pair>_<suite>`): the
    answers of the runs at each method's chosen configuration (`run_configs`: run id ->
    configuration label); `order` and `labels` place and name the methods. `plot(mean, labels,
    stem)` (e.g. harness.plots.generation_plot) draws the shares when given."""
    keep = answers.run_id.map(run_configs).eq(answers.method.map(chosen))
    answers = answers[keep]
    if answers.empty:
        return []
    mean, std, n = method_table(run_shares(answers), order + sorted(set(answers.method)
                                                                    - set(order)))
    counts = answers.groupby("benchmark").run_id.nunique()
    note = "\n\n".join([
        "Percent of answers per category (docs/generation.md; rule-based unless a judge is "
        "named here), pooled over the generative benchmarks "
        + ", ".join(f"{b}" for b in counts.index) + "; mean ± std over seeds.",
        "Configuration per method: " + "; ".join(f"{labels.get(m, m)}: {chosen[m]}"
                                                 for m in mean.index), *notes])
    written = write_shares(out, stem, mean, std, n, labels, note)
    written.append(write_by_benchmark(out, stem, answers, labels))
    written.append(write_examples(out, stem, answers, list(mean.index), labels))
    if plot is not None:
        written += plot(mean, [labels.get(m, m) for m in mean.index], out / stem)
    return written
