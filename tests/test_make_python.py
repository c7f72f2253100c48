"""`make install` on a Python the lock does not cover stops at once, naming the Python the lock
needs and how to point PYTHON= at one; on the lock's Python the check passes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=120)


def _lock_python() -> str:
    head = (ROOT / "requirements.lock").read_text().splitlines()[:5]
    (line,) = [x for x in head if x.startswith("# Python ")]
    return line.split()[2].rstrip(",")


def test_the_lock_header_names_the_running_python():
    assert _lock_python() == f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_install_on_another_python_stops_before_making_a_venv(tmp_path):
    lock = tmp_path / "requirements.lock"
    text = (ROOT / "requirements.lock").read_text()
    lock.write_text(text.replace(f"# Python {_lock_python()},", "# Python 3.99,", 1))
    venv = tmp_path / "venv"
    proc = _make("install", f"PYTHON={sys.executable}", f"VENV={venv}", f"LOCK={lock}")
    assert proc.returncode != 0
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"is Python {here}, but {lock} is resolved for Python 3.99" in proc.stderr
    assert "make install PYTHON=/path/to/python3.99" in proc.stderr
    assert not venv.exists()


def test_a_missing_interpreter_is_named(tmp_path):
    proc = _make("python-check", f"PYTHON={tmp_path / 'python9'}", f"VENV={tmp_path / 'v'}")
    assert proc.returncode != 0
    assert "is not a Python interpreter" in proc.stderr and "PYTHON=" in proc.stderr


def test_the_lock_python_passes(tmp_path):
    proc = _make("python-check", f"PYTHON={sys.executable}", f"VENV={tmp_path / 'v'}")
    assert proc.returncode == 0, proc.stderr
