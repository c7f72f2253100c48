"""`make gpu-check` (harness.gpu_check): on a machine without CUDA it runs what it can and says
which steps it skipped; its merge-and-evaluate step works (run on CPU here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _check(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.gpu_check", *args], cwd=ROOT,
                          env={**os.environ, "HARNESS_WANDB_MODE": "disabled"},
                          capture_output=True, text=True, check=False, timeout=timeout)


def test_one_twin_per_family():
    from harness.gpu_check import twins_per_family

    twins = twins_per_family()
    assert twins == ["twin_llava15_vicuna_7b", "twin_llava_next_mistral_7b"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_the_cuda_steps_are_skipped_with_a_clear_word(tmp_path):
    proc = _check("--results", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    verdicts = [line.split()[0] for line in lines[1:-1]]
    assert verdicts == ["SKIP", "SKIP", "PASS", "SKIP", "SKIP"], lines
    assert lines[1].startswith("SKIP  CUDA: no CUDA device")
    assert all("no CUDA device" in line for line in lines if line.startswith("SKIP"))
    assert "merge.device=cuda" in lines[4] and "INCOMPLETE" in lines[-1]
    assert (tmp_path / "out" / "rehearsal" / "lmms-lab-encoder" / "GQA").is_dir()


def test_an_unknown_pair_is_named():
    proc = _check("--pairs", "twin_nope", timeout=120)
    assert proc.returncode == 2 and "twin_nope" in proc.stderr and "valid:" in proc.stderr


@pytest.mark.slow
def test_the_merge_and_evaluate_step_passes_on_cpu():
    proc = _check("--device", "cpu", "--pairs", "twin_llava_next_llama3_8b")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith(("PASS  twin", "FAIL  twin"))]
    assert line.startswith("PASS") and "13 benchmarks scored through lm-eval + lmms-eval" in line
