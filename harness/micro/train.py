"""Training of the micro pair on CPU with plain PyTorch.

Stage 1: the base LLM learns the language skills (next-token loss on every token).
Stage 2: visual instruction tuning of vision tower + projector + language model on visual data
only (loss on the answer tokens), as LLaVA's stage 2 does with mostly visual data — the
language model drifts and forgets part of its language skills.
"""

from __future__ import annotations

import math
import random

import torch
from tqdm.auto import tqdm

from harness.micro import world as W
from harness.micro.images import render
from harness.micro.models import IMAGE_TOKENS
from harness.micro.tokenizer import IMAGE_TOKEN

IGNORE = -100


def language_lines(world: W.World, n_train: int) -> dict[str, list[str]]:
    """Training text of each language skill, one example per line."""
    lines = {"facts": [" ".join(W.fact_statement(*f)) + " ." for f in world.facts()]}
    for task in ("arith", "copy", "reverse"):
        train, _ = W.split_instances(task, n_train, 100)
        lines[task] = [f"{p} {a} ." for p, a in train]
    train, _ = W.split_instances("pattern", n_train, 100)
    lines["pattern"] = [f"{p} {a} ." for p, a, _ in train]
    return lines


def _schedule(opt, step: int, steps: int, lr: float) -> None:
    warm = max(1, steps // 20)
    f = step / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (steps - warm)))
    for g in opt.param_groups:
        g["lr"] = lr * max(f, 0.02)


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    n = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (n - len(s)) for s in seqs])


def _update(model, opt, loss: torch.Tensor, ema: float | None) -> float:
    """One optimiser step (gradient clipped at 1); returns the running mean of the loss."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()


def train_language(model, tok, world: W.World, cfg: dict, seed: int, progress: bool) -> float:
    """Stage 1. Returns the final average loss."""
    rng = random.Random(seed)
    encoded = {k: [tok(x)["input_ids"] for x in v]
               for k, v in language_lines(world, cfg["n_train"]).items()}
    tasks = sorted(encoded)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01)
    model.train()
    ema = None
    bar = tqdm(range(cfg["steps"]), desc="micro: train base LLM", disable=not progress)
    for step in bar:
        batch = [rng.choice(encoded[rng.choice(tasks)]) for _ in range(cfg["batch"])]
        ids = _pad(batch, tok.pad_token_id)
        labels = ids.masked_fill(ids == tok.pad_token_id, IGNORE)
        _schedule(opt, step, cfg["steps"], cfg["lr"])
        loss = model(input_ids=ids, attention_mask=(labels != IGNORE).long(), labels=labels).loss
        ema = _update(model, opt, loss, ema)
        bar.set_postfix(loss=f"{ema:.3f}")
    model.eval()
    return float(ema)


def visual_examples(tok, processor, cfg: dict):
    """(input ids, labels, pixel values) of every visual training example."""
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    ids, labels, scenes = [], [], []
    for task in W.VISUAL_TASKS:
        train, _ = W.split_visual(task, cfg["n_train"], 100)
        for scene, question, answer in train:
            prompt = tok.apply_chat_template(
                [{"role": "user", "content": f"{IMAGE_TOKEN}\n{question}"}], tokenize=False,
                add_generation_prompt=True)
            p_ids = []
            for t in tok(prompt)["input_ids"]:
                p_ids.extend([image_id] * IMAGE_TOKENS if t == image_id else [t])
            a_ids = tok(answer)["input_ids"] + [tok.eos_token_id]
            ids.append(p_ids + a_ids)
            labels.append([IGNORE] * len(p_ids) + a_ids)
            scenes.append(scene)
    pixels = processor.image_processor([render(s.objects) for s in scenes],
                                       return_tensors="pt")["pixel_values"]
    return ids, labels, pixels


def train_visual(model, tok, processor, cfg: dict, seed: int, progress: bool) -> float:
    """Stage 2. Returns the final average loss."""
    rng = random.Random(seed)
    ids, labels, pixels = visual_examples(tok, processor, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.0)
    model.train()
    ema = None
    bar = tqdm(range(cfg["steps"]), desc="micro: visual instruction tuning", disable=not progress)
    for step in bar:
        idx = [rng.randrange(len(ids)) for _ in range(cfg["batch"])]
        x = _pad([ids[i] for i in idx], tok.pad_token_id)
        y = _pad([labels[i] for i in idx], IGNORE)
        mask = _pad([[1] * len(ids[i]) for i in idx], 0)
        _schedule(opt, step, cfg["steps"], cfg["lr"])
        loss = model(input_ids=x, attention_mask=mask, pixel_values=pixels[idx], labels=y).loss
        ema = _update(model, opt, loss, ema)
        bar.set_postfix(loss=f"{ema:.3f}")
    model.eval()
    return float(ema)
