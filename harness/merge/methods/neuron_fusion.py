"""Neuron-Fusion (Yu & Ananiadou, "Locate-then-Merge", Findings of EMNLP 2025, arXiv 2505.16703).

Keep the full change of the few neurons that moved most (they carry the new visual skill) and
damp the change of all other neurons (they carry general language skill).
- Locate: score each neuron of the groups in `scope` (harness/merge/neurons.py: L2 norm of its Δ,
  or relative to its base norm); in each layer and group locate the max(1, round(ratio·n))
  top-scoring neurons (ties: lower index first).
- Restore: located neurons get keep·Δ.  Suppress: every other neuron of the group gets
  suppress·Δ.  Tensors outside the scope (embeddings, norms, lm_head, attention when
  scope = [ffn]) get others_scale·Δ.
θ = θ_base + w ⊙ Δ,   w = keep on located neurons, suppress on other in-scope neurons,
                       others_scale elsewhere: one weight per row or column of a group's
                       matrices (registered as kind `group`).
Which of these choices are our reading of the paper is stated in docs/methods.md.
"""

from dataclasses import dataclass

import torch

from harness.merge.neurons import (
    ROLES,
    SCOPES,
    located_count,
    scores_from_squares,
    streamed_sq_norms,
)
from harness.merge.registry import check_range, register
from harness.merge.select import topk_mask
from harness.merge.stream import MergeContext

SCORES = ("absolute", "relative")


@dataclass(frozen=True)
class NeuronFusionParams:
    """ratio in (0, 1]; score absolute|relative; scope: a non-empty list from [ffn, attn] (or
    the strings ffn, attn, both); keep, suppress, others_scale ≥ 0.

    Defaults: chosen on eval=micro_val by +experiment=micro_select (docs/micro.md); they are
    the CLI's too (conf/method/*.yaml leaves each parameter null: its default here).
    """

    ratio: float = 0.01
    score: str = "absolute"
    scope: tuple = ("ffn", "attn")
    keep: float = 1.0
    suppress: float = 0.4
    others_scale: float = 1.0

    def __post_init__(self):
        check_range("neuron_fusion", "ratio", self.ratio, 0.0, 1.0, lo_open=True)
        if self.score not in SCORES:
            raise ValueError(f"parameter score={self.score!r} is not valid; choose one of "
                             f"{', '.join(SCORES)}")
        scope = self.scope
        if isinstance(scope, str):  # "ffn", "attn", "both", or "ffn,attn" / "ffn+attn"
            scope = list(SCOPES) if scope == "both" else scope.replace("+", ",").split(",")
        scope = tuple(str(s).strip() for s in scope)
        if not scope or any(s not in SCOPES for s in scope):
            raise ValueError(f"parameter scope={self.scope!r} is not valid; give ffn, attn, both, "
                             f"or a non-empty list drawn from {list(SCOPES)}")
        object.__setattr__(self, "scope", tuple(sorted(set(scope))))
        for name in ("keep", "suppress", "others_scale"):
            check_range("neuron_fusion", name, getattr(self, name), 0.0, None)

    def groups(self) -> set[str]:
        """Neuron groups in scope."""
        return {g for s in self.scope for g in SCOPES[s]}


def group_weight(bases: dict[str, torch.Tensor], tuneds: dict[str, torch.Tensor],
                 p: NeuronFusionParams, ctx: MergeContext
                 ) -> tuple[dict[str, float | tuple[torch.Tensor, int]], dict]:
    """Weights of one layer's matrix group (role → weight; roles gate/up/down or q/k/v/o).

    Returns role → (per-neuron weights, axis of the neuron index) for roles in scope and
    others_scale for the rest, and the located neurons (group → sorted list of indices).
    """
    in_scope = p.groups()
    sq, base_sq = {}, {}
    for role in bases:
        group, axis = ROLES[role]
        if group not in in_scope:
            continue
        s, bs = streamed_sq_norms(bases[role], tuneds[role], axis, ctx, p.score == "relative")
        sq[group] = sq[group] + s if group in sq else s
        if bs is not None:
            base_sq[group] = base_sq[group] + bs if group in base_sq else bs
    scores = scores_from_squares(sq, base_sq if p.score == "relative" else None)
    located, weights = {}, {}
    for group, s in scores.items():
        mask = topk_mask(s, located_count(s.numel(), p.ratio))
        located[group] = mask.nonzero().reshape(-1).tolist()
        weights[group] = torch.where(mask, p.keep, p.suppress).to(torch.float32)
    out: dict[str, float | tuple[torch.Tensor, int]] = {}
    for role in bases:
        group, axis = ROLES[role]
        out[role] = (weights[group], axis) if group in weights else p.others_scale
    return out, located


def weight(base, tuned, p: NeuronFusionParams, ctx) -> float:
    """Tensors that belong to no neuron group: w = others_scale."""
    return p.others_scale


register("neuron_fusion", NeuronFusionParams, weight, kind="group", group_weight=group_weight,
         label="Neuron-Fusion", row=80)
