"""Golden digests: every method's merge of the tiny test pairs is byte-identical to the recorded
one (tests/data/merge_golden.json), at its default and at a non-default parameter set.

Pairs: both LLaVA key layouts with extra vocabulary rows (untied base), a tied-embedding base
with a plain tuned LLM, and a bfloat16 pair whose matrices are large enough (> 4 × 32 k entries)
for the sampled top-k selection. Regenerate (only for an intended change of a method's
definition) with HARNESS_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from harness.merge import merge_checkpoints

GOLDEN = Path(__file__).resolve().parent / "data" / "merge_golden.json"
UPDATE = os.environ.get("HARNESS_UPDATE_GOLDEN") == "1"

PARAMS = {
    "base": [{}], "mllm": [{}],
    "model_soup": [{}, {"alpha": 0.3}],
    "task_arithmetic": [{}, {"scale": 0.8}],
    "ties": [{}, {"density": 0.35, "scale": 0.7}],
    "dare": [{}, {"density": 0.3, "scale": 0.9, "seed": 5}],
    "breadcrumbs": [{}, {"density": 0.3, "gamma": 0.05, "scale": 0.8}],
    "della": [{}, {"density": 0.5, "epsilon": 0.2, "scale": 0.9, "seed": 2}],
    "neuron_fusion": [{}, {"ratio": 0.2, "score": "relative", "scope": ["ffn"], "keep": 0.9,
                           "suppress": 0.3, "others_scale": 0.5}],
}
PAIRS = ("llava_new", "llava_old", "tied_llm", "bf16_llm")


@pytest.fixture(scope="module")
def golden_pairs(tiny_root, tiny_llama, tiny_llava_new, tiny_llava_old):
    from harness.models.tiny import build_tiny_llama, build_tiny_tuned_llm

    tied = build_tiny_llama(tiny_root / "golden_tied", tie_embeddings=True, seed=4)
    wide = build_tiny_llama(tiny_root / "golden_bf16", hidden=256, intermediate=640, layers=1,
                            heads=4, kv_heads=2, seed=5, dtype="bfloat16")
    return {"llava_new": (tiny_llama, tiny_llava_new), "llava_old": (tiny_llama, tiny_llava_old),
            "tied_llm": (tied, build_tiny_tuned_llm(tiny_root / "golden_tied_tuned", tied)),
            "bf16_llm": (wide, build_tiny_tuned_llm(tiny_root / "golden_bf16_tuned", wide))}


def _digests(out: Path) -> dict[str, str]:
    return {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(out.glob("*/*.safetensors"))}


def _key(pair: str, method: str, params: dict) -> str:
    return f"{pair}/{method}/{json.dumps(params, sort_keys=True)}"


@pytest.mark.parametrize("kernels", ["torch", "fused"])
def test_merges_match_golden_digests(tmp_path, golden_pairs, kernels):
    got = {}
    for pair in PAIRS:
        base, tuned = golden_pairs[pair]
        for method, sets in PARAMS.items():
            for params in sets:
                out = tmp_path / f"{pair}-{method}"
                merge_checkpoints(base, tuned, method, params, out=out, seed=1, progress=False,
                                  force=True, kernels=kernels)
                got[_key(pair, method, params)] = _digests(out)
    if UPDATE and kernels == "torch":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want)
    wrong = [k for k in want if got[k] != want[k]]
    assert not wrong, f"merges differ from the golden digests: {wrong}"
