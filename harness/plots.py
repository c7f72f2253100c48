"""Plots of the tables: the language-vs-vision trade-off, per-hyperparameter sweeps and the
generation analysis's shares. A leaf: each function takes data frames and labels (the callers
read the methods' labels and order from harness.method_catalog) and imports nothing else of
the harness."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _averages(agg: pd.DataFrame) -> pd.DataFrame:
    wide = agg[agg.column.isin(["language", "vision"])].pivot_table(
        index=["method", "config"], columns="column", values="mean")
    # a suite without visual (or language) benchmarks has no such column: no points
    wide = wide.reindex(columns=["language", "vision"])
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


# Label offsets (points) tried in order until a label overlaps no label already placed.
_OFFSETS = [(6, 6), (6, -12), (-6, 6), (-6, -12), (6, 18), (-6, 18), (6, -24), (-6, -24),
            (14, 0), (-14, 0), (6, 30), (-6, 30), (6, -36), (-6, -36)]


def shared_labels(points: pd.DataFrame, labels: dict[str, str]) -> list[tuple[float, float, str]]:
    """(language, vision, text) per distinct point: methods at the same point (to the shown
    precision, 0.1) share one label, e.g. "Model Soup = Task Arithmetic"."""
    groups: dict[tuple[float, float], list[str]] = {}
    for _, row in points.iterrows():
        key = (round(float(row.language), 1), round(float(row.vision), 1))
        groups.setdefault(key, []).append(labels.get(row.method, row.method))
    return [(x, y, " = ".join(names)) for (x, y), names in groups.items()]


def place_labels(ax, items: list[tuple[float, float, str]]) -> list:
    """Annotate each (x, y, text), moving a label to the first offset where its box overlaps
    no label placed before it; returns the annotations."""
    renderer = ax.figure.canvas.get_renderer()
    placed, boxes = [], []
    for x, y, text in sorted(items, key=lambda item: (-item[1], item[0])):
        for dx, dy in _OFFSETS:
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy),
                              fontsize=7, ha="left" if dx >= 0 else "right", zorder=5)
            box = ann.get_window_extent(renderer).expanded(1.05, 1.15)
            if not any(box.overlaps(other) for other in boxes):
                break
            ann.remove()
        else:  # every offset taken: keep the first one
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=_OFFSETS[0],
                              fontsize=7, zorder=5)
            box = ann.get_window_extent(renderer)
        boxes.append(box)
        placed.append(ann)
    return placed


def tradeoff_plot(agg: pd.DataFrame, chosen: dict[str, str], stem: Path,
                  labels: dict[str, str], order: list[str]) -> list[Path]:
    """Language average vs visual average: every configuration run (small, in its method's
    colour), each method's chosen one (large, outlined, labelled by `labels`; methods at one
    point share a label), the base→MLLM line and the Pareto front. Colours follow `order`."""
    pts = _averages(agg)
    if pts.empty:
        return []
    order = [m for m in order if m in set(pts.method)] + sorted(set(pts.method) - set(order))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(order)}
    fig, ax = plt.subplots(figsize=(7.2, 5.4))
    for method, sub in pts.groupby("method"):
        ax.scatter(sub.language, sub.vision, s=14, color=colours[method], alpha=0.35,
                   linewidths=0, zorder=1)
    front = pareto(pts)
    ax.plot(front.language, front.vision, "--", c="tab:green", lw=1, label="Pareto front", zorder=2)
    sel = pts[[chosen.get(m) == c for m, c in zip(pts.method, pts.config)]]
    ends = sel.set_index("method")
    if {"base", "mllm"} <= set(ends.index):
        ax.plot(ends.loc[["base", "mllm"], "language"], ends.loc[["base", "mllm"], "vision"],
                c="0.4", lw=1, label="base → MLLM", zorder=2)
    for _, row in sel.iterrows():
        ax.scatter(row.language, row.vision, s=60, color=colours[row.method], edgecolors="black",
                   linewidths=0.8, zorder=4)
    ax.scatter([], [], s=14, c="0.6", alpha=0.5, label="every configuration run")
    ax.scatter([], [], s=60, c="0.6", edgecolors="black", label="chosen configuration")
    ax.set_xlabel("language average (%)")
    ax.set_ylabel("visual average (%)")
    ax.set_title(stem.name.replace("tradeoff_", "trade-off: "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    place_labels(ax, shared_labels(sel, labels))
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


GENERATION_COLOURS = {"correct": "#4c9a2a", "not_known": "#9e9e9e",
                      "context_hallucination": "#d9822b", "other_error": "#b03a2e"}


def generation_plot(mean: pd.DataFrame, labels: list[str], stem: Path) -> list[Path]:
    """Stacked horizontal bars: the category shares (percent) of each method's answers."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(mean) + 1.2))
    left = pd.Series(0.0, index=mean.index)
    for cat in mean.columns:
        ax.barh(labels, mean[cat], left=left, color=GENERATION_COLOURS.get(cat), label=cat)
        left += mean[cat]
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("answers (%)")
    ax.legend(ncol=4, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return _save(fig, stem)
