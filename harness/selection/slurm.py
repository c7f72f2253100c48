"""A selection on SLURM: each halving round (and then the final evaluations) as one array job.

`step(argv)` walks the selection over the records on disk (walk.py): rounds whose records are
all complete are read back, and the first batch with missing records is submitted as an array
job (its points that a live job already runs are left out), after which it stops. Running the
same command again once that job has finished moves on to the next round, so the selection is
resumable at any point: finished runs are never redone, and a failed task is simply submitted
again. When every batch is complete, the outcome and the tables are written.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from harness import records
from harness.records import write_json_atomic
from harness.selection import print_plan
from harness.selection.walk import Batch, walk, write_outcome
from harness.slurm import job as jobs
from harness.slurm.status import queued_run_ids
from harness.slurm.sweep import CONF_DIR, Point, Sweep

log = logging.getLogger(__name__)


@dataclass
class Step:
    """What one `step` did: the batch it stopped at (None: the selection is complete), the
    points it submitted, those already queued, and the job."""

    stage: str                                  # "round <k>", "final" or "complete"
    submitted: list[Point] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    job_dir: Path | None = None
    job_id: str | None = None
    command: list[str] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)


def _submit(batch_points: list, cfg, argv: list[str], name: str, dry_run: bool
            ) -> tuple[Path, str | None, list[str]]:
    """Write the points as one array job (as `python -m harness.slurm submit` does) and submit
    it unless `dry_run`; returns (job dir, job id, sbatch command)."""
    points = []
    for i, p in enumerate(batch_points):
        run_id = records.run_id(p.cfg)
        points.append(Point(index=i, overrides=p.overrides, run_id=run_id,
                            merge_id=records.merge_id(p.cfg), stage="all",
                            result_dir=str(Path(p.cfg.paths.runs) / run_id),
                            merge_dir=str(Path(p.cfg.paths.merges) / records.merge_id(p.cfg))))
    resources = OmegaConf.to_container(cfg.slurm, resolve=True)
    sweep = Sweep(points=points, resources=resources, experiment=name, argv=list(argv),
                  hydra_overrides=[])
    root = (Path(tempfile.mkdtemp(prefix="harness-slurm-dry-run-")) if dry_run
            else jobs.slurm_root(Path(cfg.paths.results)))
    job_dir = jobs.new_job_dir(root, name)
    script = jobs.write_job(job_dir, sweep, points, [])
    command = jobs.sbatch_command(script, len(points), resources.get("max_concurrent"))
    job_id = None if dry_run else jobs.submit(command)
    write_json_atomic(job_dir / jobs.JOB_FILE, {
        "name": job_dir.name, "job_id": job_id, "experiment": name, "argv": list(argv),
        "n_points": len(points), "sweep_points": len(points), "skipped": [],
        "resources": resources, "sbatch": command, "dry_run": dry_run,
        "submitted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    return job_dir, job_id, command


def step(argv: list[str], dry_run: bool = False) -> Step:
    """Advance the selection `argv` describes (e.g. `["+experiment=paper_select",
    "pair=llava_next_llama3_8b"]`) by one batch on SLURM; see the module docstring."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return _step(list(argv), dry_run)
    finally:
        GlobalHydra.instance().clear()


def _step(argv: list[str], dry_run: bool) -> Step:
    cfg = compose("config", overrides=argv)
    print_plan(cfg)
    root = jobs.slurm_root(Path(cfg.paths.results))
    queued = (queued_run_ids(jobs.list_jobs(root)) if root.is_dir() else {}) or {}
    result = Step(stage="complete")

    def execute(batch: Batch) -> list[dict] | None:
        done = [records.load_record(Path(p.cfg.paths.runs) / records.run_id(p.cfg))
                for p in batch.points]
        if all(r is not None for r in done):
            return done
        stage = "final" if batch.round is None else f"round {batch.round + 1}"
        result.stage = stage
        missing = [p for p, r in zip(batch.points, done) if r is None]
        result.queued = [records.run_id(p.cfg) for p in missing
                         if records.run_id(p.cfg) in queued]
        todo = [p for p in missing if records.run_id(p.cfg) not in queued]
        if todo:
            name = f"{cfg.experiment_name}-{cfg.pair.name}-{stage.replace(' ', '')}"
            result.job_dir, result.job_id, result.command = _submit(todo, cfg, argv, name,
                                                                    dry_run)
            result.submitted = todo
        return None

    outcome = walk(cfg, argv, execute)
    if outcome.done:
        from harness.tables import build_tables

        write_outcome(cfg, outcome)
        result.tables = build_tables(Path(cfg.paths.results), select="validation")
    return result


def describe(result: Step, argv: list[str]) -> str:
    """What a step did, for the terminal."""
    again = "python -m harness.selection submit " + shlex.join(argv)
    if result.stage == "complete":
        return (f"selection complete: outcome and tables written "
                f"({len(result.tables)} table files)")
    lines = []
    if result.submitted:
        what = "would submit" if result.job_id is None else f"submitted job {result.job_id}:"
        lines.append(f"{result.stage}: {what} {len(result.submitted)} runs -> {result.job_dir}")
        lines += [f"  {shlex.join(p.overrides)}" for p in result.submitted]
        lines.append("  sbatch: " + shlex.join(result.command))
    if result.queued:
        lines.append(f"{result.stage}: {len(result.queued)} runs already queued")
    lines.append(f"when the job has finished, go on with: {again}")
    return "\n".join(lines)
