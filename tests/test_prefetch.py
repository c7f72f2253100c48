"""prefetch fetches what the harness reads: the file selection (a pure function of a repository's
file list), and the CLI end to end against a local fake hub (tests/fake_hub.py) that the real
huggingface_hub client talks to through HF_ENDPOINT."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.models.bin_checkpoint import safetensors_to_bin
from harness.models.hub_files import human_size, select_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_hub import TREES, FakeHub, materialize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REPOS = json.loads(TREES.read_text())["repos"]
SUPPORT = {"config.json", "generation_config.json", "special_tokens_map.json",
           "tokenizer_config.json"}


def test_vicuna_gets_its_bin_shards_and_nothing_else():
    files = REPOS["lmsys/vicuna-7b-v1.5"]
    assert select_files(files, "lmsys/vicuna-7b-v1.5") == [
        "config.json", "generation_config.json", "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json",
        "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"]


@pytest.mark.parametrize("repo", sorted(REPOS))
def test_paper_repos_get_one_weight_format_and_their_support_files(repo):
    files = REPOS[repo]
    chosen = select_files(files, repo)
    weights = [f for f in chosen if f.endswith((".safetensors", ".bin"))]
    has_safetensors = any(f.endswith(".safetensors") for f in files)
    suffix = ".safetensors" if has_safetensors else ".bin"
    assert weights and all(f.endswith(suffix) for f in weights)
    # every shard of that format, and its index
    assert set(weights) == {f for f in files if f.endswith(suffix) and "/" not in f}
    index = "model.safetensors.index.json" if has_safetensors else "pytorch_model.bin.index.json"
    assert index in chosen
    assert SUPPORT <= set(chosen)
    assert {"tokenizer.json", "tokenizer.model"} & set(chosen)
    if repo.startswith("llava-hf/"):
        assert "chat_template.json" in chosen and "preprocessor_config.json" in chosen
    assert not [f for f in chosen if "/" in f or f.startswith(".") or f.endswith(".md")
                or f == "LICENSE" or "pytorch_model.bin.index" in f and has_safetensors]


def test_llama3_original_folder_and_mistral_bin_duplicates_are_left_out():
    llama = select_files(REPOS["meta-llama/Meta-Llama-3-8B-Instruct"], "llama")
    assert not [f for f in llama if f.startswith("original/")]
    mistral = select_files(REPOS["mistralai/Mistral-7B-Instruct-v0.2"], "mistral")
    assert not [f for f in mistral if "pytorch_model" in f]
    skipped = sum(REPOS["mistralai/Mistral-7B-Instruct-v0.2"].values()) - sum(
        REPOS["mistralai/Mistral-7B-Instruct-v0.2"][f] for f in mistral)
    assert skipped > 14e9  # the whole .bin copy


def test_selection_of_odd_repositories():
    files = {"config.json": 1, "model.safetensors": 10, "consolidated.safetensors": 10,
             "tf_model.h5": 10, "flax_model.msgpack": 10, "onnx/model.safetensors": 10,
             "pytorch_model.bin": 10, "params.json": 1, "tokenizer.json": 1,
             "additional_chat_templates/tool_use.jinja": 1, "chat_template.jinja": 1}
    assert select_files(files, "x") == ["additional_chat_templates/tool_use.jinja",
                                        "chat_template.jinja", "config.json",
                                        "model.safetensors", "tokenizer.json"]
    with pytest.raises(HarnessError, match="org/mistral-native has no transformers weights.*"
                                           "consolidated.safetensors"):
        select_files({"consolidated.safetensors": 10, "params.json": 1}, "org/mistral-native")
    with pytest.raises(HarnessError, match="org/x has no config.json"):
        select_files({"model.safetensors": 10}, "org/x")


def _run(args: list[str], hub: FakeHub, tmp_path: Path, offline: bool = False, **env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
                        "HF_TOKEN")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf_home"),
               HARNESS_RESULTS=str(tmp_path / "results"), HARNESS_WANDB_MODE="disabled",
               **env_extra)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _listed(stdout: str) -> dict[str, dict[str, str]]:
    """{repo: {file: printed size}} from prefetch's listing."""
    out, repo = {}, None
    for line in stdout.splitlines():
        head = re.match(r"model +(\S+)@", line)
        row = re.match(r" {10}\s*([\d.]+ [kMG]?B)  (\S+)$", line)
        if head:
            repo = head.group(1)
            out[repo] = {}
        elif row and repo:
            out[repo][row.group(2)] = row.group(1)
    return out


@pytest.fixture(scope="module")
def paper_hub(tmp_path_factory):
    hub = FakeHub(materialize(tmp_path_factory.mktemp("hub")))
    yield hub
    hub.close()


def test_dry_run_of_the_vicuna_pair_lists_only_what_the_harness_reads(tmp_path, paper_hub):
    proc = _run(["-m", "harness.prefetch", "pair=llava15_vicuna_7b", "eval=paper13",
                 "+dry_run=true"], paper_hub, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = _listed(proc.stdout)
    vicuna, llava = REPOS["lmsys/vicuna-7b-v1.5"], REPOS["llava-hf/llava-1.5-7b-hf"]
    assert set(listed) == {"lmsys/vicuna-7b-v1.5", "llava-hf/llava-1.5-7b-hf"}
    assert set(listed["lmsys/vicuna-7b-v1.5"]) == {
        "config.json", "generation_config.json", "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json",
        "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"}
    assert set(listed["llava-hf/llava-1.5-7b-hf"]) == {
        f for f in llava if not f.startswith(".") and f != "README.md"}
    for repo, files in listed.items():
        for f, size in files.items():
            assert size == human_size(REPOS[repo][f]), (repo, f)
    total = sum(vicuna[f] for f in listed["lmsys/vicuna-7b-v1.5"]) + sum(
        llava[f] for f in listed["llava-hf/llava-1.5-7b-hf"])
    assert f"total     22 model files, {human_size(total)}" in proc.stdout
    for task in ("mmlu", "gsm8k", "gqa", "mme"):  # the datasets are still planned
        assert re.search(rf"^lmm?s?-eval +{task}$", proc.stdout, re.M), task
    assert not (tmp_path / "hf_home" / "hub").exists()  # a dry run downloads nothing


def test_gated_repo_and_missing_revision_are_one_line_errors(tmp_path, paper_hub):
    gated = paper_hub.server.RequestHandlerClass.root / "meta-llama/Meta-Llama-3-8B-Instruct"
    (gated / ".gated").touch()
    try:
        proc = _run(["-m", "harness.prefetch", "pair=llava_next_llama3_8b", "eval=none",
                     "+dry_run=true"], paper_hub, tmp_path)
    finally:
        (gated / ".gated").unlink()
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: meta-llama/Meta-Llama-3-8B-Instruct is gated") and \
        "HF_TOKEN" in err, proc.stderr[-2000:]
    proc = _run(["-m", "harness.prefetch", "pair=llava15_vicuna_7b", "pair.base_revision=v9",
                 "eval=none", "+dry_run=true"], paper_hub, tmp_path)
    assert proc.returncode == 1
    assert "lmsys/vicuna-7b-v1.5@v9: the revision does not exist" in proc.stderr


def test_prefetch_downloads_only_the_chosen_files_and_the_pair_merges_offline(
        tmp_path, tiny_llama, tiny_llava_old):
    """A hub pair as the paper's Vicuna pair is: a `.bin`-only base, an MLLM beside extra
    formats and folders. prefetch fills the HF cache with the chosen files only; the merge then
    runs with the hub switched off."""
    hub_root = tmp_path / "hub"
    base = hub_root / "org" / "tiny-base"
    shutil.copytree(tiny_llama, base)
    safetensors_to_bin(base, base, shard_bytes=200_000)
    (base / "README.md").write_text("# card")
    (base / "original").mkdir()
    (base / "original" / "consolidated.00.pth").write_bytes(b"\0" * 1000)
    mllm = hub_root / "org" / "tiny-llava"
    shutil.copytree(tiny_llava_old, mllm)
    (mllm / "tf_model.h5").write_bytes(b"\0" * 1000)
    safetensors_to_bin(mllm, mllm / "dup")  # a second format, in a folder of its own
    (mllm / "pytorch_model.bin").write_bytes((mllm / "dup" / "pytorch_model.bin").read_bytes())
    shutil.rmtree(mllm / "dup")
    hub = FakeHub(hub_root)
    try:
        pair = ["pair=llava15_vicuna_7b", "pair.base=org/tiny-base", "pair.mllm=org/tiny-llava"]
        proc = _run(["-m", "harness.prefetch", *pair, "eval=none"], hub, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        hub.close()
    snaps = {repo: next((tmp_path / "hf_home" / "hub" / f"models--org--{repo}" /
                         "snapshots").iterdir()) for repo in ("tiny-base", "tiny-llava")}
    got = {repo: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
           for repo, d in snaps.items()}
    want_base = sorted(select_files({str(p.relative_to(base)): p.stat().st_size
                                     for p in base.rglob("*") if p.is_file()}, "base"))
    assert got["tiny-base"] == want_base
    assert [f for f in want_base if f.endswith(".bin")] and "README.md" not in want_base
    assert not [f for f in got["tiny-llava"] if f.endswith((".bin", ".h5"))]
    assert "model.safetensors" in got["tiny-llava"] and "config.json" in got["tiny-llava"]
    # offline: the harness finds both in the cache and merges the .bin base
    proc = _run(["-m", "harness", *pair, "method=task_arithmetic", "stage=merge",
                 "merge.progress=false"], hub, tmp_path, offline=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = list((tmp_path / "results").rglob("merge.json"))
    assert len(reports) == 1
    inputs = json.loads(reports[0].read_text())["inputs"]
    assert {f["file"] for f in inputs["base"]["files"] if f["file"].endswith(".bin")} == {
        f for f in want_base if f.endswith(".bin")}
