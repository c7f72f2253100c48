"""Is the tuned model tuned from this base? A check on the first weight matrices read.

A merge only means something when Δ = θ_tuned − θ_base is a small change: an unrelated base of
the same shapes (another Llama-3 variant, say) gives ‖Δ‖ as large as ‖θ‖ itself and a merge
that is noise. For each of the first SAMPLE_MATRICES matched weight matrices (2-D tensors; the
norm vectors say little) the engine measures the relative change

    r = ‖Δ‖ / ‖θ_base‖      (on an evenly strided sample of ≤ SAMPLE_ENTRIES entries, float32)

and refuses the pair when the median r exceeds RELATED_MAX (merge.allow_unrelated=true merges
anyway). Measured (tests/test_pair_sanity.py): the tiny test pairs and the twins (tuned = base +
5 % noise) r ≈ 0.05; the micro pair, whose MLLM is trained hard from a small base, median 0.36
(its matrices 0.25–0.46); the paper's LLaVA pairs are a few percent. Uncorrelated weights give
r = √(1 + ‖θ_tuned‖²/‖θ_base‖²) ≥ 1 (√2 ≈ 1.41 at equal scale). RELATED_MAX = 0.8 sits between:
about twice the micro pair's figure and well under any uncorrelated pair. A median of exactly
0 (base == tuned) is a warning: every method then returns the base.
"""

from __future__ import annotations

import logging
import statistics

import torch

from harness.errors import MergeError

log = logging.getLogger(__name__)

RELATED_MAX = 0.8  # median ‖Δ‖/‖θ_base‖ above which the base is taken for another model's
SAMPLE_MATRICES = 8  # matrices measured before the verdict
SAMPLE_ENTRIES = 1 << 16  # entries per matrix in the strided sample


def relative_delta(base: torch.Tensor, tuned: torch.Tensor) -> float:
    """‖tuned − base‖ / ‖base‖ on an evenly strided sample of the entries (inf for a zero
    base with a non-zero Δ, 0 for two zero tensors)."""
    step = max(1, base.numel() // SAMPLE_ENTRIES)
    b = base.reshape(-1)[::step].float()
    d = tuned.reshape(-1)[::step].float() - b  # not in place: .float() of float32 is a view
    num, den = float(d.norm()), float(b.norm())
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return num / den


class PairCheck:
    """Collects r for the first matrices of a merge (`observe`, on the thread that reads) and
    gives the verdict once enough are in (`decide`, also called at the end of a merge that
    has fewer)."""

    def __init__(self, allow_unrelated: bool, where: str, wanted: int = SAMPLE_MATRICES):
        self.allow_unrelated = allow_unrelated
        self.where = where
        self.wanted = wanted
        self.figures: list[tuple[str, float]] = []
        self.decided = False

    def observe(self, name: str, base: torch.Tensor, tuned: torch.Tensor) -> None:
        """Measure one matched tensor (a matrix, until the verdict); MergeError when this one
        completes the sample and the pair is unrelated."""
        if self.decided or base.dim() < 2 or not base.is_floating_point():
            return
        self.figures.append((name, relative_delta(base, tuned)))
        if len(self.figures) >= self.wanted:
            self.decide()

    def median(self) -> float | None:
        """The median r measured so far (None before any matrix)."""
        return statistics.median(r for _, r in self.figures) if self.figures else None

    def decide(self) -> None:
        """Refuse an unrelated pair (MergeError naming the tensors and r), warn when base and
        tuned are identical; a no-op after the first call or without any matrix measured."""
        if self.decided or not self.figures:
            return
        self.decided = True
        median = self.median()
        shown = ", ".join(f"{name} {r:.2f}" for name, r in self.figures[:4])
        if median > RELATED_MAX:
            msg = (f"base and tuned model look unrelated ({self.where}): ‖Δ‖/‖θ_base‖ has median "
                   f"{median:.2f} over the first {len(self.figures)} weight matrices ({shown}, …) "
                   f"where a model tuned from its base measures a few percent and the limit is "
                   f"{RELATED_MAX}; check that the base is the LLM the tuned model was trained "
                   f"from, or set merge.allow_unrelated=true to merge anyway")
            if not self.allow_unrelated:
                raise MergeError(msg)
            log.warning("%s (merging: merge.allow_unrelated=true)", msg)
        elif median == 0:
            log.warning("base and tuned model are identical on the first %d weight matrices "
                        "(%s): Δ = 0, so every method returns the base", len(self.figures),
                        self.where)

    def summary(self) -> dict:
        """What merge.json records: the matrices measured and the median r."""
        median = self.median()
        return {"matrices": len(self.figures),
                "median_relative_delta": None if median is None else round(median, 6),
                "limit": RELATED_MAX, "allow_unrelated": self.allow_unrelated}
