"""`python -m harness.analyze pair=...`: where did visual tuning change the language model?

Without merging, scores every neuron of every layer (harness.merge.neurons: FFN neurons, attention
o-columns and q/k/v rows) by the L2 norm of its Δ, and reports per layer and group: the
distribution of scores, how many neurons Neuron-Fusion's ratio locates, and how concentrated the
change is (share of the total squared Δ norm in the top 1/5/10 % of neurons, Gini coefficient).
Writes `<paths.results>/analysis/<pair>/neurons.csv`, `scores.csv` and plots; mirrors them to W&B
when tracking is enabled. The ratio is `analyze.ratio`, else `method.params.ratio`, else Neuron-Fusion's default.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from harness.cli import defer_errors
from harness.errors import ConfigError, HarnessError

log = logging.getLogger("harness.analyze")


def gini(x: torch.Tensor) -> float:
    """Gini coefficient of non-negative values (0: uniform, → 1: all in one neuron)."""
    v = x.double().sort().values
    n = v.numel()
    if n == 0 or float(v.sum()) == 0.0:
        return 0.0
    idx = torch.arange(1, n + 1, dtype=torch.float64)
    return float((2 * (idx * v).sum() / (n * v.sum())) - (n + 1) / n)


def top_share(x: torch.Tensor, frac: float) -> float:
    """Share of the total squared norm held by the top `frac` of neurons."""
    sq = x.double().square().sort(descending=True).values
    k = max(1, int(round(frac * sq.numel())))
    return float(sq[:k].sum() / sq.sum()) if float(sq.sum()) > 0 else 0.0


def layer_groups(base_dir: Path, tuned_dir: Path):
    """Yield (layer, {role: (base, tuned)} float32) for every layer, one layer at a time."""
    from harness.merge.neurons import parse_role
    from harness.models.checkpoint import CheckpointReader
    from harness.models.keymap import detect_layout, to_base_name

    base, tuned = CheckpointReader(base_dir), CheckpointReader(tuned_dir)
    layout = detect_layout(tuned.names(), str(tuned_dir))
    layers: dict[int, dict[str, tuple[str, str]]] = {}
    for name in tuned.names():
        bn = to_base_name(name, layout)
        role = parse_role(bn) if bn else None
        if role and bn in base:
            layers.setdefault(role[0], {})[role[1]] = (bn, name)
    for layer in sorted(layers):
        yield layer, {r: (base.get(bn).float(), tuned.get(tn).float())
                      for r, (bn, tn) in layers[layer].items()}


def check_fit(base_dir: Path, tuned_dir: Path) -> None:
    """CheckpointError unless the tuned model's language model fits the base (the merge
    engine's own check: names, shapes, layer count)."""
    from harness.models.checkpoint import CheckpointReader
    from harness.models.keymap import detect_layout, plan_tensors
    from harness.models.pair import read_config

    base, tuned = CheckpointReader(base_dir), CheckpointReader(tuned_dir)
    names = tuned.names()
    base_names = set(base.names())
    tied = (bool(read_config(base_dir).get("tie_word_embeddings", False))
            or "lm_head.weight" not in base_names)
    plan_tensors(base_names, base.shape, names, tuned.shape, detect_layout(names, str(tuned_dir)),
                 tied, f"base {base_dir}, tuned {tuned_dir}")


def analyze_pair(base_dir: Path, tuned_dir: Path, ratio: float) -> tuple[pd.DataFrame,
                                                                         pd.DataFrame]:
    """(per layer×group statistics, per-neuron scores) of a pair."""
    from harness.merge.neurons import group_scores, located_count

    stats, scores = [], []
    for layer, group in layer_groups(base_dir, tuned_dir):
        deltas = {r: t - b for r, (b, t) in group.items()}
        absolute = group_scores(deltas, None, "absolute")
        relative = group_scores(deltas, {r: b for r, (b, _) in group.items()}, "relative")
        for g, s in absolute.items():
            k = located_count(s.numel(), ratio)
            q = torch.quantile(s.double(), torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
            stats.append({"layer": layer, "group": g, "neurons": s.numel(), "located": k,
                          "mean": float(s.mean()), "median": float(q[0]), "p90": float(q[1]),
                          "p99": float(q[2]), "max": float(s.max()),
                          "top1_share": top_share(s, 0.01), "top5_share": top_share(s, 0.05),
                          "top10_share": top_share(s, 0.10), "gini": gini(s),
                          "relative_mean": float(relative[g].mean())})
            scores += [{"layer": layer, "group": g, "neuron": i, "score": float(v),
                        "relative": float(r)} for i, (v, r) in enumerate(zip(s, relative[g]))]
    if not stats:
        raise HarnessError(f"no neuron groups found in {tuned_dir}")
    return pd.DataFrame(stats), pd.DataFrame(scores)


def plot(stats: pd.DataFrame, scores: pd.DataFrame, out: Path) -> list[Path]:
    """Per-layer score distributions and concentration, one panel per group family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for group, sub in scores.groupby("group"):
        per_layer = [s.score.values for _, s in sub.groupby("layer")]
        if group == "ffn":
            axes[0].boxplot(per_layer, showfliers=False)
            axes[0].set_title("FFN neurons: ‖Δ‖ per layer")
            axes[0].set_xlabel("layer")
    for group, sub in stats.groupby("group"):
        axes[1].plot(sub.layer, sub.top5_share, marker="o", label=group)
    axes[1].set_title("share of Δ² in the top 5 % neurons")
    axes[1].set_xlabel("layer")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    for ext in ("png", "pdf"):
        path = out / f"neurons.{ext}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        files.append(path)
    plt.close(fig)
    return files


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@defer_errors
def main(cfg: DictConfig) -> None:
    """Analyse the pair of `cfg.pair` (no merge)."""
    from harness.pairs import resolve_pair
    from harness.tracking import wandb_mode

    pair = resolve_pair(cfg.pair, cfg.paths)
    from harness.merge.registry import default_params, get_method

    ratio = OmegaConf.select(cfg, "analyze.ratio", default=None)
    ratio = OmegaConf.select(cfg, "method.params.ratio", default=None) if ratio is None else ratio
    ratio = default_params(get_method("neuron_fusion"))["ratio"] if ratio is None else ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ConfigError(f"analyze.ratio={ratio}: the share of neurons located per group must "
                          f"be a number in (0, 1]")
    check_fit(pair.base, pair.mllm)
    stats, scores = analyze_pair(pair.base, pair.mllm, float(ratio))
    out = Path(cfg.paths.results) / "analysis" / pair.name
    out.mkdir(parents=True, exist_ok=True)
    stats.to_csv(out / "neurons.csv", index=False, float_format="%.6g")
    scores.to_csv(out / "scores.csv", index=False, float_format="%.6g")
    files = plot(stats, scores, out)
    summary = stats.groupby("group")[["top1_share", "top5_share", "top10_share", "gini"]].mean()
    print(f"ratio {ratio}: {int(stats.located.sum())} of {int(stats.neurons.sum())} neurons "
          f"located\n{summary.round(3).to_string()}\nwrote {out / 'neurons.csv'}, "
          f"{out / 'scores.csv'}, {', '.join(str(f) for f in files)}")
    if wandb_mode(cfg) != "disabled":
        try:
            import wandb

            run = wandb.init(project=cfg.tracking.wandb.project, group="analysis",
                             name=f"analyze-{pair.name}", mode=wandb_mode(cfg),
                             dir=str(cfg.tracking.wandb.dir), config={"pair": pair.name,
                                                                      "ratio": ratio})
            try:
                run.log({"neurons": wandb.Table(dataframe=stats),
                         "neurons_plot": wandb.Image(str(out / "neurons.png"))})
            finally:
                run.finish()
        except Exception as err:  # W&B must never break the analysis
            log.warning("W&B logging failed (%s: %s)", type(err).__name__, err)


if __name__ == "__main__":
    from harness.cli import run_main

    sys.argv.append("hydra/help=analyze")  # this command's own --help page
    run_main(main)
