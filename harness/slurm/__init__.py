"""Sweeps on SLURM: one array job per sweep, one Hydra point per task, resumable.

`python -m harness.slurm submit +experiment=X [overrides] [--dry-run]` expands the sweep with
Hydra's own sweeper (`sweep`), leaves out points whose result is complete or already queued,
writes the job under `results/slurm/<job>/` and runs one `sbatch --array=0-(N-1)%K`
(`submit`, `job`); `python -m harness.slurm status` reports each point (`status`).
Resources come from conf/slurm/ (the same config Hydra's `hydra/launcher=slurm` reads).
See docs/slurm.md.
"""
