"""`make slurm` on a real single-node SLURM (munged + slurmctld + slurmd started by the tests).

The module submits a micro sweep as one array job and checks every record; submits it again and
sees nothing submitted; kills one task and signals another mid-run and shows that both finish
without redoing their finished merges; and builds the tables from the results. It skips, with the
reason, where SLURM cannot be installed or started (it needs root; see tests/slurm_cluster.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import records
from harness.slurm.job import load_job
from harness.slurm.status import job_status, last_event

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_cluster import ClusterUnavailable, LocalSlurm  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parent.parent
EXP = "micro_sweep"
WAIT_S = 900


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running local SLURM cluster (skips the module when it cannot run here)."""
    try:
        slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=min(2, os.cpu_count() or 1))
        slurm.start()
    except ClusterUnavailable as err:
        pytest.skip(f"no local SLURM cluster: {err}")
    yield slurm
    slurm.stop()


@pytest.fixture(scope="module")
def pair_args(tmp_path_factory) -> list[str]:
    """Overrides that choose the pair every point of the test sweeps merges."""
    from harness.models.tiny import build_tiny_llama, build_tiny_llava

    root = tmp_path_factory.mktemp("pair")
    base = build_tiny_llama(root / "base")
    mllm = build_tiny_llava(root / "mllm", base)
    return ["pair=local", f"pair.base={base}", f"pair.mllm={mllm}"]


@pytest.fixture(scope="module")
def env(cluster, tmp_path_factory) -> dict[str, str]:
    """Environment of every command: the cluster, and results in a temporary directory
    (sbatch exports it to the tasks)."""
    results = tmp_path_factory.mktemp("results")
    return dict(os.environ, **cluster.env, HARNESS_RESULTS=str(results),
                HARNESS_WANDB_MODE="disabled", PYTHONUNBUFFERED="1")


def _make(target: str, env: dict, args: list[str] | None = None, timeout_s: float = 300):
    cmd = ["make", "-s", target]
    if target == "slurm":
        cmd.append(f"EXP={EXP}")
    if args:
        cmd.append("ARGS=" + " ".join(args))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _submitted(stdout: str) -> tuple[str, Path]:
    m = re.search(r"submitted job (\d+): .* -> (\S+)", stdout)
    assert m, f"no job submitted:\n{stdout}"
    return m.group(1), Path(m.group(2))


def _queued(cluster: LocalSlurm, job_id: str) -> dict[str, str]:
    out = cluster.run("squeue", "-h", "-r", "-j", job_id, "-o", "%i %T", check=False)
    return dict(line.split() for line in out.splitlines() if line.strip())


def _logs(job_dir: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in
                     sorted((job_dir / "logs").glob("*.log")))


def _wait(cluster: LocalSlurm, job_id: str, job_dir: Path, until=None) -> None:
    """Wait until the job left the queue (or `until()` is true)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if until is not None and until():
            return
        if until is None and not _queued(cluster, job_id):
            return
        time.sleep(0.2 if until is not None else 1)
    pytest.fail(f"job {job_id} did not finish within {WAIT_S}s.\n{_logs(job_dir)}")


def _events(job_dir: Path, task: int) -> list[list[str]]:
    path = job_dir / "tasks" / str(task) / "state"
    return [line.split() for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def first_job(cluster, env, pair_args):
    """The test sweep (2 methods x 2 eval limits = 4 points) submitted with `make slurm`."""
    args = pair_args + ["method=mllm,task_arithmetic", "eval.limit=1,2"]
    t0 = time.monotonic()
    job_id, job_dir = _submitted(_make("slurm", env, args))
    _wait(cluster, job_id, job_dir)
    return {"args": args, "job_id": job_id, "dir": job_dir, "seconds": time.monotonic() - t0}


def test_sweep_runs_as_one_array_job_and_leaves_complete_records(cluster, first_job):
    job = load_job(first_job["dir"])
    points = job.points()
    assert len(points) == 4 and job.meta["sbatch"][2] == "--array=0-3%2"
    statuses = job_status(job, _queued(cluster, job.job_id))
    assert [s.state for s in statuses] == ["done"] * 4, _logs(job.dir)
    recs = []
    for point in points:
        rec = records.load_record(Path(point["result_dir"]))
        assert rec["run_id"] == point["run_id"] and rec["status"] == "complete"
        assert rec["experiment"] == EXP
        assert last_event(job.state_path(point["task"]))[:2] == ["exit", "0"]
        recs.append(rec)
    # Tasks 0 and 1 (and 2 and 3) differ only in eval.limit: they share one merge.
    for a, b in ((0, 1), (2, 3)):
        assert points[a]["merge_dir"] == points[b]["merge_dir"]
        # Both saw the same merge report: one task merged, the other waited and reused it
        # (two merges would report two different durations).
        assert recs[a]["merge"] == recs[b]["merge"], (recs[a]["merge"], recs[b]["merge"])
        if cluster.cpus >= 2:
            ea, eb = _events(job.dir, a), _events(job.dir, b)
            start_a, end_a = int(ea[0][1]), int(ea[-1][2])
            start_b, end_b = int(eb[0][1]), int(eb[-1][2])
            assert start_a < end_b and start_b < end_a, "tasks sharing a merge did not overlap"


def test_second_submission_of_a_complete_sweep_submits_nothing(cluster, env, first_job):
    jobs_before = sorted(p.name for p in first_job["dir"].parent.iterdir())
    out = _make("slurm", env, first_job["args"])
    assert "nothing to submit: all 4 points" in out
    assert sorted(p.name for p in first_job["dir"].parent.iterdir()) == jobs_before


def test_killed_and_signalled_tasks_finish_without_redoing_their_merges(cluster, env, pair_args,
                                                                        first_job):
    args = pair_args + ["method=model_soup,ties", "eval.limit=1"]
    job_id, job_dir = _submitted(_make("slurm", env, args))
    killed, signalled = load_job(job_dir).points()

    from harness.merge import load_merge_report

    def merged(point) -> bool:
        return load_merge_report(Path(point["merge_dir"])) is not None

    # Mid-run = after the merge is complete, before the evaluation is.
    _wait(cluster, job_id, job_dir, until=lambda: merged(killed))
    cluster.run("scancel", f"{job_id}_0")
    assert records.load_record(Path(killed["result_dir"])) is None, \
        "the run finished before it could be killed; the test needs a longer evaluation"
    _wait(cluster, job_id, job_dir, until=lambda: merged(signalled))
    cluster.run("scancel", "--signal=USR1", "--batch", f"{job_id}_1")
    assert records.load_record(Path(signalled["result_dir"])) is None
    mtimes = {p["task"]: (Path(p["merge_dir"]) / "merge.json").stat().st_mtime_ns
              for p in (killed, signalled)}
    _wait(cluster, job_id, job_dir, until=lambda: f"{job_id}_0" not in _queued(cluster, job_id))
    assert job_status(load_job(job_dir), _queued(cluster, job_id))[0].state == "failed"

    # Resubmit: only the killed point goes; the signalled one requeued itself (or is done).
    job2_id, job2_dir = _submitted(_make("slurm", env, args))
    assert [p["run_id"] for p in load_job(job2_dir).points()] == [killed["run_id"]]
    _wait(cluster, job_id, job_dir)
    _wait(cluster, job2_id, job2_dir)

    for point in (killed, signalled):
        rec = records.load_record(Path(point["result_dir"]))
        assert rec is not None, _logs(job_dir) + _logs(job2_dir)
        merge_json = Path(point["merge_dir"]) / "merge.json"
        assert merge_json.stat().st_mtime_ns == mtimes[point["task"]], "merge was redone"
    events = [e[0] for e in _events(job_dir, 1)]
    assert events[:3] == ["start", "usr1", "requeue"] and events[-2:] == ["start", "exit"], events
    assert _events(job_dir, 1)[-1][1] == "0" and _events(job_dir, 1)[-2][3] == "1"  # restart 1
    assert "USR1 received" in (job_dir / "logs" / "1.log").read_text()


def test_hydra_submitit_launcher_runs_a_sweep_on_the_same_resources(env, pair_args, first_job):
    # Until conf/config.yaml lists the slurm group, the launcher needs it added.
    extra = [] if "slurm:" in (ROOT / "conf" / "config.yaml").read_text() else ["+slurm=default"]
    cmd = [sys.executable, "-m", "harness", "-m", *extra, f"+experiment={EXP}",
           "hydra/launcher=slurm", *pair_args, "method=mllm,task_arithmetic", "eval.limit=3"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    submitit = Path(env["HARNESS_RESULTS"]) / "slurm" / "submitit"
    assert any(submitit.glob("*/*_submission.sh")), "the launcher did not go through SLURM"
    script = next(submitit.glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --cpus-per-task=1" in script and "#SBATCH --mem=2GB" in script
    runs = sorted(p.parent.name for p in (Path(env["HARNESS_RESULTS"]) / "runs").glob(
        "*/result.json"))
    assert len(runs) == 4 + 2 + 2  # first sweep, killed + signalled, these two


def test_tables_are_built_from_the_sweep(env, first_job):
    _make("tables", env)
    tables = Path(env["HARNESS_RESULTS"]) / "tables"
    assert tables.is_dir() and any(tables.iterdir())
