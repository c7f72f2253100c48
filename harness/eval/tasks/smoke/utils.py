"""Doc functions of the smoke visual task (images drawn from the doc, no image files)."""

from PIL import Image


def doc_to_visual(doc):
    """A 48×48 image filled with the doc's colour."""
    return [Image.new("RGB", (48, 48), doc["color"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """The question."""
    return doc["question"]


def process_results(doc, results):
    """Exact match of the stripped, lower-cased answer."""
    pred = results[0].strip().lower()
    return {"exact_match": float(pred == doc["answer"])}
