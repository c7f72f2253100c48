"""Sweep expansion, manifests, job scripts and status of `python -m harness.slurm`, without a
cluster (tests/test_slurm_cluster.py runs the same code on a real SLURM)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from harness import records
from harness.errors import ConfigError
from harness.slurm import job as jobs
from harness.slurm.status import job_status
from harness.slurm.submit import submit_sweep
from harness.slurm.sweep import expand

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def _compose(overrides: list[str], hydra: bool = False):
    if "slurm:" not in (CONF / "config.yaml").read_text():
        overrides = ["+slurm=default", *overrides]  # until conf/config.yaml lists the group
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def _swept_experiments() -> list[str]:
    names = []
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        if OmegaConf.select(cfg, "hydra.sweeper.params"):
            names.append(path.stem)
    return names


@pytest.fixture(autouse=True)
def _results(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


EXPECTED_POINTS = {"micro_sweep": 3, "baselines": 8, "paper_main": 27,
                   "ablation_neuron_fusion": 54, "rehearsal": 54}


@pytest.mark.parametrize("name", _swept_experiments())
def test_each_manifest_line_reproduces_its_point(name, tmp_path, monkeypatch):
    # a run on a mirror is named by the mirror's content, so the mirror must exist
    monkeypatch.setenv("HARNESS_REHEARSAL_DATA", str(tmp_path))
    sweep = expand([f"+experiment={name}"], config_dir=CONF)
    if name in EXPECTED_POINTS:
        assert len(sweep.points) == EXPECTED_POINTS[name]
    assert len(sweep.points) >= 2
    assert len({p.run_id for p in sweep.points}) == len(sweep.points), "duplicate points"
    for point in sweep.points:
        # What an array task runs: the line, shell-split, composed as `python -m harness` would.
        line = shlex.split(shlex.join(point.overrides))
        assert f"+experiment={name}" in line
        assert records.run_id(_compose(line)) == point.run_id, line


def test_command_line_sweeps_replace_the_experiments_and_multiply():
    sweep = expand(["+experiment=micro_sweep", "method=base,mllm", "seed=0,1"], config_dir=CONF)
    assert len(sweep.points) == 4
    chosen = [(o for o in p.overrides) for p in sweep.points]
    got = {tuple(sorted(x for x in c if x.startswith(("method=", "seed=")))) for c in chosen}
    assert got == {("method=base", "seed=0"), ("method=base", "seed=1"),
                   ("method=mllm", "seed=0"), ("method=mllm", "seed=1")}


def test_resource_overrides_choose_resources_and_stay_out_of_the_manifest():
    sweep = expand(["+experiment=micro_sweep", "slurm.cpus=3", "slurm.partition=gpu",
                    "+slurm.extra.constraint=a100"], config_dir=CONF)
    assert sweep.resources["cpus"] == 3 and sweep.resources["partition"] == "gpu"
    assert sweep.resources["extra"] == {"constraint": "a100"}
    for point in sweep.points:
        assert not any("slurm" in o for o in point.overrides), point.overrides


def test_a_bad_point_names_the_override():
    with pytest.raises(ConfigError, match="method=no_such_method"):
        expand(["+experiment=micro_sweep", "method=mllm,no_such_method"], config_dir=CONF)


def test_complete_points_are_left_out(_results):
    sweep = expand(["+experiment=micro_sweep"], config_dir=CONF)
    done = sweep.points[1]
    records.write_record(Path(done.result_dir), {"run_id": done.run_id})
    sub = submit_sweep(["+experiment=micro_sweep"], dry_run=True)
    assert sub.total == 3
    assert [p.run_id for p in sub.points] == [sweep.points[0].run_id, sweep.points[2].run_id]
    assert sub.skipped == [{"index": 1, "run_id": done.run_id, "why": "complete"}]
    assert sub.command[:3] == ["sbatch", "--parsable", "--array=0-1%2"]
    manifest = (sub.job_dir / jobs.MANIFEST_FILE).read_text().splitlines()
    assert manifest == [shlex.join(p.overrides) for p in sub.points]
    assert not (_results / "slurm").exists(), "a dry run must not write under results/slurm"

    for point in sweep.points:
        records.write_record(Path(point.result_dir), {"run_id": point.run_id})
    again = submit_sweep(["+experiment=micro_sweep"], dry_run=True)
    assert again.points == [] and again.job_dir is None


def test_rendered_script_has_the_resources_and_is_valid_bash(tmp_path):
    sub = submit_sweep(["+experiment=micro_sweep", "slurm.partition=gpu", "slurm.account=lab",
                        "slurm.gpus=2", "slurm.mem_gb=40", "slurm.time_min=90",
                        "slurm.signal_lead_s=200", "slurm.setup=[module load cuda]",
                        "+slurm.extra.constraint=a100"], dry_run=True)
    text = sub.script.read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --gres=gpu:2",
                 "#SBATCH --mem=40G", "#SBATCH --time=90", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@200", "#SBATCH --constraint=a100",
                 "#SBATCH --cpus-per-task=1", "module load cuda",
                 f"#SBATCH --output={sub.job_dir}/logs/%a.log", "scontrol requeue"):
        assert line in text, line
    assert "{{" not in text
    assert shlex.quote(sys.executable) in text
    subprocess.run(["bash", "-n", str(sub.script)], check=True)


def test_unknown_template_placeholder_is_an_error(tmp_path):
    template = tmp_path / "t.sbatch"
    template.write_text("#!/bin/bash\n#SBATCH --job-name={{job_name}}\necho {{nope}}\n")
    with pytest.raises(ConfigError, match="nope"):
        jobs.render_script(template, {"job_name": "x"})


def test_status_reads_files_first_then_the_queue(tmp_path):
    sub = submit_sweep(["+experiment=micro_sweep"], dry_run=True)
    meta = {"name": sub.job_dir.name, "job_id": "77"}
    records.write_json_atomic(sub.job_dir / jobs.JOB_FILE, meta)
    job = jobs.load_job(sub.job_dir)
    first = sub.points[0]
    records.write_record(Path(first.result_dir), {"run_id": first.run_id})
    (sub.job_dir / "tasks" / "2").mkdir(parents=True)
    job.state_path(2).write_text("start 1 77_2 0 node\nexit 1 2 77_2 0 node\n")

    states = [s.state for s in job_status(job, {"77_1": "RUNNING"})]
    assert states == ["done", "running", "failed"]
    detail = job_status(job, {})[2].detail
    assert "exited with code 1" in detail
    assert [s.state for s in job_status(job, None)] == ["done", "unknown", "unknown"]
    assert job_status(job, {"77_2": "PENDING"})[2].state == "pending"


def test_launcher_reads_the_same_resources():
    cfg = _compose(["+experiment=micro_sweep", "hydra/launcher=slurm", "slurm.partition=gpu",
                    "slurm.cpus=3", "slurm.setup=[a,b]"], hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.cpus_per_task) == ("gpu", 3)
    assert launcher.timeout_min == cfg.slurm.time_min
    assert launcher.array_parallelism == cfg.slurm.max_concurrent
    assert list(launcher.setup) == ["a", "b"]


def test_cli_dry_run_prints_manifest_and_sbatch_command():
    proc = subprocess.run([sys.executable, "-m", "harness.slurm", "submit",
                           "+experiment=micro_sweep", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "sbatch --parsable --array=0-2%2" in proc.stdout
    assert proc.stdout.count("+experiment=micro_sweep") == 3


def test_cli_error_names_the_problem():
    proc = subprocess.run([sys.executable, "-m", "harness.slurm", "submit",
                           "+experiment=no_such_experiment", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "no_such_experiment" in proc.stderr and "Traceback" not in proc.stderr
