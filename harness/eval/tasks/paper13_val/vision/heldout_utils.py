"""The held-out part of a training split: every HOLDOUT_EVERY-th row (rows 0, 10, 20, ...), by
position as the dataset ships it (the rule of the language variants' heldout.py)."""

from __future__ import annotations

HOLDOUT_EVERY = 10


def heldout(dataset):
    """The held-out rows of a training split."""
    return dataset.filter(lambda _, i: i % HOLDOUT_EVERY == 0, with_indices=True)
