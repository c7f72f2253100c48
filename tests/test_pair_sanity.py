"""Pair sanity before merging: an unrelated base is refused (unless merge.allow_unrelated),
base == tuned is a warning, and every tensor written, copied ones included, is finite."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.errors import MergeError
from harness.merge import merge_checkpoints
from harness.merge.sanity import RELATED_MAX, relative_delta


@pytest.fixture(scope="module")
def other_llama(tmp_path_factory):
    """A base of the same shapes as tiny_llama but other (independent random) weights."""
    from harness.models.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("other") / "llama", seed=7)


def test_relative_delta():
    x = torch.randn(300, 200)
    assert relative_delta(x, x) == 0.0
    assert relative_delta(x, x * 1.1) == pytest.approx(0.1, rel=1e-4)
    assert relative_delta(x, torch.randn(300, 200)) == pytest.approx(2 ** 0.5, rel=0.05)
    assert relative_delta(torch.zeros(3, 3), torch.ones(3, 3)) == float("inf")


@pytest.mark.parametrize("tuned", ["tiny_llava_new", "tiny_llava_old", "tiny_llava_next",
                                   "tiny_tuned_llm"])
def test_related_pairs_pass_well_below_the_limit(request, tmp_path, tiny_llama, tuned):
    report = merge_checkpoints(tiny_llama, request.getfixturevalue(tuned), "task_arithmetic",
                               None, out=tmp_path / "m", progress=False)
    check = report["pair_check"]
    assert check["matrices"] > 0 and check["median_relative_delta"] < RELATED_MAX / 4


def test_the_micro_pair_and_a_twin_pass(micro_cache, tmp_path):
    from omegaconf import OmegaConf

    from harness.micro.build import ensure_pair
    from harness.models.twins import twin_spec
    from harness.models.twins.build import build_pair

    conf = Path(__file__).resolve().parent.parent / "conf" / "pair"
    base, mllm = ensure_pair(OmegaConf.load(conf / "micro.yaml"), micro_cache, progress=False)
    micro = merge_checkpoints(base, mllm, "task_arithmetic", None, out=tmp_path / "micro",
                              progress=False)["pair_check"]
    assert 0.05 < micro["median_relative_delta"] < RELATED_MAX / 1.5, micro
    spec = twin_spec(OmegaConf.load(conf / "twin_llava_next_llama3_8b.yaml"))
    build_pair(tmp_path / "twin", spec)
    twin = merge_checkpoints(tmp_path / "twin" / "base", tmp_path / "twin" / "mllm",
                             "task_arithmetic", None, out=tmp_path / "twin_m",
                             progress=False)["pair_check"]
    assert twin["matrices"] > 0 and twin["median_relative_delta"] < RELATED_MAX / 4, twin


def test_an_unrelated_base_is_refused_unless_allowed(tmp_path, other_llama, tiny_llava_new):
    with pytest.raises(MergeError, match=r"look unrelated .*median 1\.\d\d .*model\.layers\.0\."
                                         r".*merge\.allow_unrelated=true"):
        merge_checkpoints(other_llama, tiny_llava_new, "ties", None, out=tmp_path / "no",
                          progress=False)
    assert not (tmp_path / "no").exists() and not list(tmp_path.glob(".no.tmp-*"))
    report = merge_checkpoints(other_llama, tiny_llava_new, "ties", None, out=tmp_path / "yes",
                               progress=False, allow_unrelated=True)
    assert report["pair_check"]["median_relative_delta"] > 1.0
    # the unmerged MLLM does not read the base: nothing to check
    assert merge_checkpoints(other_llama, tiny_llava_new, "mllm", None, out=tmp_path / "mllm",
                             progress=False)["pair_check"] is None


def test_base_equal_to_tuned_is_a_warning(tmp_path, tiny_llama, caplog):
    with caplog.at_level(logging.WARNING, logger="harness.merge.sanity"):
        report = merge_checkpoints(tiny_llama, tiny_llama, "task_arithmetic", None,
                                   out=tmp_path / "same", progress=False)
    assert report["pair_check"]["median_relative_delta"] == 0
    assert "identical" in caplog.text and "Δ = 0" in caplog.text


def _with_nan(src, dst, name):
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(src / "model.safetensors"))
    assert name in weights, sorted(weights)
    weights[name].view(-1)[3] = float("nan")
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("method", ["task_arithmetic", "mllm"])
def test_nan_in_a_copied_vision_tower_tensor_is_refused(tmp_path, tiny_llama, tiny_llava_new,
                                                        method):
    weights = load_file(str(tiny_llava_new / "model.safetensors"))
    name = next(n for n in sorted(weights) if "vision_tower" in n and n.endswith("weight")
                and weights[n].dim() == 2)
    bad = _with_nan(tiny_llava_new, tmp_path / "bad", name)
    with pytest.raises(MergeError, match=rf"tensor {name} of the tuned model has NaN .*copied"):
        merge_checkpoints(tiny_llama, bad, method, None, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_cli_refuses_an_unrelated_base_in_one_line_unless_allowed(tmp_path, other_llama,
                                                                       tiny_llava_new):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "HARNESS_RESULTS": str(tmp_path / "results")}
    cmd = [sys.executable, "-m", "harness", "method=ties", "stage=merge", "pair=local",
           f"pair.base={other_llama}", f"pair.mllm={tiny_llava_new}", "merge.device=cpu",
           "merge.progress=false"]
    refused = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                             timeout=600, check=False)
    assert refused.returncode == 1, refused.stderr[-2000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "look unrelated" in errors[0] and "Traceback" not in refused.stderr
    allowed = subprocess.run(cmd + ["merge.allow_unrelated=true"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=600, check=False)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
