"""eval=paper13_val: the paper13 benchmarks on labelled docs that are not the reported ones.
The installed tasks' variants read the rehearsal mirror (mirror checks included), their docs
are disjoint from those of the paper13 tasks they stand in for, and the suite runs on all three
twins through the mirror."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.errors import EvalError
from harness.eval import task_managers
from harness.eval.local_tasks import render_task_dirs
from harness.eval.mirror import check_mirror, suite_data_needs, working_directory
from harness.eval.suite import load_benchmarks, task_paths

ROOT = Path(__file__).resolve().parent.parent
TWINS = ["twin_llava_next_llama3_8b", "twin_llava_next_mistral_7b", "twin_llava15_vicuna_7b"]
VAL = ["mmlu", "gsm8k", "arc_challenge", "hellaswag", "winogrande", "textvqa", "scienceqa_img",
       "gqa"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _suite(name: str, dest: Path):
    cfg = OmegaConf.load(ROOT / "conf" / "eval" / f"{name}.yaml")
    benches = load_benchmarks(cfg)
    return benches, task_managers(benches, render_task_dirs(task_paths(cfg), dest / name))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The rehearsal mirror, both suites' benchmarks and task indexes, and a fresh HF cache
    (a shared one may hold another mirror's copy of a dataset under the same name)."""
    from harness.rehearsal import write_mirror

    root = tmp_path_factory.mktemp("paper13_val")
    write_mirror(root / "mirror")
    import datasets

    # datasets read HF_HOME when first imported; its cache root is looked up at each load
    mp = pytest.MonkeyPatch()
    mp.setattr(datasets.config, "HF_DATASETS_CACHE", root / "hf")
    mp.setenv("LMMS_EVAL_DATASETS_CACHE", str(root / "hf"))
    for key, value in OFFLINE.items():
        mp.setenv(key, value)
    yield root / "mirror", _suite("paper13", root), _suite("paper13_val", root)
    mp.undo()


def _leaves(task_dict: dict) -> dict:
    out = {}
    for key, value in task_dict.items():
        if isinstance(value, dict):
            out.update(_leaves(value))
        else:
            out[key] = value
    return out


def _doc_key(doc: dict) -> str:
    """A doc's content without its pictures (ids included: they are content too)."""
    return json.dumps({k: v for k, v in doc.items() if k != "image"}, sort_keys=True,
                      default=str)


def _docs(benches, managers, mirror: Path) -> dict[str, dict[str, set[str]]]:
    """benchmark → leaf task → the keys of its evaluation docs (the installed tools' own
    loading, working directory at the mirror)."""
    from lm_eval.tasks import get_task_dict as lm_tasks
    from lmms_eval.tasks import get_task_dict as lmms_tasks

    out = {}
    with working_directory(mirror):
        for b in benches:
            load = lm_tasks if b.tool == "lm-eval" else lmms_tasks
            leaves = _leaves(load([b.task], managers[b.tool]))
            out[b.name] = {str(getattr(k, "task_name", k)).removesuffix("_val"):
                           {_doc_key(d) for d in task.eval_docs} for k, task in leaves.items()}
    return out


@pytest.mark.slow
def test_validation_docs_pass_the_mirror_check_and_are_disjoint_from_the_reported_ones(world):
    mirror, (test_benches, test_managers), (val_benches, val_managers) = world
    assert sorted(b.name for b in val_benches) == sorted(VAL)
    check_mirror(mirror, suite_data_needs(val_benches, val_managers), "paper13_val")
    val = _docs(val_benches, val_managers, mirror)
    test = _docs([b for b in test_benches if b.name in VAL], test_managers, mirror)
    for name in VAL:
        assert val[name] and all(val[name].values()), (name, val[name])
        val_docs = set().union(*val[name].values())
        test_docs = set().union(*test[name].values())
        assert not val_docs & test_docs, (name, sorted(val_docs & test_docs)[:2])
    assert len(val["mmlu"]) == 57  # every subject, on its validation split
    # the held-out train rows are not the few-shot pool (gsm8k: 4 of 40 rehearsal rows)
    from lm_eval.tasks import get_task_dict

    with working_directory(mirror):
        (gsm,) = _leaves(get_task_dict(["gsm8k_val"], val_managers["lm-eval"])).values()
        held = {_doc_key(d) for d in gsm.eval_docs}
        pool = {_doc_key(d) for d in gsm.fewshot_docs()}
    assert len(held) == 4 and len(pool) == 36 and not held & pool


@pytest.mark.slow
def test_a_mirror_without_the_validation_split_is_named(world, tmp_path):
    mirror, _, (val_benches, val_managers) = world
    broken = tmp_path / "mirror"
    shutil.copytree(mirror, broken)
    card = broken / "cais" / "mmlu" / "README.md"
    card.write_text(card.read_text().replace("split: validation", "split: held_back"))
    with pytest.raises(EvalError, match="benchmark mmlu .*split 'validation'"):
        check_mirror(broken, suite_data_needs(val_benches, val_managers), "paper13_val")


@pytest.mark.slow
@pytest.mark.parametrize("twin", TWINS)
def test_paper13_val_runs_on_every_twin_through_the_mirror(tmp_path, world, twin):
    mirror = world[0]
    env = {**os.environ, **OFFLINE, "HARNESS_RESULTS": str(tmp_path / "results"),
           "HARNESS_CACHE": str(tmp_path / "cache"), "HARNESS_WANDB_MODE": "disabled",
           "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "harness", "+experiment=rehearsal",
                           "hydra.mode=RUN", f"pair={twin}", "method=mllm", "eval=paper13_val",
                           f"eval.data_root={mirror}", "eval.limit=1", "merge.progress=false"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (path,) = (tmp_path / "results" / "runs").glob("*/result.json")
    record = json.loads(path.read_text())
    assert record["eval_suite"] == "paper13_val" and sorted(record["scores"]) == sorted(VAL)
    assert all(entry["n"] > 0 for entry in record["scores"].values()), record["scores"]
    assert record["scores"]["gqa"]["task"] == "gqa_val"


def test_paper13_names_its_validation_suite_with_the_same_metrics_and_shots():
    paper13 = {b.name: b for b in load_benchmarks(OmegaConf.load(ROOT / "conf/eval/paper13.yaml"))}
    cfg = OmegaConf.load(ROOT / "conf" / "eval" / "paper13.yaml")
    assert cfg.validation == "paper13_val"
    for b in load_benchmarks(OmegaConf.load(ROOT / "conf" / "eval" / "paper13_val.yaml")):
        ref = paper13[b.name]
        assert (b.suite, b.tool, b.metric, b.filter, b.shots, b.percent_scale) == (
            ref.suite, ref.tool, ref.metric, ref.filter, ref.shots, ref.percent_scale), b.name
        assert b.task != ref.task, b.name
