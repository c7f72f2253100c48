"""The visual half survives what a real node and a bad merge throw at it: GQA's multi-process
map with `datasets` installed outside site-packages, a task that fails among others, and answers
full of control characters."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gqa_mirror(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gqa_mirror")
    proc = subprocess.run([sys.executable, "-m", "harness.rehearsal", "--out", str(out),
                           "--only", "gqa"], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def datasets_outside_site_packages(tmp_path_factory) -> Path:
    """A copy of the installed `datasets` package in a plain folder, as `pip install --target`
    leaves it (the GPU node's layout)."""
    import datasets

    site = tmp_path_factory.mktemp("target")
    shutil.copytree(Path(datasets.__file__).parent, site / "datasets",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _gqa_check(mirror: Path, site: Path, scratch: Path, mode: str):
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, str(ROOT / "tests" / "visual_workers_check.py"),
                           str(mirror), str(scratch), mode], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False, timeout=600)


def test_gqa_multi_process_map_fails_unguarded_and_passes_through_the_harness(
        gqa_mirror, datasets_outside_site_packages, tmp_path):
    """The GPU-node failure, reproduced: GQA's process_docs maps with num_proc=8 (workers up to
    the row count, whatever the core count); dill pickles its closure's globals, which hold the
    `datasets` module, by value when the package is not under site-packages, and with it tqdm's
    multiprocessing RLock. The runner's guard sends modules by name; the map then runs in
    several workers."""
    site = datasets_outside_site_packages
    bare = _gqa_check(gqa_mirror, site, tmp_path / "bare", "unguarded")
    assert f"DATASETS {site}" in bare.stdout, bare.stdout + bare.stderr[-2000:]
    assert bare.returncode != 0
    assert "RLock objects should only be shared between processes" in bare.stderr, \
        bare.stderr[-3000:]

    guarded = _gqa_check(gqa_mirror, site, tmp_path / "guarded", "guarded")
    assert guarded.returncode == 0, guarded.stderr[-3000:]
    assert f"DATASETS {site}" in guarded.stdout
    workers = int(guarded.stdout.split("WORKERS ")[1].split()[0])
    assert workers > 1, guarded.stdout  # the multi-process path ran
    assert "OK 10" in guarded.stdout


def test_the_guard_is_scoped_to_its_block():
    from multiprocess.reduction import ForkingPickler

    from harness.eval.workers import modules_by_name

    before = ForkingPickler.dispatch
    with modules_by_name():
        assert ForkingPickler.dispatch is not before
        # a module importable by name travels as its name, not as its namespace
        assert len(ForkingPickler.dumps(json)) < 100
    assert ForkingPickler.dispatch is before


def test_error_lines_quote_a_short_escaped_prefix_of_model_text():
    from harness.eval.failures import QUOTE_CHARS, tool_error

    answer = "nonsense\x07\x1b[0m" * 2000
    err = tool_error("lmms-eval", ["mmbench_en_dev_static"], "/m", ValueError(answer), "paper13")
    text = str(err)
    assert "\n" not in text and "\x07" not in text and "\x1b" not in text
    assert "mmbench_en_dev_static" in text and "\\x07" in text
    assert len(text) < QUOTE_CHARS + 200
    assert "more characters" in text


def test_cleaned_answers_go_into_an_xlsx_and_keep_their_text(tmp_path):
    import pandas as pd
    from openpyxl.utils.exceptions import IllegalCharacterError

    from harness.eval.answers import clean

    answer = "B\x00\x01 because\x0b\x1f the\tshape\nis red\r"
    frame = pd.DataFrame({"prediction": [answer]})
    with pytest.raises(IllegalCharacterError):
        frame.to_excel(tmp_path / "raw.xlsx", index=False)
    cleaned = clean(answer)
    assert cleaned == "B because the\tshape\nis red\r"
    pd.DataFrame({"prediction": [cleaned]}).to_excel(tmp_path / "clean.xlsx", index=False)
    assert pd.read_excel(tmp_path / "clean.xlsx")["prediction"][0].startswith("B because")
    assert clean("") == "" and clean("yes") == "yes"


def _broken_task(folder: Path) -> Path:
    """A visual task like the smoke colour task whose scoring raises: copy of the smoke task
    with another name and a process_results that fails."""
    smoke = ROOT / "harness" / "eval" / "tasks" / "smoke"
    folder.mkdir(parents=True)
    utils = (smoke / "utils.py").read_text()
    (folder / "utils.py").write_text(
        utils + "\n\ndef process_results_broken(doc, results):\n"
                "    raise ValueError('scoring broke on purpose')\n")
    yaml = (smoke / "smoke_color.yaml").read_text()
    yaml = yaml.replace("{{TASK_DIR}}", str(smoke)).replace(
        "task: harness_smoke_color", "task: harness_broken_color").replace(
        "utils.process_results", "utils.process_results_broken")
    (folder / "broken_color.yaml").write_text(yaml)
    return folder


def test_a_failing_visual_task_is_named_and_the_others_are_scored(tmp_path, tiny_llama,
                                                                  tiny_llava_new):
    tasks = _broken_task(tmp_path / "tasks")
    results = tmp_path / "results"
    env = {**os.environ, "HARNESS_RESULTS": str(results), "HARNESS_WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "merge.progress=false", "pair=local",
         f"pair.base={tiny_llama}", f"pair.mllm={tiny_llava_new}", "method=mllm", "eval=smoke",
         "eval.limit=2", f"eval.task_paths=[eval/tasks/smoke,{tasks}]",
         ("+eval.benchmarks.broken={suite: vision, tool: lmms-eval, task: harness_broken_color,"
          " metric: exact_match}")],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 1, proc.stdout[-2000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    # each benchmark runs in its own tool call; the failing one is named, the others scored
    assert "1 of 4 benchmarks failed: broken:" in line, line
    assert "harness_broken_color" in line and "scoring broke on purpose" in line, line
    assert "others (smoke_mc, smoke_gen, smoke_color) were scored" in line, line
    assert not list((results / "runs").glob("*/result.json"))
    (run,) = (results / "runs").iterdir()
    kept = json.loads((run / "lmms_eval" / "results_harness_smoke_color.json").read_text())
    assert "harness_smoke_color" in kept["results"] and not kept["failed"]
    broken = json.loads((run / "lmms_eval" / "results_harness_broken_color.json").read_text())
    assert list(broken["failed"]) == ["harness_broken_color"]
    assert (run / "lmms_eval" / "samples_harness_smoke_color.jsonl").is_file()


@pytest.fixture(scope="module")
def visual_mirror(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("visual_mirror")
    only = "mme,mmbench,seedbench,pope,textvqa,scienceqa_img,gqa"
    proc = subprocess.run([sys.executable, "-m", "harness.rehearsal", "--out", str(out),
                           "--only", only], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.parametrize("kind", ["empty", "garbage"])
def test_empty_and_garbage_answers_are_scored_on_every_visual_task(visual_mirror, tmp_path,
                                                                   kind):
    """The real task code of all 7 visual tasks scores an empty answer, and 3 kB answers full of
    control characters once the guard has cleaned them (MMBench's xlsx export included)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "visual_answers_check.py"),
                           str(tmp_path), kind], cwd=visual_mirror, env=env,
                          capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[len("RESULT "):])
    for task, metrics in result["metrics"].items():
        assert metrics, (task, metrics)
    assert result["metrics"]["pope"]["pope_accuracy,none"] == 0.0
    if kind == "garbage":
        assert result["cleaned"]["mmbench_en_dev_static"] == 4
        assert (tmp_path / "out" / "submissions" / "mmbench_en_dev_results.xlsx").is_file()
    else:
        assert result["cleaned"] == {}
