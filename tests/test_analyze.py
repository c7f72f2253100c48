"""`python -m harness.analyze`: neuron statistics of a pair, without merging."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.analyze import analyze_pair, gini, top_share

ROOT = Path(__file__).resolve().parent.parent


def test_concentration_measures():
    assert gini(torch.ones(100)) == pytest.approx(0.0, abs=1e-9)
    one = torch.zeros(100)
    one[3] = 5.0
    assert gini(one) == pytest.approx(0.99)
    assert top_share(one, 0.01) == pytest.approx(1.0)
    assert top_share(torch.ones(100), 0.1) == pytest.approx(0.1)


def test_analyze_pair_counts_every_neuron(tiny_llama, tiny_llava_old):
    stats, scores = analyze_pair(tiny_llama, tiny_llava_old, ratio=0.1)
    ffn = stats[stats.group == "ffn"]
    assert list(ffn.layer) == [0, 1] and set(ffn.neurons) == {128}
    assert set(ffn.located) == {13}  # max(1, round(0.1 · 128))
    assert set(stats.group) == {"ffn", "attn_q", "attn_k", "attn_v", "attn_o"}
    assert len(scores) == int(stats.neurons.sum())
    assert (scores.score > 0).all()


def test_cli_writes_csv_and_plot(tmp_path, tiny_llama, tiny_llava_new):
    env = {**os.environ, "HARNESS_RESULTS": str(tmp_path), "HARNESS_WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "harness.analyze", "pair=local",
                           f"pair.base={tiny_llama}", f"pair.mllm={tiny_llava_new}",
                           "method=neuron_fusion", "method.params.ratio=0.05"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (out,) = (tmp_path / "analysis").glob("local-llava_new-*")  # named after its paths
    stats = pd.read_csv(out / "neurons.csv")
    assert set(stats[stats.group == "ffn"].located) == {6}
    assert (out / "neurons.png").is_file() and (out / "scores.csv").is_file()
