"""Every user error of an entry point is one line on stderr with exit code 1 (2 for a bad option);
a traceback only with HARNESS_DEBUG=1. Records are written with the user's umask."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import user_error

ROOT = Path(__file__).resolve().parent.parent
# root writes anywhere: its child drops the capabilities that override file modes
AS_USER = (["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-linux_immutable",
            "--"] if os.geteuid() == 0 else [])


def _run(module: str, *args: str, env: dict | None = None, as_user: bool = False,
         timeout: int = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "HARNESS_WANDB_MODE": "disabled", **(env or {})}
    prefix = AS_USER if as_user else []
    return subprocess.run([*prefix, sys.executable, "-m", module, *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _one_line(proc: subprocess.CompletedProcess, code: int = 1) -> str:
    assert proc.returncode == code, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")
             or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory the child processes of `_run(..., as_user=True)` cannot write into."""
    if AS_USER and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no directory is read-only to root")
    root = tmp_path / "read_only"
    root.mkdir()
    root.chmod(0o555)
    yield root
    root.chmod(0o755)


def test_a_read_only_results_directory_is_one_line_and_exit_1(read_only_dir):
    results = read_only_dir / "results"
    env = {"HARNESS_RESULTS": str(results)}
    proc = _run("harness", "method=base", "eval=none", env=env, as_user=True)
    line = _one_line(proc)
    assert str(results) in line and "permission denied" in line and "paths.results" in line
    debug = _run("harness", "method=base", "eval=none", env={**env, "HARNESS_DEBUG": "1"},
                 as_user=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_results_path_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    proc = _run("harness", "method=base", "eval=none",
                env={"HARNESS_RESULTS": str(tmp_path / "results")})
    line = _one_line(proc)
    assert str(tmp_path / "results") in line and "not a directory" in line


@pytest.mark.parametrize("code, words", [
    (errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system"),
    (errno.ENOTDIR, "not a directory"), (errno.ENOSPC, "no free inodes"),
    (errno.EDQUOT, "quota"),
])
def test_file_system_errors_name_the_path_and_the_fix(code, words):
    err = OSError(code, os.strerror(code), "/data/results/runs/x/result.json")
    message, exit_code = user_error(err, elsewhere="--results DIR")
    assert exit_code == 1 and "/data/results/runs/x/result.json" in message
    assert words in message and "--results DIR" in message and "\n" not in message
    wrapped = RuntimeError("writing failed")
    wrapped.__cause__ = err
    assert user_error(wrapped) is not None
    assert user_error(ValueError("a bug")) is None


def test_bench_reps_0_is_a_usage_error():
    proc = _run("harness.bench", "--reps", "0", "--no-mergekit")
    assert proc.returncode == 2 and "--reps 0: must be at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_tables_judge_with_a_bad_path_is_a_usage_error(tmp_path):
    proc = _run("harness.tables", "--results", str(tmp_path), "--judge", str(tmp_path / "nope"))
    assert proc.returncode == 2 and f"--judge {tmp_path / 'nope'}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_analyze_on_a_mismatched_pair_is_one_line(tmp_path, tiny_llama):
    from harness.models.tiny import build_tiny_llama

    other = build_tiny_llama(tmp_path / "wide", hidden=32, intermediate=64)
    proc = _run("harness.analyze", "pair=local", f"pair.base={tiny_llama}",
                f"pair.mllm={other}", env={"HARNESS_RESULTS": str(tmp_path / "results")})
    assert "shape mismatch" in _one_line(proc)
    assert not (tmp_path / "results" / "analysis").exists()


def test_the_disk_check_states_the_requirement_with_its_margin(tmp_path):
    from harness.errors import MergeError
    from harness.merge.outputs import check_free_disk

    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(MergeError) as caught:
        check_free_disk(tmp_path, max(free - (32 << 20), 1))
    needs, have = map(float, re.search(r"needs about ([\d.]+) GB.*?([\d.]+) GB are free",
                                       str(caught.value)).groups())
    assert needs > have, str(caught.value)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_records_follow_the_umask(tmp_path, mask):
    from harness.records import write_json_atomic

    before = os.umask(mask)
    try:
        write_json_atomic(tmp_path / "result.json", {"a": 1})
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == 0o666 & ~mask
    assert json.loads((tmp_path / "result.json").read_text()) == {"a": 1}
