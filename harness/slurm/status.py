"""Where the points of an array job stand: done, running, pending, failed (with log paths).

A point is *done* when its result.json (or, for `stage=merge`, its merge.json) is complete: the
files, not SLURM, are the truth. Otherwise SLURM's queue says *running* or *pending*; a point that
left the queue without a complete result is *failed*, with the last event its task recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness import records
from harness.slurm.job import Job, queue_states

STATES = ("done", "running", "pending", "failed", "unknown")


@dataclass
class PointStatus:
    """The state of one array task of a job."""

    task: int
    state: str
    detail: str
    run_id: str
    log: Path
    overrides: list[str]


def _complete(point: dict) -> bool:
    if point.get("stage") == "merge":
        from harness.merge import load_merge_report
        return load_merge_report(Path(point["merge_dir"])) is not None
    return records.load_record(Path(point["result_dir"])) is not None


def last_event(state_file: Path) -> list[str] | None:
    """The last line a task wrote to its state file, split (`[event, time, task, restarts, host]`
    or `["exit", rc, time, ...]`); None when the task never started."""
    try:
        lines = [ln.split() for ln in state_file.read_text().splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None


def _failed_detail(event: list[str] | None) -> str:
    if event is None:
        return "never started (cancelled while pending?)"
    if event[0] == "exit":
        return f"exited with code {event[1]}" if event[1] != "0" else \
            "exited 0 without a complete result"
    return f"stopped after '{event[0]}' (killed or node lost)"


def job_status(job: Job, states: dict[str, str] | None) -> list[PointStatus]:
    """Status of every point of `job`, given SLURM's queue (`queue_states`; None: unknown)."""
    out = []
    for point in job.points():
        task = int(point["task"])
        key = f"{job.job_id}_{task}"
        event = last_event(job.state_path(task))
        if _complete(point):
            state, detail = "done", point["result_dir"]
        elif states is None:
            state, detail = "unknown", "SLURM's queue cannot be read here"
        elif key in states:
            slurm_state = states[key]
            state = "running" if slurm_state in ("RUNNING", "COMPLETING", "SUSPENDED") \
                else "pending"
            detail = slurm_state.lower()
        else:
            state, detail = "failed", _failed_detail(event)
        out.append(PointStatus(task=task, state=state, detail=detail, run_id=point["run_id"],
                               log=job.log_path(task), overrides=point["overrides"]))
    return out


def summary(job: Job, statuses: list[PointStatus]) -> dict:
    """Counts per state plus the per-point rows, JSON-able."""
    counts = {s: sum(p.state == s for p in statuses) for s in STATES}
    return {
        "job": job.name, "job_id": job.job_id, "dir": str(job.dir), "counts": counts,
        "points": [{"task": p.task, "state": p.state, "detail": p.detail, "run_id": p.run_id,
                    "log": str(p.log), "overrides": p.overrides} for p in statuses],
    }


def format_summary(info: dict) -> str:
    """Human-readable status of one job."""
    counts = ", ".join(f"{n} {s}" for s, n in info["counts"].items() if n)
    lines = [f"job {info['job']} (SLURM id {info['job_id']}): {counts or 'no points'}",
             f"  dir: {info['dir']}"]
    for p in info["points"]:
        lines.append(f"  [{p['task']:>3}] {p['state']:<8} {p['run_id']}  log: {p['log']}")
        if p["state"] != "done":
            lines.append(f"        {p['detail']}; overrides: {' '.join(p['overrides'])}")
    return "\n".join(lines)


def queued_run_ids(jobs: list[Job]) -> dict[str, str] | None:
    """run_id → "<job id>_<task>" for every point still pending or running in SLURM's queue
    (None when the queue cannot be read)."""
    with_ids = [j for j in jobs if j.job_id]
    states = queue_states([j.job_id for j in with_ids])
    if states is None:
        return None
    queued = {}
    for job in with_ids:
        for point in job.points():
            key = f"{job.job_id}_{point['task']}"
            if key in states:
                queued[point["run_id"]] = key
    return queued


def dumps(info: dict) -> str:
    """JSON of a summary (for `status --json`)."""
    return json.dumps(info, indent=2)
