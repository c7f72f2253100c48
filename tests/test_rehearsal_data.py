"""The rehearsal mirror: deterministic files, upstream schemas, and the installed lm-eval /
lmms-eval task code running on it offline (tests/rehearsal_check.py, in a subprocess whose
working directory is the mirror root)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from datasets import ClassLabel, Features, Image, List, Value

from harness.rehearsal import BENCHMARKS, REPOS, write_mirror
from harness.rehearsal.__main__ import main
from harness.rehearsal.data import select
from harness.rehearsal.language import MMLU_SUBJECTS
from harness.rehearsal.visual import MME_COGNITION, MME_PERCEPTION

CHECK = Path(__file__).with_name("rehearsal_check.py")
LANGUAGE_SHOTS = {"mmlu": 5, "gsm8k": 5, "arc_challenge": 25, "hellaswag": 10, "winogrande": 5,
                  "truthfulqa_mc2": 0, "triviaqa": 5, "nq_open": 5}
VISUAL_TASKS = ["mme", "mmbench_en_dev_static", "seedbench", "pope", "textvqa_val",
                "scienceqa_img", "gqa"]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    write_mirror(root)
    return root


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _card(repo: Path) -> dict[str, dict[str, str]]:
    front = repo.joinpath("README.md").read_text().split("---\n")[1]
    return {c["config_name"]: {f["split"]: f["path"] for f in c["data_files"]}
            for c in yaml.safe_load(front)["configs"]}


def _features(repo: Path, config: str, split: str) -> Features:
    return Features.from_arrow_schema(pq.read_schema(repo / _card(repo)[config][split]))


def _check(kind: str, names: list[str], cwd: Path, scratch: Path) -> dict:
    proc = subprocess.run([sys.executable, str(CHECK), kind, ",".join(names), str(scratch)],
                          cwd=cwd, capture_output=True, text=True, timeout=900, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_two_writes_are_byte_identical(mirror, tmp_path):
    write_mirror(tmp_path)
    assert _hashes(tmp_path) == _hashes(mirror)


def test_every_benchmark_has_its_repositories(mirror):
    assert set(BENCHMARKS) >= {"mmlu", "gsm8k", "arc_challenge", "hellaswag", "winogrande",
                               "truthfulqa_mc2", "mme", "mmbench", "seedbench", "pope",
                               "textvqa", "scienceqa_img", "gqa", "triviaqa", "nq_open"}
    for repos in BENCHMARKS.values():
        for repo in repos:
            assert repo in REPOS and _card(mirror / repo), repo


def test_only_and_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--only", "gsm8k,gqa"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in out[:-1]] == ["gsm8k", "gqa"]
    assert sorted(p.name for p in tmp_path.glob("*/*")) == ["GQA", "gsm8k"]
    with pytest.raises(ValueError, match="valid choices: mmlu, gsm8k"):
        select(["gsm8k", "mmlu_pro"])


def test_mmlu_has_every_subject_of_the_installed_tasks(mirror):
    spec = importlib.util.find_spec("lm_eval")
    yamls = Path(spec.submodule_search_locations[0], "tasks", "mmlu", "default")
    installed = {yaml.safe_load(p.read_text())["dataset_name"]
                 for p in yamls.glob("mmlu_*.yaml")}
    assert len(installed) == 57 and installed == set(MMLU_SUBJECTS)
    card = _card(mirror / "cais/mmlu")
    assert set(card) == installed
    for subject, files in card.items():
        assert set(files) == {"test", "validation", "dev"}
        assert pq.read_metadata(mirror / "cais/mmlu" / files["dev"]).num_rows >= 5, subject


def _load_mme_utils():
    spec = importlib.util.find_spec("lmms_eval")
    path = Path(spec.submodule_search_locations[0], "tasks", "mme", "utils.py")
    module_spec = importlib.util.spec_from_file_location("_mme_utils", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # plain module: os, collections, loguru
    return module


def test_mme_pairs_are_complete_in_all_14_categories(mirror):
    upstream = _load_mme_utils().eval_type_dict
    assert (list(MME_PERCEPTION), list(MME_COGNITION)) == (upstream["Perception"],
                                                           upstream["Cognition"])
    repo = mirror / "lmms-lab-encoder/MME"
    rows = pq.read_table(repo / _card(repo)["default"]["test"],
                         columns=["question_id", "answer", "category"]).to_pylist()
    pairs: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        pairs.setdefault((r["category"], r["question_id"]), []).append(r["answer"])
    assert {c for c, _ in pairs} == set(MME_PERCEPTION + MME_COGNITION)
    assert all(sorted(a) == ["No", "Yes"] for a in pairs.values()), pairs
    # adjacent rows form a pair, so an even `limit` never splits one
    assert all(rows[i]["question_id"] == rows[i + 1]["question_id"] for i in range(0, len(rows), 2))


def test_feature_types_follow_upstream(mirror):
    f = _features(mirror / "cais/mmlu", "anatomy", "test")
    assert f["answer"] == ClassLabel(names=["A", "B", "C", "D"])
    assert f["choices"] == List(Value("string"))
    f = _features(mirror / "allenai/ai2_arc", "ARC-Challenge", "train")
    assert f["choices"] == {"text": List(Value("string")), "label": List(Value("string"))}
    assert _features(mirror / "Rowan/hellaswag", "default", "train")["label"] == Value("string")
    f = _features(mirror / "truthfulqa/truthful_qa", "multiple_choice", "validation")
    assert f["mc2_targets"] == {"choices": List(Value("string")), "labels": List(Value("int32"))}
    f = _features(mirror / "lmms-lab-encoder/SEED-Bench", "default", "test")
    assert f["image"] == List(Image()) and f["question_type_id"] == Value("int16")
    f = _features(mirror / "lmms-lab-encoder/ScienceQA", "ScienceQA-IMG", "test")
    assert f["image"] == Image() and f["answer"] == Value("int8")
    f = _features(mirror / "lmms-lab-encoder/textvqa", "default", "validation")
    assert f["question_id"] == Value("int32") and f["answers"] == List(Value("string"))
    assert _features(mirror / "lmms-lab-encoder/MMBench", "en", "dev")["index"] == Value("int64")
    assert _features(mirror / "lmms-lab-encoder/GQA", "testdev_balanced_images",
                     "testdev")["image"] == Image()


def test_row_rules_the_task_code_relies_on(mirror):
    def rows(repo, config, split, columns=None):
        return pq.read_table(mirror / repo / _card(mirror / repo)[config][split],
                             columns=columns).to_pylist()

    assert all(len(r["answers"]) == 10 for r in rows("lmms-lab-encoder/textvqa", "default",
                                                      "validation", ["answers"]))
    assert {r["answer"] for r in rows("lmms-lab-encoder/POPE", "default", "test",
                                      ["answer"])} == {"yes", "no"}
    assert all(r["image"] is not None for r in rows("lmms-lab-encoder/ScienceQA",
                                                    "ScienceQA-IMG", "test", ["image"]))
    assert all(r["data_type"] == "image" and len(r["image"]) == 1
               for r in rows("lmms-lab-encoder/SEED-Bench", "default", "test",
                             ["data_type", "image"]))
    image_ids = {r["id"] for r in rows("lmms-lab-encoder/GQA", "testdev_balanced_images",
                                       "testdev", ["id"])}
    assert {r["imageId"] for r in rows("lmms-lab-encoder/GQA", "testdev_balanced_instructions",
                                       "testdev", ["imageId"])} <= image_ids
    assert all(r["answer"] in "ABCD" and all(r[c] not in ("", "nan") for c in "ABCD")
               for r in rows("lmms-lab-encoder/MMBench", "en", "dev"))
    assert all(r["answer"].rsplit("#### ", 1)[1].isdigit()
               for r in rows("openai/gsm8k", "main", "train"))
    assert all(r["answerKey"] in r["choices"]["label"]
               for r in rows("allenai/ai2_arc", "ARC-Challenge", "test"))
    assert all(r["sentence"].count("_") == 1
               for r in rows("allenai/winogrande", "winogrande_xl", "validation"))


def test_lm_eval_fewshot_tasks_run_offline(mirror, tmp_path):
    """The tasks whose few-shot pools are tightest, at the paper's shot counts."""
    names = ["arc_challenge", "hellaswag", "winogrande"]
    result = _check("lm-eval", [f"{t}={LANGUAGE_SHOTS[t]}" for t in names], mirror, tmp_path)
    assert "acc_norm,none" in result["arc_challenge"] and "acc_norm,none" in result["hellaswag"]
    assert "acc,none" in result["winogrande"]


@pytest.mark.slow
def test_lm_eval_all_language_tasks_offline(mirror, tmp_path):
    result = _check("lm-eval", [f"{t}={s}" for t, s in LANGUAGE_SHOTS.items()], mirror,
                    tmp_path)
    assert "acc,none" in result["mmlu"]
    assert "exact_match,strict-match" in result["gsm8k"]
    assert "acc,none" in result["truthfulqa_mc2"]
    assert "exact_match,remove_whitespace" in result["triviaqa"]
    assert "exact_match,remove_whitespace" in result["nq_open"]


def test_lmms_eval_tasks_run_offline_with_images_and_oracle_scores(mirror, tmp_path):
    """The 7 visual tasks as chat tasks for llava_hf: every first doc yields one picture through
    doc_to_visual and doc_to_messages (GQA's through its hidden second load_dataset, SEED-Bench's
    from a list), and a model answering every doc right gets full marks, so answers, MME pairs
    and metric keys agree with the task code."""
    checked = _check("lmms-eval", VISUAL_TASKS, mirror, tmp_path)
    for task, doc in checked["docs"].items():
        assert doc["visuals"] == ["Image"] and doc["message_images"] == ["Image"], (task, doc)
    result = checked["metrics"]
    assert result["mme"] == {"mme_perception_score,none": 2000.0,
                             "mme_cognition_score,none": 800.0}
    assert result["mmbench_en_dev_static"]["gpt_eval_score,none"] == 100.0
    assert result["seedbench"]["seed_image,none"] == 1.0
    assert result["pope"]["pope_f1_score,none"] == 1.0
    for task in ("textvqa_val", "scienceqa_img", "gqa"):
        assert result[task]["exact_match,none"] == 1.0, task
