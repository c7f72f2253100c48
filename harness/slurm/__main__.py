"""`python -m harness.slurm submit|status` (behind `make slurm EXP=... ARGS=...`).

    python -m harness.slurm submit +experiment=baselines [overrides ...] [--dry-run] [--name N]
    python -m harness.slurm status [JOB ...] [--all] [--json]

`submit` expands the sweep with Hydra, leaves out the points whose result is complete (or that a
queued job already runs), writes the job under results/slurm/<job>/ and submits ONE array job;
overrides of `slurm.*` choose resources. `status` says, per point, done / running / pending /
failed with its log path (default: the newest job).
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path


log = logging.getLogger("harness.slurm")


def _results_root() -> Path:
    # status does not compose a config: the root from the module that owns it
    from harness.paths import results_root

    return results_root()


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m harness.slurm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="expand a sweep and submit it as one SLURM array job")
    s.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +experiment=baselines")
    s.add_argument("--dry-run", action="store_true",
                   help="print the manifest and the sbatch command; submit nothing")
    s.add_argument("--name", help="job directory name under results/slurm/ "
                                  "(default: <experiment>-<UTC time>)")
    t = sub.add_parser("status", help="done / running / pending / failed points of a job")
    t.add_argument("jobs", nargs="*", help="job names under results/slurm/ or job directories "
                                           "(default: the newest job)")
    t.add_argument("--all", action="store_true", help="every job under results/slurm/")
    t.add_argument("--json", action="store_true", help="print JSON instead of text")
    return ap


def cmd_submit(args: argparse.Namespace) -> int:
    """Expand, filter, write and submit; print what was (or would be) submitted."""
    from harness.slurm.submit import submit_sweep

    result = submit_sweep(args.overrides, dry_run=args.dry_run, name=args.name)
    if not result.points:
        print(f"nothing to submit: all {result.total} points of the sweep are complete or queued")
        return 0
    if args.dry_run:
        print(f"# manifest: {len(result.points)} of {result.total} points "
              f"({result.total - len(result.points)} complete or queued)")
        for task, point in enumerate(result.points):
            print(f"{task}\t{point.run_id}\t{shlex.join(point.overrides)}")
        print("# sbatch command:")
        print(shlex.join(result.command))
        print(f"# job script: {result.script}")
        return 0
    print(f"submitted job {result.job_id}: {len(result.points)} of {result.total} points "
          f"-> {result.job_dir}")
    print(f"status: python -m harness.slurm status {result.job_dir.name}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the status of the chosen jobs; exit 0 (states are information, not errors)."""
    from harness.slurm import status as st
    from harness.slurm.job import list_jobs, load_job, queue_states, slurm_root

    root = slurm_root(_results_root())
    if args.all:
        jobs = list_jobs(root)
    elif args.jobs:
        jobs = [load_job(Path(j) if Path(j).is_dir() else root / j) for j in args.jobs]
    else:
        jobs = list_jobs(root)[-1:]
    if not jobs:
        print(f"no jobs under {root}; submit one with `python -m harness.slurm submit ...`")
        return 0
    states = queue_states([j.job_id for j in jobs if j.job_id])
    infos = [st.summary(j, st.job_status(j, states)) for j in jobs]
    if args.json:
        print(st.dumps(infos if len(infos) > 1 else infos[0]))
    else:
        print("\n".join(st.format_summary(i) for i in infos))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; user errors print one line and exit 1."""
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    args = _parser().parse_args(argv)
    return cmd_submit(args) if args.command == "submit" else cmd_status(args)


if __name__ == "__main__":
    from harness.cli import HYDRA_ELSEWHERE, run_main

    run_main(main, elsewhere=HYDRA_ELSEWHERE)
