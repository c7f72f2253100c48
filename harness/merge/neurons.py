"""Neurons of a transformer layer and how much each one moved.

A neuron is one hidden unit, with all the parameters that belong to it:
- FFN group "ffn": neuron k = row k of gate_proj and up_proj + column k of down_proj.
- attention group "attn_o": neuron j = column j of o_proj (the vector it writes to the residual).
- attention groups "attn_q", "attn_k", "attn_v": row-neurons of their own matrix.
Score of a neuron = L2 norm of its Δ over all its parameters (`absolute`), or that divided by
the L2 norm of its base parameters (`relative`).
"""

from __future__ import annotations

import re

import torch

from harness.merge.stream import as_rows, chunks

# role → (group, axis of the neuron index in the weight: 0 = row, 1 = column)
ROLES = {
    "gate": ("ffn", 0), "up": ("ffn", 0), "down": ("ffn", 1),
    "q": ("attn_q", 0), "k": ("attn_k", 0), "v": ("attn_v", 0), "o": ("attn_o", 1),
}
SCOPES = {"ffn": ("ffn",), "attn": ("attn_q", "attn_k", "attn_v", "attn_o")}
_PATTERN = re.compile(
    r"^model\.layers\.(\d+)\.(?:mlp\.(gate|up|down)_proj|self_attn\.(q|k|v|o)_proj)\.weight$")


def parse_role(base_name: str) -> tuple[int, str] | None:
    """(layer, role) of a base-LLM weight name that belongs to a neuron group, else None."""
    m = _PATTERN.match(base_name)
    if not m:
        return None
    return int(m.group(1)), m.group(2) or m.group(3)


def _sq_norms(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-neuron sum of squares of a weight whose neuron index is on `axis`."""
    return x.square().sum(dim=1 - axis)


def group_scores(deltas: dict[str, torch.Tensor], bases: dict[str, torch.Tensor] | None = None,
                 score: str = "absolute") -> dict[str, torch.Tensor]:
    """Score every neuron of each group present in `deltas` (role → Δ weight, float32).

    Returns group → 1-D tensor of scores (length = number of neurons of the group).
    `bases` (role → base weight) is needed for `score="relative"`.
    """
    sq: dict[str, torch.Tensor] = {}
    base_sq: dict[str, torch.Tensor] = {}
    for role, delta in deltas.items():
        group, axis = ROLES[role]
        sq[group] = sq.get(group, 0) + _sq_norms(delta, axis)
        if score == "relative":
            if bases is None:
                raise ValueError("score='relative' needs the base weights")
            base_sq[group] = base_sq.get(group, 0) + _sq_norms(bases[role], axis)
    return scores_from_squares(sq, base_sq if score == "relative" else None)


def scores_from_squares(sq: dict[str, torch.Tensor],
                        base_sq: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """group → neuron scores from per-neuron sums of squares of Δ (and of the base weights, for
    the relative score): ||Δ|| or ||Δ|| / max(||θ_base||, 1e-12)."""
    out = {}
    for group, s in sq.items():
        norms = s.sqrt()
        if base_sq is not None:
            norms = norms / base_sq[group].sqrt().clamp_min(1e-12)
        out[group] = norms
    return out


def streamed_sq_norms(base: torch.Tensor, tuned: torch.Tensor, axis: int, ctx,
                      with_base: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-neuron sums of squares of Δ = tuned − base (and of base when `with_base`) of one
    weight whose neuron index is on `axis`, computed over chunks of rows in float32."""
    n, m = as_rows(base).shape
    sq = torch.zeros(n if axis == 0 else m, dtype=torch.float32, device=base.device)
    bsq = torch.zeros_like(sq) if with_base else None
    for lo, hi, fb, ft in chunks(base, tuned, ctx.chunk, rows=True):
        for acc, x in ((sq, ft.sub_(fb)), (bsq, fb)):
            if acc is None:
                continue
            part = x.square().sum(dim=1 - axis)
            if axis == 0:
                acc[lo:hi] = part
            else:
                acc += part
    return sq, bsq


def located_count(n: int, ratio: float) -> int:
    """How many of n neurons Neuron-Fusion locates: max(1, round(ratio·n))."""
    return max(1, min(n, int(round(ratio * n))))
