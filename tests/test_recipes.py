"""The README's recipes "Add your own pair" and "Add your own benchmark", followed literally: the
files its code blocks show are written where they say (conf/local/, read from the directory the
command runs in), with the tiny checkpoints for the example directories, and its commands run
through `python -m harness`. Rerunning a command skips the finished run ("Resuming a sweep")."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)


def section(title: str) -> str:
    """The text of the README section `## <title>` (up to the next `## `)."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def recipe(title: str) -> tuple[dict[str, str], list[list[str]]]:
    """({file path: text} of the blocks whose first line is `# conf/local/...`, [commands])."""
    files, commands = {}, []
    for block in FENCE.findall(section(title)):
        first, _, rest = block.partition("\n")
        if first.startswith("# conf/"):
            files[first[2:].strip()] = rest
        for line in block.splitlines():
            if line.startswith(".venv/bin/python -m harness "):
                commands.append(shlex.split(line, comments=True))
    return files, commands


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_llama, tiny_llava_new):
    """A directory holding the recipes' conf/local/ files, as a user's checkout would."""
    work = tmp_path_factory.mktemp("checkout")
    files = {**recipe("Add your own pair")[0], **recipe("Add your own benchmark")[0]}
    assert {"conf/local/pair/my_pair.yaml", "conf/local/eval/my_suite.yaml"} <= set(files)
    for rel, text in files.items():
        assert rel.startswith("conf/local/"), f"{rel}: the recipes write to conf/local/ only"
        if rel == "conf/local/pair/my_pair.yaml":  # the example directories → tiny checkpoints
            pair = yaml.safe_load(text)
            pair.update(base=str(tiny_llama), mllm=str(tiny_llava_new))
            text = yaml.safe_dump(pair, sort_keys=False)
        if rel == "conf/local/eval/my_suite.yaml":  # the example absolute path → this checkout
            suite = yaml.safe_load(text)
            suite["task_paths"] = [str(work / p[p.index("conf/local/"):])
                                   for p in suite["task_paths"]]
            text = yaml.safe_dump(suite, sort_keys=False)
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    return work


def run(work: Path, command: list[str]) -> subprocess.CompletedProcess:
    """A README command, run in `work` with this checkout's harness and its own results."""
    assert command[:3] == [".venv/bin/python", "-m", "harness"]
    env = {**os.environ, "HARNESS_RESULTS": str(work / "results"),
           "HARNESS_WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *command[1:], "merge.progress=false"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600, check=False)


def records(work: Path) -> list[dict]:
    runs = sorted((work / "results" / "runs").glob("*/result.json"))
    return [json.loads(p.read_text()) for p in runs]


def test_add_your_own_pair(workdir, tiny_llama, tiny_llava_new):
    (command,) = recipe("Add your own pair")[1]
    proc = run(workdir, command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = records(workdir)
    assert rec["pair"] == "my_pair" and rec["method"] == "ties"
    assert rec["config"]["pair"]["base"] == str(tiny_llama)
    assert rec["config"]["pair"]["mllm"] == str(tiny_llava_new)
    (merge,) = (workdir / "results/merges").glob("my_pair-ties-*/merge.json")
    assert json.loads(merge.read_text())["status"] == "complete"
    assert (merge.parent / "llm" / "model.safetensors").is_file()

    again = run(workdir, command)  # "Resuming a sweep": the complete run is skipped
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"run {rec['run_id']} is complete" in again.stdout + again.stderr
    assert len(records(workdir)) == 1


def test_add_your_own_benchmark(workdir):
    (command,) = recipe("Add your own benchmark")[1]
    limit = int(next(a for a in command if a.startswith("eval.limit=")).split("=")[1])
    proc = run(workdir, command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = [r for r in records(workdir) if r["eval_suite"] == "my_suite"]
    assert set(rec["scores"]) == {"my_bench"}
    score = rec["scores"]["my_bench"]
    assert score["tool"] == "lm-eval" and score["n"] == limit
    assert 0.0 <= score["percent"] <= 100.0
    samples = next((workdir / "results/runs" / rec["run_id"] / "lm_eval")
                   .glob("samples_my_bench*.jsonl")).read_text().splitlines()
    data = (workdir / "conf/local/tasks/my_bench/my_bench.jsonl").read_text().splitlines()
    assert [json.loads(s)["doc"] for s in samples] == [json.loads(d) for d in data[:limit]]
