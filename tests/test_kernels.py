"""The fused CPU kernels (harness/merge/kernels/) give exactly the torch path's bits, and the
counter-based draws (harness/merge/randomness.py) are the same in numba and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.merge import kernels
from harness.merge.accel import preload, try_merge
from harness.merge.apply import merge_tensor
from harness.merge.kernels import common
from harness.merge.kernels import della_kernel as della_kernels
from harness.merge.kernels import topk as topk_kernels
from harness.merge.randomness import (
    UniformStream,
    tensor_seed,
    uniform_like,
    uniform_range,
)
from harness.merge.registry import get_method, make_params
from harness.merge.select import _SAMPLE
from harness.merge.stream import MergeContext

CASES = [
    ("ties", {"density": 0.2}),
    ("ties", {"density": 0.35, "scale": 0.7}),
    ("ties", {"density": 1.0}),
    ("breadcrumbs", {"density": 0.2, "gamma": 0.01}),
    ("breadcrumbs", {"density": 0.3, "gamma": 0.0, "scale": 1.3}),
    ("dare", {"density": 0.5}),
    ("dare", {"density": 0.3, "scale": 0.8, "seed": 4}),
    ("della", {"density": 0.4}),
    ("della", {"density": 0.6, "epsilon": 0.3, "scale": 0.9}),
    ("della", {"density": 0.5, "epsilon": 0.0}),
]
SHAPES = [(7,), (33, 65), (5 * _SAMPLE // 256, 256)]  # the last one samples a bracket


def _pair(shape, dtype, clumped: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    noise = torch.randn(shape, generator=g) * 1e-3
    if clumped:  # few distinct |Δ|: many ties at every threshold
        noise = noise.mul(2000).round().div(2000)
    return base, (base.float() + noise).to(dtype)


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1).view(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("method,params", CASES)
def test_fused_equals_torch_path(method, params, dtype):
    spec = get_method(method)
    p = make_params(spec, params)
    for shape in SHAPES:
        for clumped in (False, True):
            base, tuned = _pair(shape, dtype, clumped)
            ctx = MergeContext(seed=3, name="w")
            ref = merge_tensor(spec, base.clone(), tuned.clone(), p, ctx, "torch")
            got = tuned.clone()
            assert try_merge(spec, base, got, p, ctx, "fused")
            assert torch.equal(_bits(got), _bits(ref)), (method, params, dtype, shape, clumped)


def test_topk_tie_quota_spans_blocks():
    """All |Δ| equal: the top k are the first k entries by index, across many blocks."""
    n = 3 * common.BLOCK + 17
    base = torch.zeros(n, dtype=torch.bfloat16)
    tuned = torch.full((n,), 0.5, dtype=torch.bfloat16)
    k = common.BLOCK + 5
    got = kernels.topk_band_merge(base, tuned.clone(), k, 0, 1.0)
    assert torch.equal(got[:k], tuned[:k]) and not got[k:].any()
    got = kernels.topk_band_merge(base, tuned.clone(), k, 7, 1.0)  # breadcrumbs: drop the top 7
    assert not got[:7].any() and torch.equal(got[7:k], tuned[7:k]) and not got[k:].any()


def test_float16_round_trip_matches_torch():
    """Every float16 bit pattern decodes as torch does; float32 values (normal, subnormal,
    halfway, overflow, inf, nan) round to float16 as torch does."""
    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16)
    decoded = torch.empty(every.shape, dtype=torch.float32)
    _load_all(kernels.storage(every), kernels.storage(decoded))
    assert torch.equal(decoded.isnan(), every.float().isnan())
    ok = ~every.isnan()
    assert torch.equal(_bits(decoded[ok]), _bits(every[ok].float()))
    g = torch.Generator().manual_seed(1)
    values = torch.randint(0, 2 ** 31, (1 << 16,), generator=g,
                           dtype=torch.int64).to(torch.int32).view(torch.float32)
    values = values[torch.isfinite(values)]
    values = torch.cat([values * 1e-30, -values * 1e-35, values, torch.tensor(
        [65504.0, 65519.99, 65520.0, 1e6, float("inf"), -float("inf"), float("nan"), 2 ** -25,
         3 * 2 ** -26, 2 ** -24 * 1.5, -2 ** -24 * 2.5, 6.1e-5, 0.0, -0.0])])
    got = torch.empty_like(values, dtype=torch.float16)
    _store_all(kernels.storage(values), kernels.storage(got))
    want = values.to(torch.float16)
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(_bits(got[~want.isnan()]), _bits(want[~want.isnan()]))


def _store_all(src, dst):
    from numba import njit

    @njit
    def run(src, dst):
        for i in range(src.size):
            dst[i] = common._store(src[i], dst)
    run(src, dst)


def _load_all(src, dst):
    from numba import njit

    @njit
    def run(src, dst):
        for i in range(src.size):
            dst[i] = common._load(src[i])
    run(src, dst)


def test_bfloat16_rounding_matches_torch():
    g = torch.Generator().manual_seed(2)
    values = torch.randint(-2 ** 31, 2 ** 31 - 1, (1 << 16,), generator=g,
                           dtype=torch.int64).to(torch.int32).view(torch.float32)
    values = values[~torch.isnan(values)]
    got = torch.empty_like(values, dtype=torch.bfloat16)
    _store_all(kernels.storage(values), kernels.storage(got))
    assert torch.equal(_bits(got), _bits(values.to(torch.bfloat16)))


def test_draws_same_in_numba_and_torch():
    """Single draws, runs of draws from even and odd starts (as della's rows take them) and the
    two draws of each output are the same in the kernels and in torch."""
    from numba import njit

    @njit
    def draws(seed, idx, out):
        for j in range(idx.size):
            out[j] = common._draw(seed, idx[j])

    @njit
    def run(seed, at, n):
        u = np.empty(n, np.float32)
        common._fill_draws(seed, at, u)
        return u

    idx = np.array([0, 1, 2, 3, 1000, 1001, 2 ** 31 + 5, 2 ** 40 + 3], np.int64)
    for name in ("a", "model.layers.0.mlp.up_proj.weight"):
        seed = tensor_seed(12345, name)
        out = np.empty(idx.size, np.float32)
        draws(np.uint64(seed), idx, out)
        want = torch.stack([uniform_range(seed, int(i), 1, "cpu")[0] for i in idx])
        assert torch.equal(torch.from_numpy(out), want)
        for at, n in [(0, 0), (0, 1), (1, 1), (0, 7), (1, 7), (6, 10), (2 ** 40 + 3, 9)]:
            got = torch.from_numpy(run(np.uint64(seed), at, n))
            assert torch.equal(got, uniform_range(seed, at, n, "cpu")), (at, n)
    # draw 2j is the top 24 bits of output j, draw 2j + 1 the next 24 (randomness.py)
    seed = tensor_seed(7, "t")
    x = int(common._mix(np.uint64(seed), np.int64(5)))
    pair = uniform_range(seed, 10, 2, "cpu")
    assert pair.tolist() == [(x >> 40) * 2.0 ** -24, ((x >> 16) & 0xFFFFFF) * 2.0 ** -24]


def test_draw_stream_chunks_and_distribution():
    x = torch.empty(3, 1000)
    whole = uniform_like(x, 7, "t")
    s = UniformStream(tensor_seed(7, "t"), torch.device("cpu"))
    assert torch.equal(torch.cat([s.next(1), s.next(999), s.next(2000)]), whole.reshape(-1))
    assert not torch.equal(whole, uniform_like(x, 8, "t"))
    assert not torch.equal(whole, uniform_like(x, 7, "u"))
    u = uniform_range(tensor_seed(0, "big"), 0, 1 << 20, "cpu")
    assert u.min() >= 0 and u.max() < 1
    assert abs(float(u.mean()) - 0.5) < 2e-3
    counts = torch.histc(u, bins=16, min=0, max=1)
    assert float((counts - counts.mean()).abs().max()) < 5 * counts.mean() ** 0.5


def test_kernels_setting_is_respected():
    base, tuned = _pair((8, 8), torch.bfloat16, False)
    dare = get_method("dare")
    p = make_params(dare, {})
    ctx = MergeContext()
    assert not try_merge(dare, base, tuned.clone(), p, ctx, "torch")
    assert not try_merge(dare, base.float(), tuned.clone(), p, ctx, "fused")  # mixed dtypes
    assert not try_merge(dare, base.t(), tuned.t().clone(), p, ctx, "fused")  # not contiguous
    ta = get_method("task_arithmetic")
    assert not try_merge(ta, base, tuned.clone(), make_params(ta, {}), ctx, "fused")  # none
    half = base.to(torch.float16)
    assert not try_merge(dare, half, half.clone(), p, ctx, "auto")  # auto: not loaded yet
    assert preload(dare, [torch.float16], entries=10_000) is None  # too small to pay off
    thread = preload(dare, [torch.float16, torch.int64])
    thread.join()
    assert try_merge(dare, half, half.clone(), p, ctx, "auto")
    assert preload(dare, [torch.float16]) is None  # already loaded


def _topk_reference(base, tuned, k_keep, k_drop, scale):
    spec = get_method("breadcrumbs")
    n = base.numel()
    p = make_params(spec, {"density": (k_keep - k_drop) / n, "gamma": k_drop / n,
                           "scale": scale})
    return merge_tensor(spec, base.clone(), tuned.clone(), p, MergeContext(), "torch")


@pytest.mark.parametrize("dtype,grid,path", [(torch.bfloat16, 0.0, None),
                                             (torch.bfloat16, 1e-4, "counted"),
                                             (torch.float32, 0.0, "deferred"),
                                             (torch.float32, -1, "deferred")])
def test_subband_paths_are_exact(dtype, grid, path):
    """Large tensors merge by the sub-band path with exactly the torch path's bits: by counted
    tie quotas when the k-th |Δ| is a repeated value (bfloat16: differences repeat; grid > 0
    rounds Δ to a grid: heavy ties), by deferred entries when values are distinct (float32),
    also when a few share the k-th value (grid = -1), and when breadcrumbs' two sub-bands
    overlap."""
    base, tuned = _pair((9 * _SAMPLE // 256, 256), dtype, False, seed=5)
    if grid < 0:  # six more entries with exactly the k-th largest |Δ| of the top fifth
        kth = (tuned - base).abs().reshape(-1).topk(base.numel() // 5).values[-1]
        base.view(-1)[7:4000:666] = 0.0
        tuned.view(-1)[7:4000:666] = kth
    elif grid:
        tuned = (base.float() + ((tuned.float() - base.float()) / grid).round() * grid).to(dtype)
    n = base.numel()
    for k_keep, k_drop, scale in [(n // 5, 0, 1.0), (n // 5, n // 100, 0.7),
                                  (n // 5, n // 5 - 3, 1.0), (n // 2 + 1, n // 2, 1.0),
                                  (n, n // 10, 1.0)]:
        want = _topk_reference(base, tuned, k_keep, k_drop, scale)
        got = tuned.clone()
        took = kernels.subband_merge(kernels.storage(base), kernels.storage(got), k_keep,
                                     k_drop, scale)
        assert took == path or (path is None and took), (dtype, grid, k_keep, k_drop, took)
        assert torch.equal(_bits(got), _bits(want)), (dtype, grid, k_keep, k_drop)
    d = (tuned.float() - base.float()).abs().reshape(-1)
    tied = int((d == d.topk(n // 5).values[-1]).sum())
    assert (tied > 1) == (dtype == torch.bfloat16 or grid != 0)


def test_subband_bracket_miss_falls_back(monkeypatch):
    """A sample whose bracket misses the k-th |Δ| makes the sub-band path decline before it
    writes anything; the band path then gives the exact result."""
    base, tuned = _pair((9 * _SAMPLE // 256, 256), torch.bfloat16, False, seed=6)
    n = base.numel()
    want = _topk_reference(base, tuned, n // 5, n // 50, 1.0)
    for fill in (0, np.iinfo(np.int32).max - 1):  # a bracket wholly below / above the k-th key
        monkeypatch.setattr(topk_kernels, "sample_keys",
                            lambda b, t, seed, m, fill=fill: np.full(m, fill, np.int32))
        got = tuned.clone()
        assert kernels.subband_merge(kernels.storage(base), kernels.storage(got), n // 5,
                                     n // 50, 1.0) == ""
        assert torch.equal(_bits(got), _bits(tuned))  # nothing written
        got = kernels.topk_band_merge(base, tuned.clone(), n // 5, n // 50, 1.0)
        assert torch.equal(_bits(got), _bits(want))


def _row_keys(kind: str, m: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "bf16":  # a fine-tune's |Δ|: few significant bits, some long keys, zeros
        w = torch.from_numpy(rng.standard_normal(m).astype(np.float32)) * 0.02
        t = (w + torch.from_numpy(rng.standard_normal(m).astype(np.float32)) * 2e-3).bfloat16()
        x = (t.float() - w.bfloat16().float()).numpy()
    elif kind == "tiny":  # magnitudes over ~20 octaves: many long keys
        w = torch.from_numpy(rng.standard_normal(m).astype(np.float32) *
                             np.exp(rng.standard_normal(m) * 5).astype(np.float32))
        x = ((w * 1.01 + 1e-9).bfloat16().float() - w.bfloat16().float()).numpy()
    elif kind == "full":  # float32 noise: every key distinct, most of them long
        x = rng.standard_normal(m).astype(np.float32)
    elif kind == "few":  # five values 60 octaves apart: bins of long but equal keys
        x = rng.choice(np.array([0, 1e-30, 1e-3, 5.0, 1e30], np.float32), m)
    elif kind == "outlier":  # distinct keys in [1, 2) and one 1e30: all in one bin, all long
        x = (1 + rng.random(m)).astype(np.float32)
        x[m // 2] = 1e30
    elif kind == "zeros":
        x = np.zeros(m, np.float32)
    else:  # one repeated non-zero value, some zeros
        x = np.where(rng.random(m) < 0.2, 0.0, 3.0).astype(np.float32)
    return np.abs(x).astype(np.float32).view(np.uint32)


@pytest.mark.parametrize("kind", ["bf16", "tiny", "full", "few", "outlier", "zeros",
                                  "const"])
@pytest.mark.parametrize("m", [1, 2, 7, 300, 2048, 5632, 70000])
def test_row_ranks_are_twice_the_average_rank(kind, m):
    """della's per-row ranks (binned count; insertion or radix sort of the long keys in shared
    half-bins) are lo + hi − 1: the numbers of keys <, ≤ each key."""
    keys = _row_keys(kind, m, np.random.default_rng(m))
    kmax, kmin, diff = np.uint32(0), np.uint32(0xFFFFFFFF), np.uint32(0xFFFFFFFF)
    nz = keys[keys != 0]
    if nz.size:
        kmax, kmin = keys.max(), nz.min()
        diff = np.bitwise_and.reduce(nz) ^ np.bitwise_or.reduce(nz)
    ordered = np.sort(keys)
    want = np.searchsorted(ordered, keys) + np.searchsorted(ordered, keys, side="right") - 1
    r2 = np.empty(m, np.int32)
    della_kernels._row_ranks(keys, kmax, kmin, diff, r2, della_kernels.rank_work(m))
    assert np.array_equal(r2, want)


def test_lane_slots_are_exact_for_every_bin_count():
    """della's lane layout: for every even half count nb ≤ RANK_BINS, L = _lane_layout(nb) is
    even with 8L ≥ nb slots within RANK_BINS, and the float32 quotient in _slot gives slot
    8·(j mod L) + j div L for every half j."""
    from numba import njit

    @njit
    def wrong_slots(nb_max):
        bad = 0
        for nb in range(2, nb_max + 1, 2):
            lanes, inv, spread = della_kernels._lane_layout(nb)
            bad += lanes % 2 != 0 or 8 * lanes < nb or 8 * lanes > nb_max
            for j in range(nb):
                want = 8 * (j % lanes) + j // lanes
                bad += della_kernels._slot(np.uint32(j), inv, spread) != want
        return bad

    assert wrong_slots(della_kernels.RANK_BINS) == 0


def test_della_ties_share_their_average_rank():
    """Equal |Δ| in a row get one keep probability; the row's mean probability is density."""
    from harness.merge.methods.della import keep_probability

    mag = torch.tensor([[0.5, 0.1, 0.5, 0.5, 0.2], [1.0, 1.0, 1.0, 1.0, 1.0]])
    p = keep_probability(mag, 0.5, 0.2)  # ranks (3, 0, 3, 3, 1) and (2, 2, 2, 2, 2)
    torch.testing.assert_close(p, torch.tensor([[0.6, 0.3, 0.6, 0.6, 0.4], [0.5] * 5]))
    torch.testing.assert_close(p.mean(-1), torch.tensor([0.5, 0.5]))
