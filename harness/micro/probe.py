"""Quick in-process scores of a micro pair (greedy, same prompts as the benchmark files).

For developing the micro world; the harness's real numbers come from lm-eval and lmms-eval.
"""

from __future__ import annotations

import torch

from harness.micro import world as W
from harness.micro.images import render
from harness.micro.tokenizer import IMAGE_TOKEN


@torch.no_grad()
def _greedy(model, ids: list[int], n: int, stop: set[int], **kw) -> list[int]:
    x = torch.tensor([ids])
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                         do_sample=False, eos_token_id=list(stop), **kw)
    return out[0, len(ids):].tolist()


def language_scores(lm, tok, n: int = 50) -> dict:
    """Accuracy (%) of a causal LM on the language skills."""
    world = W.make_world()
    dot = tok.convert_tokens_to_ids(".")
    out = {}
    facts = world.facts()[:n]
    correct = 0
    for rel, s, o in facts:
        prompt, _ = W.fact_statement(rel, s, o)
        gen = _greedy(lm, tok(prompt)["input_ids"], 1, {dot})
        correct += tok.decode(gen).strip() == o
    out["facts"] = 100 * correct / len(facts)
    for task in ("arith", "copy", "reverse", "pattern"):
        _, test = W.split_instances(task, 0, n)
        correct = 0
        for inst in test:
            gen = _greedy(lm, tok(inst[0])["input_ids"], 8, {dot, tok.eos_token_id})
            text = tok.decode([t for t in gen if t != dot], skip_special_tokens=True)
            correct += text.replace(" ", "") == inst[1].replace(" ", "")
        out[task] = 100 * correct / len(test)
    return out


def visual_scores(model, processor, n: int = 50) -> dict:
    """Accuracy (%) of a LLaVA on the visual skills."""
    tok = processor.tokenizer
    out = {}
    for task in W.VISUAL_TASKS:
        _, test = W.split_visual(task, 0, n)
        correct = 0
        for scene, q, a in test:
            text = tok.apply_chat_template([{"role": "user", "content": f"{IMAGE_TOKEN}\n{q}"}],
                                           tokenize=False, add_generation_prompt=True)
            inp = processor(images=render(scene.objects), text=text, return_tensors="pt")
            gen = model.generate(**inp, max_new_tokens=3, do_sample=False)
            pred = tok.decode(gen[0, inp["input_ids"].shape[1]:], skip_special_tokens=True)
            correct += pred.strip() == a
        out[task] = 100 * correct / len(test)
    return out
