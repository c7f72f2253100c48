"""Submit a sweep as one SLURM array job: expand → leave out finished work → write → sbatch."""

from __future__ import annotations

import datetime as _dt
import logging
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError
from harness.records import write_json_atomic
from harness.slurm import job as jobs
from harness.slurm.status import queued_run_ids
from harness.slurm.sweep import Point, expand

log = logging.getLogger(__name__)


@dataclass
class Submission:
    """What `submit_sweep` did: the points in the array (task i = points[i]) and the job."""

    total: int
    points: list[Point]
    skipped: list[dict] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    script: Path | None = None
    job_dir: Path | None = None
    job_id: str | None = None


def _results_dir(points: list[Point]) -> Path:
    # <paths.results>/runs/<run_id> → <paths.results>
    return Path(points[0].result_dir).parent.parent


def submit_sweep(argv: list[str], dry_run: bool = False, name: str | None = None) -> Submission:
    """Expand the sweep of `argv`, keep the points that are neither complete nor already queued
    in a live job, and submit them as one array job (with `dry_run`, write the job into a
    temporary directory and submit nothing).

    Raises:
        ConfigError: the sweep does not compose.
        SlurmError: sbatch failed or is missing.
    """
    sweep = expand(argv)
    total = len(sweep.points)
    if not total:
        return Submission(total=0, points=[])
    root = jobs.slurm_root(_results_dir(sweep.points))
    queued = queued_run_ids(jobs.list_jobs(root)) if root.is_dir() else {}
    if queued is None:
        log.warning("SLURM's queue cannot be read; points of earlier jobs still queued may be "
                    "submitted twice (the harness then skips whichever finishes second)")
        queued = {}
    todo, skipped, seen = [], [], set()
    for point in sweep.points:
        if point.complete:
            skipped.append({"index": point.index, "run_id": point.run_id, "why": "complete"})
        elif point.run_id in queued:
            skipped.append({"index": point.index, "run_id": point.run_id,
                            "why": f"queued as {queued[point.run_id]}"})
        elif point.run_id in seen:
            skipped.append({"index": point.index, "run_id": point.run_id,
                            "why": "duplicate of an earlier point"})
        else:
            seen.add(point.run_id)
            todo.append(point)
    for s in skipped:
        log.info("point %d (%s) left out: %s", s["index"], s["run_id"], s["why"])
    sub = Submission(total=total, points=todo, skipped=skipped)
    if not todo:
        return sub
    res = sweep.resources
    if dry_run:
        # A dry run leaves results/slurm/ alone (status never shows it); its files go to /tmp.
        root = Path(tempfile.mkdtemp(prefix="harness-slurm-dry-run-"))
    if name:
        job_dir = root / name
        if (job_dir / jobs.JOB_FILE).exists():
            raise ConfigError(f"--name {name}: {job_dir} already holds a job; choose another name")
        job_dir.mkdir(parents=True, exist_ok=True)
    else:
        job_dir = jobs.new_job_dir(root, sweep.experiment)
    script = jobs.write_job(job_dir, sweep, todo, skipped)
    command = jobs.sbatch_command(script, len(todo), res.get("max_concurrent"))
    sub.command, sub.script, sub.job_dir = command, script, job_dir
    meta = {"name": job_dir.name, "job_id": None, "experiment": sweep.experiment,
            "argv": sweep.argv, "n_points": len(todo), "sweep_points": total,
            "skipped": skipped, "resources": res, "sbatch": command, "dry_run": dry_run}
    if not dry_run:
        sub.job_id = jobs.submit(command)
        meta["job_id"] = sub.job_id
        log.info("submitted array job %s (%d tasks): %s", sub.job_id, len(todo),
                 shlex.join(command))
    meta["submitted_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(job_dir / jobs.JOB_FILE, meta)
    return sub
