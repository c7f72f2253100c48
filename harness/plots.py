"""Plots of the tables: the language-vs-vision trade-off and per-hyperparameter sweeps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _averages(agg: pd.DataFrame) -> pd.DataFrame:
    wide = agg[agg.column.isin(["language", "vision"])].pivot_table(
        index=["method", "config"], columns="column", values="mean")
    return wide.dropna().reset_index()


def pareto(points: pd.DataFrame) -> pd.DataFrame:
    """Points not dominated in (language, vision), sorted by language."""
    pts = points.sort_values(["language", "vision"], ascending=[False, False])
    front, best_v = [], float("-inf")
    for _, row in pts.iterrows():
        if row.vision > best_v:
            front.append(row)
            best_v = row.vision
    return pd.DataFrame(front).sort_values("language")


def _save(fig, stem: Path) -> list[Path]:
    out = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(out[0], dpi=150, bbox_inches="tight")
    fig.savefig(out[1], bbox_inches="tight")
    plt.close(fig)
    return out


def tradeoff_plot(agg: pd.DataFrame, chosen: dict[str, str], stem: Path) -> list[Path]:
    """Language average vs visual average: every configuration run (grey), each method's chosen
    one (labelled), the base→MLLM line and the Pareto front."""
    from harness.tables import LABELS

    pts = _averages(agg)
    if pts.empty:
        return []
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.scatter(pts.language, pts.vision, s=12, c="0.75", label="all configurations", zorder=1)
    front = pareto(pts)
    ax.plot(front.language, front.vision, "--", c="tab:green", lw=1, label="Pareto front", zorder=2)
    sel = pts[[chosen.get(m) == c for m, c in zip(pts.method, pts.config)]]
    ends = sel.set_index("method")
    if {"base", "mllm"} <= set(ends.index):
        ax.plot(ends.loc[["base", "mllm"], "language"], ends.loc[["base", "mllm"], "vision"],
                c="0.4", lw=1, label="base → MLLM", zorder=2)
    for _, row in sel.iterrows():
        ax.scatter(row.language, row.vision, s=40, zorder=3)
        ax.annotate(LABELS.get(row.method, row.method), (row.language, row.vision),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("language average (%)")
    ax.set_ylabel("visual average (%)")
    ax.set_title(stem.name.replace("tradeoff_", "trade-off: "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, stem)


def sweep_plot(sub: pd.DataFrame, stem: Path, label: str) -> list[Path]:
    """Language, visual and overall average of every configuration of one method."""
    wide = sub[sub.column.isin(["language", "vision", "all"])].pivot_table(
        index="config", columns="column", values="mean").sort_index()
    if wide.empty:
        return []
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(wide) + 2), 4.2))
    x = range(len(wide))
    for col, name in (("language", "language"), ("vision", "visual"), ("all", "overall")):
        if col in wide:
            ax.plot(list(x), wide[col].values, marker="o", label=name)
    ax.set_xticks(list(x))
    ax.set_xticklabels(wide.index, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("average (%)")
    ax.set_title(f"{label}: sweep")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, stem)
