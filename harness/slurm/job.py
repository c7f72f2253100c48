"""An array job on disk and in SLURM: `results/slurm/<job name>/`.

```
results/slurm/<job>/
  manifest.txt    one line of shell-quoted Hydra overrides per array task (task i: line i+1)
  points.json     per task: overrides, run_id, merge_id, result/merge dirs
  job.sbatch      the batch script rendered from slurm/<template>
  job.json        name, SLURM job id, sbatch command, submit time, resources, skipped points
  logs/<i>.log    stdout+stderr of task i (appended to across requeues)
  tasks/<i>/      state (one event per line), hydra/ (the run's Hydra output dir)
```
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.records import write_json_atomic
from harness.slurm.sweep import Point, Sweep

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB_FILE = "job.json"
POINTS_FILE = "points.json"
MANIFEST_FILE = "manifest.txt"
SCRIPT_FILE = "job.sbatch"


class SlurmError(HarnessError):
    """A SLURM command failed or SLURM is not reachable; the message has its output."""


@dataclass
class Job:
    """A submitted (or dry-run) array job: its directory and what job.json says about it."""

    dir: Path
    meta: dict

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def job_id(self) -> str | None:
        return self.meta.get("job_id")

    def points(self) -> list[dict]:
        """The job's points as stored in points.json (index = array task id)."""
        return json.loads((self.dir / POINTS_FILE).read_text())

    def log_path(self, index: int) -> Path:
        return self.dir / "logs" / f"{index}.log"

    def state_path(self, index: int) -> Path:
        return self.dir / "tasks" / str(index) / "state"


def slurm_root(results: Path) -> Path:
    """Where array jobs live: `<paths.results>/slurm`."""
    return Path(results) / "slurm"


def load_job(job_dir: Path) -> Job:
    """The job in `job_dir` (a directory with job.json)."""
    path = Path(job_dir) / JOB_FILE
    try:
        return Job(Path(job_dir), json.loads(path.read_text()))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is not a job written by `python -m harness.slurm submit` "
                          f"({err})") from err


def list_jobs(root: Path) -> list[Job]:
    """Every job under `root` (results/slurm), oldest first by submit time."""
    jobs = [load_job(p.parent) for p in Path(root).glob(f"*/{JOB_FILE}")]
    return sorted(jobs, key=lambda j: (j.meta.get("submitted_at", ""), j.name))


def new_job_dir(root: Path, experiment: str) -> Path:
    """A fresh `<root>/<experiment>-<UTC time>` directory (suffixed when the name is taken)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment) or "sweep"
    base = Path(root) / f"{safe}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def _sbatch_options(res: dict) -> list[str]:
    opts = []
    for key, flag in (("partition", "partition"), ("account", "account"), ("qos", "qos")):
        if res.get(key):
            opts.append(f"--{flag}={res[key]}")
    if res.get("cpus"):
        opts.append(f"--cpus-per-task={int(res['cpus'])}")
    if res.get("mem_gb"):
        opts.append(f"--mem={int(res['mem_gb'])}G")
    if res.get("gpus"):
        opts.append(f"--gres=gpu:{int(res['gpus'])}")
    if res.get("time_min"):
        opts.append(f"--time={int(res['time_min'])}")
    opts.append("--requeue" if res.get("requeue", True) else "--no-requeue")
    for key, value in (res.get("extra") or {}).items():
        if value is True or value is None:
            opts.append(f"--{key}")
        elif value is not False:
            opts.append(f"--{key}={value}")
    return opts


def render_script(template: Path, values: dict[str, str]) -> str:
    """Fill the `{{name}}` placeholders of a batch script template.

    Raises:
        ConfigError: the template is missing or has a placeholder no value is given for.
    """
    try:
        text = Path(template).read_text()
    except OSError as err:
        raise ConfigError(f"slurm.template={template} cannot be read ({err}); it is a path "
                          f"relative to the repository root, e.g. slurm/array.sbatch") from err
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)))
    if left:
        raise ConfigError(f"template {template} has placeholders {left} that "
                          f"`python -m harness.slurm` does not fill; known: {sorted(values)}")
    return text


def write_job(job_dir: Path, sweep: Sweep, points: list[Point], skipped: list[dict]) -> Path:
    """Write manifest, points and batch script of `points` into `job_dir`; return the script."""
    res = sweep.resources
    (job_dir / "logs").mkdir(parents=True, exist_ok=True)
    (job_dir / "tasks").mkdir(exist_ok=True)
    lines = [shlex.join(p.overrides) for p in points]
    (job_dir / MANIFEST_FILE).write_text("".join(f"{line}\n" for line in lines))
    stored = []
    for task, point in enumerate(points):
        stored.append(dict(point.to_json(), task=task, sweep_index=point.index))
    write_json_atomic(job_dir / POINTS_FILE, stored)
    template = Path(res.get("template") or "slurm/array.sbatch")
    if not template.is_absolute():
        template = REPO_ROOT / template
    python = res.get("python") or sys.executable
    options = "\n".join(f"#SBATCH {o}" for o in _sbatch_options(res))
    setup = "\n".join(str(s) for s in (res.get("setup") or []))
    script = render_script(template, {
        "job_name": job_dir.name, "job_dir": shlex.quote(str(job_dir)),
        "log_dir": str(job_dir / "logs"), "manifest": shlex.quote(str(job_dir / MANIFEST_FILE)),
        "signal_lead_s": str(int(res.get("signal_lead_s", 300))),
        "sbatch_options": options, "setup": setup, "python": shlex.quote(str(python)),
        "workdir": shlex.quote(os.getcwd()),
    })
    path = job_dir / SCRIPT_FILE
    path.write_text(script)
    path.chmod(0o755)
    return path


def sbatch_command(script: Path, n: int, max_concurrent: int | None) -> list[str]:
    """`sbatch --parsable --array=0-(n-1)%K <script>`."""
    array = f"0-{n - 1}"
    if max_concurrent:
        array += f"%{int(max_concurrent)}"
    return ["sbatch", "--parsable", f"--array={array}", str(script)]


def _run(cmd: list[str], timeout_s: float = 60) -> str:
    if shutil.which(cmd[0]) is None:
        raise SlurmError(f"`{cmd[0]}` is not on PATH: this machine has no SLURM client. Submit "
                         f"from a login node, or use --dry-run to see the job.")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        raise SlurmError(f"`{shlex.join(cmd)}` did not answer within {timeout_s:.0f}s") from err
    if proc.returncode != 0:
        raise SlurmError(f"`{shlex.join(cmd)}` failed with exit code {proc.returncode}: "
                         f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def submit(cmd: list[str]) -> str:
    """Run the sbatch command; return the job id."""
    out = _run(cmd).strip()
    job_id = out.split(";")[0].strip()
    if not job_id.isdigit():
        raise SlurmError(f"`{shlex.join(cmd)}` printed {out!r}, not a job id")
    return job_id


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """SLURM state of every queued array task of `job_ids`: {"<job>_<task>": "RUNNING", ...}.

    Tasks that left the queue are absent. None when squeue is missing or fails (no cluster).
    """
    if not job_ids:
        return {}
    try:
        out = _run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %T"])
    except SlurmError as err:
        # squeue fails for job ids the controller has already purged; ask one at a time then.
        if "Invalid job id" not in str(err) or len(job_ids) == 1:
            log.warning("%s", err)
            return {} if "Invalid job id" in str(err) else None
        states: dict[str, str] = {}
        for job_id in job_ids:
            one = queue_states([job_id])
            if one is None:
                return None
            states.update(one)
        return states
    states = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states
