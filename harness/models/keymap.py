"""Key maps: which tensor of a tuned checkpoint is which tensor of its base LLM.

Layouts of the tuned model's language model, all mapped onto the base's `model.X` / `lm_head.*`:
- `llava_old`: `language_model.model.X`, `language_model.lm_head.*` (older LLaVA / LLaVA-NeXT)
- `llava_new`: `model.language_model.X`, `lm_head.*` (transformers ≥ 4.52 LLaVA / LLaVA-NeXT)
- `causal_lm`: `model.X`, `lm_head.*` (a plain post-trained LLM)
Everything else in the tuned checkpoint (vision tower, projector, image newline) is copied.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import CheckpointError

LAYOUTS = {
    # layout: (prefix of the LM body in the tuned model, name of its lm_head)
    "llava_old": ("language_model.model.", "language_model.lm_head."),
    "llava_new": ("model.language_model.", "lm_head."),
    "causal_lm": ("model.", "lm_head."),
}
VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


def detect_layout(names: list[str], where: str) -> str:
    """The layout of a tuned checkpoint from its tensor names."""
    if any(n.startswith("language_model.model.") for n in names):
        return "llava_old"
    if any(n.startswith("model.language_model.") for n in names):
        return "llava_new"
    if any(n.startswith("model.layers.") for n in names):
        return "causal_lm"
    raise CheckpointError(
        f"cannot find a language model in {where}: expected tensors named "
        f"'language_model.model.*', 'model.language_model.*' or 'model.layers.*' "
        f"(first tensor: {names[0] if names else 'none'})")


def to_base_name(name: str, layout: str) -> str | None:
    """The base-LLM name of a tuned tensor, or None when it is not part of the language model."""
    body, head = LAYOUTS[layout]
    if name.startswith(body):
        return "model." + name[len(body):]
    if name.startswith(head):
        return "lm_head." + name[len(head):]
    return None


def to_tuned_name(base_name: str, layout: str) -> str:
    """The tuned-model name of a base-LLM tensor (inverse of `to_base_name`)."""
    body, head = LAYOUTS[layout]
    if base_name.startswith("model."):
        return body + base_name[len("model."):]
    if base_name.startswith("lm_head."):
        return head + base_name[len("lm_head."):]
    raise CheckpointError(f"tensor {base_name} is not a language-model tensor")


@dataclass
class TensorPlan:
    """How one tensor of the tuned model becomes an output tensor."""

    tuned: str                    # name in the tuned checkpoint
    base: str | None              # name of its counterpart in the base LLM (None: copied)
    llm_name: str | None          # name in out/llm (None: not part of the LLM)
    shared_rows: int | None = None  # rows merged when the tuned tensor has extra vocab rows


def plan_tensors(base_names: set[str], base_shape, tuned_names: list[str], tuned_shape,
                 layout: str, base_tied: bool, where: str) -> tuple[list[TensorPlan], list[str]]:
    """Pair every tuned tensor with its base counterpart and check the shapes fit.

    Returns the plans and the base tensors nobody matched. Raises CheckpointError on the first
    shape mismatch other than extra vocabulary rows, or when nothing matches.
    """
    plans, used = [], set()
    for name in tuned_names:
        llm_name = to_base_name(name, layout)
        if llm_name is None:
            plans.append(TensorPlan(name, None, None))
            continue
        base = llm_name
        if base not in base_names and llm_name == "lm_head.weight" and base_tied:
            base = "model.embed_tokens.weight"  # base ties its output head to the embeddings
        if base not in base_names:
            plans.append(TensorPlan(name, None, llm_name))
            continue
        bs, ts = tuple(base_shape(base)), tuple(tuned_shape(name))
        shared = None
        if bs != ts:
            extra_vocab = (llm_name in VOCAB_TENSORS and len(bs) == len(ts) == 2
                           and bs[1] == ts[1] and ts[0] > bs[0])
            if not extra_vocab:
                raise CheckpointError(
                    f"shape mismatch at {name} ({where}): tuned {list(ts)} vs base {base} "
                    f"{list(bs)}. Only extra vocabulary rows may differ; a different hidden size "
                    f"or layer count means the tuned model was not tuned from this base LLM.")
            shared = bs[0]
        used.add(base)
        plans.append(TensorPlan(name, base, llm_name, shared))
    if not used:
        raise CheckpointError(
            f"no tensor of the tuned model matches the base LLM ({where}); first tuned tensor "
            f"{tuned_names[0] if tuned_names else 'none'} (layout {layout}). Check that the pair "
            f"is a base LLM and a model tuned from it.")
    layer_counts = _layer_count(base_names), _layer_count(
        {p.llm_name for p in plans if p.llm_name})
    if layer_counts[0] != layer_counts[1]:
        raise CheckpointError(
            f"layer count mismatch ({where}): base has {layer_counts[0]} layers, the tuned "
            f"language model {layer_counts[1]}")
    unmatched = sorted(base_names - used - ({"lm_head.weight"} if base_tied else set()))
    return plans, unmatched


def _layer_count(names) -> int:
    layers = set()
    for n in names:
        if n.startswith("model.layers."):
            layers.add(int(n.split(".")[2]))
    return len(layers)
