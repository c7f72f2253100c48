"""Held-out parts of a training split, for validation variants of tasks whose reported split is
the only other labelled one (GSM8K: test; HellaSwag and Winogrande: validation).

Every HOLDOUT_EVERY-th row of `train` (rows 0, 10, 20, ...) is held out for validation; the
rest is the few-shot pool, so a validation doc is never its own (or another's) example. Rows are
chosen by position in the split as the dataset ships it, so the part is fixed.
"""

from __future__ import annotations

HOLDOUT_EVERY = 10


def heldout(dataset):
    """The held-out rows of a training split (every HOLDOUT_EVERY-th, from row 0)."""
    return dataset.filter(lambda _, i: i % HOLDOUT_EVERY == 0, with_indices=True)


def pool(dataset):
    """The rest of the training split: the few-shot pool of a held-out validation task."""
    return dataset.filter(lambda _, i: i % HOLDOUT_EVERY != 0, with_indices=True)


def hellaswag_heldout(dataset):
    """HellaSwag's own preprocessing on the held-out rows."""
    from lm_eval.tasks.hellaswag.utils import process_docs

    return process_docs(heldout(dataset))


def hellaswag_pool(dataset):
    """HellaSwag's own preprocessing on the few-shot pool."""
    from lm_eval.tasks.hellaswag.utils import process_docs

    return process_docs(pool(dataset))
