"""Every entry point has a real `--help`: the argparse ones describe each of their options, the
Hydra apps (`harness`, `harness.prefetch`, `harness.analyze`) print their own page listing the
config groups, the main keys of conf/config.yaml and the `+` keys and flags their code reads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

ARGPARSE = [("harness.tables",), ("harness.bench",), ("harness.rehearsal",), ("harness.micro",),
            ("harness.slurm",), ("harness.slurm", "submit"), ("harness.slurm", "status"),
            ("harness.environment",), ("harness.environment", "check")]


def help_text(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *args, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def undescribed(text: str) -> list[str]:
    """The argparse entries (options, positionals) that have no description."""
    lines, out, listing = text.splitlines(), [], False
    for i, line in enumerate(lines):
        if line and not line.startswith(" "):
            listing = line in ("options:", "positional arguments:", "optional arguments:")
        elif listing and re.match(r"^  \S", line):
            same_line = re.search(r"\S {2,}\S", line.strip())
            next_line = i + 1 < len(lines) and re.match(r"^ {4,}\S", lines[i + 1])
            if not (same_line or next_line):
                out.append(line.strip())
    return out


@pytest.mark.parametrize("command", ARGPARSE, ids=" ".join)
def test_argparse_entry_points_describe_every_option(command):
    text = help_text(*command)
    assert text.startswith(f"usage: python -m {command[0]}")
    assert undescribed(text) == []


def test_the_checker_finds_an_option_without_description():
    text = ("usage: x\n\noptions:\n  -h, --help  show this help message and exit\n"
            "  --probe\n  --out OUT   where\n")
    assert undescribed(text) == ["--probe"]


@pytest.fixture(scope="module")
def cfg():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield compose(config_name="config")
    GlobalHydra.instance().clear()


def test_main_help_lists_groups_keys_and_experiment(cfg):
    text = help_text("harness")
    assert text.startswith("python -m harness ")
    groups = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in
                    ("hydra", "local"))
    for group in groups:
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        assert re.search(rf"^{group}: {', '.join(options)}$", text, re.M), group
    for key, value in cfg.items():
        if key == "merge":
            for sub in value:
                assert f"merge.{sub}=" in text, f"merge.{sub}"
        elif not isinstance(value, dict) and not hasattr(value, "keys"):
            assert f"{key}=" in text, key
    assert "+experiment=" in text and "-m, --multirun" in text and "conf/local/" in text


@pytest.mark.parametrize("module", ["prefetch", "analyze"])
def test_hydra_tools_list_their_plus_keys_and_flags(cfg, module):
    text = help_text(f"harness.{module}")
    assert text.startswith(f"python -m harness.{module} ")
    source = (ROOT / "harness" / f"{module}.py").read_text()
    plus = [k for k in re.findall(r'OmegaConf\.select\(cfg, "([\w.]+)"', source)
            if k.split(".")[0] not in cfg]
    flags = re.findall(r'arg == "(--[\w-]+)"', source)
    assert plus, "the tool reads no + key: update this test"
    for key in plus:
        assert f"+{key}=" in text, key
    for flag in flags:
        assert f"{flag} " in text, flag
    assert "pair=" in text and "-m, --multirun" in text
