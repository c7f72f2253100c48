"""Writing tables: the main table (markdown, LaTeX booktabs, CSV) and the sweep tables, from an
aggregate frame (harness.tables.group.aggregate), a chosen configuration per method and labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.method_catalog import in_order

REFERENCE = {"base", "mllm"}
AVERAGES = [("language", "Lang. avg"), ("vision", "Vis. avg"), ("all", "Overall avg")]


def benchmark_order(frame: pd.DataFrame) -> list[str]:
    """Language benchmarks first, then visual, each in first-seen order."""
    order = []
    for kind in ("language", "vision"):
        order += list(dict.fromkeys(frame.loc[frame.kind == kind, "column"]))
    return order


def _cell(mean: float, std: float, n: int, bold: bool, latex: bool) -> str:
    text = f"{mean:.1f}" + (f" ± {std:.1f}" if n > 1 else "")
    if latex:
        text = text.replace("±", r"$\pm$")
        return rf"\textbf{{{text}}}" if bold else text
    return f"**{text}**" if bold else text


def main_table(agg: pd.DataFrame, chosen: dict[str, str], benches: list[str]):
    """(numeric frame, markdown cells, latex cells, methods, columns) of the main table."""
    columns = benches + [a for a, _ in AVERAGES]
    methods = in_order(chosen)
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


def write_main(out: Path, stem: str, table, chosen: dict[str, str], rule: str,
               labels: dict[str, str], notes: list[str] = ()) -> list[Path]:
    """Markdown, LaTeX (booktabs) and CSV of a main table (`table`: main_table's result);
    the rule, the chosen configurations and `notes` are printed under it."""
    mean, md, tex, methods, columns = table
    header = _header(columns)
    names = [labels.get(m, m) for m in methods]
    note = "\n\n".join([f"Chosen configuration per method (rule: {rule}): "
                         + "; ".join(f"{labels.get(m, m)}: {chosen[m]}" for m in methods),
                         *notes])
    lines = ["| Method | " + " | ".join(header) + " |",
             "|---|" + "---:|" * len(header)]
    lines += [f"| {lab} | " + " | ".join(cells) + " |" for lab, cells in zip(names, md)]
    (out / f"{stem}.md").write_text("\n".join(lines) + f"\n\n{note}\n")
    esc = [h.replace("_", r"\_") for h in header]
    tl = [r"\begin{tabular}{l" + "r" * len(header) + "}", r"\toprule",
          "Method & " + " & ".join(esc) + r" \\", r"\midrule"]
    for i, (lab, cells) in enumerate(zip(names, tex)):
        tl.append(f"{lab} & " + " & ".join(cells) + r" \\")
        if i == 1 and len(names) > 2 and methods[1] in REFERENCE:
            tl.append(r"\midrule")
    tl += [r"\bottomrule", r"\end{tabular}", *(f"% {line}" for line in note.splitlines() if line)]
    (out / f"{stem}.tex").write_text("\n".join(tl) + "\n")
    csv = mean.copy()
    csv.index = names
    csv.columns = header
    csv.round(4).to_csv(out / f"{stem}.csv", index_label="Method")
    return [out / f"{stem}.{ext}" for ext in ("md", "tex", "csv")]


def write_sweep(out: Path, stem: str, sub: pd.DataFrame, benches: list[str],
                notes: list[str] = ()) -> list[Path]:
    """One row per configuration of a method (mean over seeds); `notes` under it."""
    columns = benches + [a for a, _ in AVERAGES]
    pivot = sub.pivot_table(index="config", columns="column", values="mean").reindex(
        columns=[c for c in columns if c in set(sub.column)])
    pivot = pivot.sort_index()
    header = _header(list(pivot.columns))
    lines = ["| Configuration | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for config, row in pivot.iterrows():
        lines.append(f"| {config} | " + " | ".join("" if pd.isna(v) else f"{v:.1f}" for v in row)
                     + " |")
    text = "\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in notes)
    (out / f"{stem}.md").write_text(text)
    pivot.round(4).to_csv(out / f"{stem}.csv")
    return [out / f"{stem}.md", out / f"{stem}.csv"]
