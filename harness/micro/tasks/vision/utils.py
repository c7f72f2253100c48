"""Doc functions of the micro visual tasks: pictures are drawn from the doc's scene string."""

from harness.micro.images import render


def _objects(scene: str):
    out = []
    for part in scene.split(";"):
        shape, color, *nums = part.split(",")
        out.append((shape, color, *map(int, nums)))
    return out


def doc_to_visual(doc):
    """The picture of the doc's scene."""
    return [render(_objects(doc["scene"]))]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """The question (llava_hf puts the image token in front)."""
    return doc["question"]


def process_results(doc, results):
    """Exact match of the first word of the answer."""
    words = results[0].strip().lower().split()
    return {"exact_match": float(bool(words) and words[0] == doc["answer"])}
