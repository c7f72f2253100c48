"""Exact formula tests of every merge method on small tensors, plus properties."""

from __future__ import annotations

import math

import pytest
import torch

from harness.errors import ConfigError
from harness.merge.apply import merge_group, merge_tensor
from harness.merge.methods.della import keep_probability
from harness.merge.methods.neuron_fusion import NeuronFusionParams
from harness.merge.randomness import uniform_like
from harness.merge.registry import get_method, load_methods, make_params
from harness.merge.select import topk_mask
from harness.merge.stream import DEFAULT_CHUNK, MergeContext

ALL = sorted(load_methods())
DESIGN = ["base", "mllm", "model_soup", "task_arithmetic", "ties", "dare", "breadcrumbs", "della",
          "neuron_fusion"]  # the fixed names of the design


def _pair(shape=(6, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    tuned = base + torch.randn(shape, generator=g)
    return base, tuned


def _run(name, base, tuned, seed=0, tensor="t", chunk=DEFAULT_CHUNK, **params):
    spec = get_method(name)
    p = make_params(spec, params)
    return merge_tensor(spec, base.clone(), tuned.clone(), p, MergeContext(seed, tensor, chunk))


def merge_neuron_fusion(bases, tuneds, p, ctx=None):
    """Neuron-Fusion of one layer's group, written over `tuneds`: (merged, located)."""
    located = merge_group(get_method("neuron_fusion"), bases, tuneds, p, ctx or MergeContext())
    return tuneds, located


def test_registry_has_the_design_methods():
    assert set(DESIGN) <= set(ALL)


def test_endpoints_and_soup():
    b, t = _pair()
    assert torch.equal(_run("base", b, t), b)
    assert torch.equal(_run("mllm", b, t), t)
    assert torch.equal(_run("model_soup", b, t, alpha=0.0), b)
    assert torch.equal(_run("model_soup", b, t, alpha=1.0), t)
    torch.testing.assert_close(_run("model_soup", b, t, alpha=0.3), 0.7 * b + 0.3 * t)


def test_task_arithmetic():
    b, t = _pair()
    torch.testing.assert_close(_run("task_arithmetic", b, t, scale=0.5), b + 0.5 * (t - b))
    torch.testing.assert_close(_run("task_arithmetic", b, t, scale=1.7), b + 1.7 * (t - b))
    assert torch.equal(_run("task_arithmetic", b, t, scale=1.0), t)


def test_ties_keeps_exactly_the_largest_deltas():
    b = torch.zeros(10)
    t = torch.tensor([0.1, -5.0, 0.2, 3.0, -0.3, 0.05, 4.0, 0.0, -2.0, 1.0])
    out = _run("ties", b, t, density=0.3, scale=2.0)  # round(3.0) = 3 kept: -5, 4, 3
    expect = torch.zeros(10)
    expect[[1, 3, 6]] = 2.0 * t[[1, 3, 6]]
    assert torch.equal(out, expect)


def test_breadcrumbs_drops_outliers_then_keeps_next():
    b = torch.zeros(10)
    t = torch.tensor([0.1, -5.0, 0.2, 3.0, -0.3, 0.05, 4.0, 0.0, -2.0, 1.0])
    out = _run("breadcrumbs", b, t, density=0.3, gamma=0.1, scale=1.0)  # drop -5; keep 4, 3, -2
    expect = torch.zeros(10)
    expect[[3, 6, 8]] = t[[3, 6, 8]]
    assert torch.equal(out, expect)


def test_dare_formula_and_seed():
    b, t = _pair((50, 40))
    out = _run("dare", b, t, seed=3, tensor="w", density=0.3, scale=0.5)
    u = uniform_like(b, 3, "w")
    expect = b + 0.5 * (t - b) * (u < 0.3).float() / 0.3
    torch.testing.assert_close(out, expect)
    assert torch.equal(out, _run("dare", b, t, seed=3, tensor="w", density=0.3, scale=0.5))
    assert not torch.equal(out, _run("dare", b, t, seed=4, tensor="w", density=0.3, scale=0.5))
    kept = ((out - b).abs() > 0).float().mean().item()
    assert abs(kept - 0.3) < 0.05
    assert torch.equal(_run("dare", b, t, density=1.0, scale=1.0), t)


def test_della_probability_is_linear_in_rank_per_row():
    mag = torch.tensor([[3.0, 1.0, 2.0], [0.5, 0.7, 0.1]])
    p = keep_probability(mag, 0.5, 0.2)
    torch.testing.assert_close(p, torch.tensor([[0.7, 0.3, 0.5], [0.5, 0.7, 0.3]]))
    b, t = _pair((8, 7))
    out = _run("della", b, t, seed=1, tensor="x", density=0.5, epsilon=0.2, scale=1.0)
    prob = keep_probability((t - b).abs(), 0.5, 0.2)
    u = uniform_like(b, 1, "x")
    torch.testing.assert_close(out, b + (t - b) * (u < prob).float() / prob)


def _stable_topk(x, order, k):
    """Reference: the first k of a stable descending sort (ties: lower index first)."""
    mask = torch.zeros(x.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask.reshape(x.shape)


@pytest.mark.parametrize("case", ["uniform", "gauss_matrix", "integers", "bf16_values", "zeros",
                                  "small", "bf16_dtype"])
def test_topk_mask_equals_a_stable_sort(case):
    g = torch.Generator().manual_seed(0)
    x = {"uniform": lambda: torch.rand(150_000, generator=g),
         "gauss_matrix": lambda: torch.randn(400, 350, generator=g).abs(),
         "integers": lambda: (torch.randn(150_000, generator=g) * 4).round().abs(),  # heavy ties
         "bf16_values": lambda: torch.randn(150_000, generator=g).bfloat16().float().abs(),
         "zeros": lambda: torch.zeros(150_000),
         "small": lambda: torch.randn(1000, generator=g),
         "bf16_dtype": lambda: torch.randn(150_000, generator=g).bfloat16()}[case]()
    n = x.numel()
    order = torch.sort(x.reshape(-1), descending=True, stable=True).indices
    for k in (0, 1, 2, 17, n // 100, n // 5, n // 2, n - 3, n - 1, n):
        assert torch.equal(topk_mask(x, k), _stable_topk(x, order, k)), (case, k)


@pytest.mark.parametrize("case", ["uniform", "integers", "bf16_values", "zeros"])
def test_streamed_delta_topk_equals_a_stable_sort(case):
    """DeltaTopK over odd-sized chunks (sampled bracket, ties across chunk borders) marks the
    same entries as a stable descending sort of |Δ|, for one and two k at once."""
    from harness.merge.select import DeltaTopK
    from harness.merge.stream import flat_spans

    g = torch.Generator().manual_seed(2)
    x = {"uniform": lambda: torch.rand(200_003, generator=g),
         "integers": lambda: (torch.randn(200_003, generator=g) * 4).round(),
         "bf16_values": lambda: torch.randn(200_003, generator=g).bfloat16().float(),
         "zeros": lambda: torch.zeros(200_003)}[case]()
    base = torch.randn(x.shape, generator=g).bfloat16().float()
    tuned = base + x
    mag = (tuned - base).abs()
    n = mag.numel()
    order = torch.sort(mag, descending=True, stable=True).indices
    for ks in ([0], [n], [1], [n // 5, n // 100], [n // 2 + 7, 3], [n - 1]):
        top = DeltaTopK(base, tuned, ks, MergeContext(chunk=4099))
        for i, k in enumerate(ks):
            got = torch.cat([top.mask(i, mag[lo:hi]) for lo, hi in flat_spans(n, 4099)])
            assert torch.equal(got, _stable_topk(mag, order, k)), (case, ks, k)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(37, 29), (700, 300)])
def test_chunking_does_not_change_the_merge(name, shape):
    """Small chunks (rows split, 1-row chunks, sampled top-k) give the whole-tensor result."""
    b, t = _pair(shape, seed=4)
    whole = _run(name, b, t, seed=2, tensor="w") if get_method(name).kind != "group" else None
    for chunk in ((1, 50, 300) if shape[0] < 100 else (299, 20_000)):
        if get_method(name).kind == "group":
            continue
        assert torch.equal(_run(name, b, t, seed=2, tensor="w", chunk=chunk), whole), chunk
    if get_method(name).kind == "group":
        bases, tuneds = _layer(hidden=shape[1] // 10, inter=shape[0] // 10)
        p = NeuronFusionParams(ratio=0.2)
        ref, loc = merge_neuron_fusion(bases, {r: v.clone() for r, v in tuneds.items()}, p)
        for chunk in (1, 100):
            got, loc2 = merge_neuron_fusion(bases, {r: v.clone() for r, v in tuneds.items()}, p,
                                            MergeContext(chunk=chunk))
            assert loc2 == loc
            for r in ref:
                assert torch.equal(got[r], ref[r]), (r, chunk)


def test_bf16_merge_equals_float32_merge_rounded():
    """Merging bf16 tensors directly (float32 chunks inside) equals merging their float32
    copies and rounding once — what the engine relies on."""
    b, t = _pair((300, 200), seed=5)
    b, t = b.bfloat16(), t.bfloat16()
    for name in ALL:
        if get_method(name).kind == "group":
            continue
        want = _run(name, b.float(), t.float(), seed=1, tensor="z").bfloat16()
        assert torch.equal(_run(name, b, t, seed=1, tensor="z", chunk=1000), want), name


def _layer(seed=0, hidden=8, inter=12):
    g = torch.Generator().manual_seed(seed)
    shapes = {"gate": (inter, hidden), "up": (inter, hidden), "down": (hidden, inter),
              "q": (hidden, hidden), "k": (4, hidden), "v": (4, hidden), "o": (hidden, hidden)}
    bases = {r: torch.randn(s, generator=g) for r, s in shapes.items()}
    tuneds = {r: bases[r] + 0.1 * torch.randn(s, generator=g) for r, s in shapes.items()}
    return bases, tuneds


def test_neuron_fusion_locates_the_neuron_that_moved_most():
    bases, tuneds = _layer()
    tuneds["up"][5] += 10.0  # FFN neuron 5 moved most
    tuneds["down"][:, 9] += 0.0
    p = NeuronFusionParams(ratio=1 / 12, keep=1.0, suppress=0.25, others_scale=0.5,
                           scope=["ffn"])
    merged, located = merge_neuron_fusion({r: v.clone() for r, v in bases.items()},
                                          {r: v.clone() for r, v in tuneds.items()}, p)
    assert located == {"ffn": [5]}
    for role in ("gate", "up"):
        w = torch.full((12, 1), 0.25)
        w[5] = 1.0
        torch.testing.assert_close(merged[role], bases[role] + w * (tuneds[role] - bases[role]))
    w = torch.full((1, 12), 0.25)
    w[0, 5] = 1.0
    torch.testing.assert_close(merged["down"], bases["down"] + w * (tuneds["down"] - bases["down"]))
    for role in ("q", "k", "v", "o"):  # outside scope
        torch.testing.assert_close(merged[role], bases[role] + 0.5 * (tuneds[role] - bases[role]))


def test_neuron_fusion_scores_ffn_neuron_over_all_its_parameters():
    bases, tuneds = _layer(hidden=4, inter=3)
    for r in ("gate", "up", "down"):
        tuneds[r] = bases[r].clone()
    tuneds["gate"][0] += 1.0   # neuron 0: ||Δ|| = sqrt(4) = 2
    tuneds["up"][1] += 0.6     # neuron 1: sqrt(4·0.36 + 4·0.36) ≈ 1.70 ...
    tuneds["down"][:, 1] += 0.6
    tuneds["down"][:, 2] += 0.9  # neuron 2: sqrt(4·0.81) = 1.8
    p = NeuronFusionParams(ratio=0.34, scope=["ffn"])  # round(1.02) = 1
    _, located = merge_neuron_fusion({r: v.clone() for r, v in bases.items()},
                                     {r: v.clone() for r, v in tuneds.items()}, p)
    assert located["ffn"] == [0]
    p2 = NeuronFusionParams(ratio=0.67, scope=["ffn"])  # round(2.01) = 2
    _, located = merge_neuron_fusion({r: v.clone() for r, v in bases.items()},
                                     {r: v.clone() for r, v in tuneds.items()}, p2)
    assert located["ffn"] == [0, 2]


def test_neuron_fusion_attention_groups_and_relative_score():
    bases, tuneds = _layer()
    tuneds["o"][:, 3] += 5.0
    tuneds["q"][2] += 5.0
    p = NeuronFusionParams(ratio=0.01, scope=["attn"], score="relative")
    _, located = merge_neuron_fusion({r: v.clone() for r, v in bases.items()},
                                     {r: v.clone() for r, v in tuneds.items()}, p)
    assert located["attn_o"] == [3] and located["attn_q"] == [2]
    assert set(located) == {"attn_q", "attn_k", "attn_v", "attn_o"}


def test_neuron_fusion_identities():
    bases, tuneds = _layer()
    p = NeuronFusionParams(ratio=1.0, keep=1.0, others_scale=1.0)
    merged, _ = merge_neuron_fusion({r: v.clone() for r, v in bases.items()},
                                    {r: v.clone() for r, v in tuneds.items()}, p)
    for r in bases:
        assert torch.equal(merged[r], tuneds[r])
    s = 0.37
    p = NeuronFusionParams(ratio=0.2, keep=s, suppress=s, others_scale=s)
    merged, _ = merge_neuron_fusion({r: v.clone() for r, v in bases.items()},
                                    {r: v.clone() for r, v in tuneds.items()}, p)
    for r in bases:
        assert torch.equal(merged[r], _run("task_arithmetic", bases[r], tuneds[r], scale=s))


@pytest.mark.parametrize("name", ALL)
def test_properties_shape_dtype_finite(name):
    b, t = _pair((16, 9))
    out = _run(name, b, t)
    assert out.shape == b.shape and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name,params,word", [
    ("ties", {"density": 0.0}, "density"), ("ties", {"density": 1.5}, "density"),
    ("task_arithmetic", {"scale": -1}, "scale"), ("model_soup", {"alpha": 2}, "alpha"),
    ("dare", {"density": 0}, "density"), ("della", {"density": 0.9, "epsilon": 0.2}, "epsilon"),
    ("breadcrumbs", {"gamma": 1.0}, "gamma"), ("neuron_fusion", {"ratio": 0}, "ratio"),
    ("neuron_fusion", {"scope": ["mlp"]}, "scope"), ("neuron_fusion", {"score": "l1"}, "score"),
    ("neuron_fusion", {"suppress": -0.1}, "suppress"),
])
def test_out_of_range_parameters_are_named(name, params, word):
    with pytest.raises(ConfigError, match=word):
        make_params(get_method(name), params)


def test_unknown_method_and_parameter_list_valid_ones():
    with pytest.raises(ConfigError, match="neuron_fusion"):
        get_method("neuronfusion")
    with pytest.raises(ConfigError, match="density, scale"):
        make_params(get_method("ties"), {"k": 3})
    assert not math.isnan(make_params(get_method("ties"), {}).density)
