"""The rehearsal mirror: which repository each benchmark reads and the builder that makes it.

Benchmark names are those of conf/eval/paper13.yaml, plus the generative QA tasks `triviaqa`
and `nq_open`. Repository ids are the `dataset_path`s of the pinned task YAMLs (lm-eval 0.4.13,
lmms-eval 0.7.3), so a run whose working directory is the mirror root reads these folders in
place of the Hub (datasets 5 checks for a local folder of that name first).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import harness.rehearsal.language as language
import harness.rehearsal.visual as visual
from harness.eval.mirror import Configs, write_repo

SEED = 0
ABOUT = ("# {repo} (rehearsal copy)\n\nSynthetic rows with the upstream schema, written by "
         "`python -m harness.rehearsal`.")

# repository id -> builder(seed) -> {config: {split: Dataset}}
REPOS: dict[str, Callable[[int], Configs]] = {
    "cais/mmlu": language.mmlu,
    "openai/gsm8k": language.gsm8k,
    "allenai/ai2_arc": language.ai2_arc,
    "Rowan/hellaswag": language.hellaswag,
    "allenai/winogrande": language.winogrande,
    "truthfulqa/truthful_qa": language.truthful_qa,
    "mandarjoshi/trivia_qa": language.trivia_qa,
    "google-research-datasets/nq_open": language.nq_open,
    "lmms-lab-encoder/MME": visual.mme,
    "lmms-lab-encoder/MMBench": visual.mmbench,
    "lmms-lab-encoder/SEED-Bench": visual.seed_bench,
    "lmms-lab-encoder/POPE": visual.pope,
    "lmms-lab-encoder/textvqa": visual.textvqa,
    "lmms-lab-encoder/ScienceQA": visual.scienceqa,
    "lmms-lab-encoder/GQA": visual.gqa,
}

# benchmark -> repositories its task code loads (GQA loads two configs of one repository)
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "mmlu": ("cais/mmlu",),
    "gsm8k": ("openai/gsm8k",),
    "arc_challenge": ("allenai/ai2_arc",),
    "hellaswag": ("Rowan/hellaswag",),
    "winogrande": ("allenai/winogrande",),
    "truthfulqa_mc2": ("truthfulqa/truthful_qa",),
    "triviaqa": ("mandarjoshi/trivia_qa",),
    "nq_open": ("google-research-datasets/nq_open",),
    "mme": ("lmms-lab-encoder/MME",),
    "mmbench": ("lmms-lab-encoder/MMBench",),
    "seedbench": ("lmms-lab-encoder/SEED-Bench",),
    "pope": ("lmms-lab-encoder/POPE",),
    "textvqa": ("lmms-lab-encoder/textvqa",),
    "scienceqa_img": ("lmms-lab-encoder/ScienceQA",),
    "gqa": ("lmms-lab-encoder/GQA",),
}


def select(only: list[str] | None) -> list[str]:
    """The benchmarks to write: all of BENCHMARKS, or `only` after checking every name."""
    if only is None:
        return list(BENCHMARKS)
    unknown = [b for b in only if b not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown} in --only; valid choices: "
                         f"{', '.join(BENCHMARKS)}")
    return list(dict.fromkeys(only))


def write_mirror(out: Path, only: list[str] | None = None,
                 seed: int = SEED) -> dict[str, list[str]]:
    """Write the rehearsal copies of the selected benchmarks' datasets under `out`.

    Args:
        out: the mirror root; repositories land in `out/<org>/<name>/`.
        only: benchmark names (keys of BENCHMARKS); None writes all of them.
        seed: the content seed; the same seed gives byte-identical files.

    Returns:
        The manifest {benchmark: [repository ids written]}.
    """
    out = Path(out)
    manifest: dict[str, list[str]] = {}
    written: set[str] = set()
    for bench in select(only):
        for repo in BENCHMARKS[bench]:
            if repo not in written:
                write_repo(out, repo, REPOS[repo](seed), ABOUT.format(repo=repo))
                written.add(repo)
        manifest[bench] = list(BENCHMARKS[bench])
    return manifest
