"""GQA's val split: the first VAL_QUESTIONS balanced val questions with their pictures.

lmms-eval's gqa_process_docs loads `testdev_balanced_images` by a hard-coded id, so the val
pictures are attached here. The balanced val split has about 132k questions over 10k images;
a fixed prefix keeps the split the size of testdev-balanced (12,578) and loads only the
pictures those questions show.
"""

from __future__ import annotations

IMAGES = ("lmms-lab-encoder/GQA", "val_balanced_images", "val")
VAL_QUESTIONS = 12578


def gqa_val_process_docs(dataset):
    """The first VAL_QUESTIONS questions, each with its picture (by imageId)."""
    from datasets import load_dataset

    dataset = dataset.select(range(min(VAL_QUESTIONS, len(dataset))))
    wanted = set(dataset["imageId"])
    path, config, split = IMAGES
    rows = load_dataset(path, config, split=split, token=True)
    rows = rows.filter(lambda i: i in wanted, input_columns="id")
    images = {row["id"]: row["image"].convert("RGB") for row in rows}
    return dataset.map(lambda doc: {"image": images[doc["imageId"]]})
