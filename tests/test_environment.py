"""The locked environment: lock parsing, the venv-vs-lock comparison, and the committed lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import environment as env

ROOT = Path(__file__).resolve().parent.parent


def test_normalise_follows_pep_503():
    assert env.normalise("Typing_Extensions") == "typing-extensions"
    assert env.normalise("zope.interface") == env.normalise("zope-interface")
    assert env.normalise("a__b--c") == "a-b-c"


def test_read_lock_pins_and_comments(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\n\nFoo_Bar==1.2.0  # why\ntorch==2.14.1\n")
    assert env.read_lock(lock) == {"foo-bar": ("Foo_Bar", "1.2.0"), "torch": ("torch", "2.14.1")}


@pytest.mark.parametrize("line", ["numpy>=2", "-e .", "numpy", "numpy==2 ; python_version<'3'"])
def test_read_lock_rejects_what_is_not_a_pin(tmp_path, line):
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"torch==2.14.1\n{line}\n")
    with pytest.raises(env.LockMismatch, match=r"requirements.lock:2: .*make lock"):
        env.read_lock(lock)


def test_differences_name_missing_extra_and_other_versions():
    lock = {"filelock": ("filelock", "3.32.7"), "torch": ("torch", "2.14.1"),
            "pandas": ("pandas", "3.1.1")}
    have = {"filelock": ("filelock", "4.3.1"), "torch": ("torch", "2.14.1"),
            "tomli-w": ("tomli_w", "1.2.0")}
    assert env.differences(lock, have) == [
        "filelock: 4.3.1 is installed, the lock pins 3.32.7",
        "pandas: missing (the lock pins 3.1.1)",
        "tomli_w: 1.2.0 is installed but not in the lock",
    ]
    assert env.differences(lock, dict(lock)) == []


def test_freeze_reads_back_as_what_is_installed(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(env.freeze())
    assert env.read_lock(lock) == env.installed()
    assert not set(env.read_lock(lock)) & env.UNLOCKED


def test_a_version_other_than_the_lock_is_an_error_naming_the_package(tmp_path):
    pins = env.read_lock(env.LOCK)
    name, version = pins["filelock"]
    lock = tmp_path / "requirements.lock"
    lock.write_text(env.LOCK.read_text().replace(f"{name}=={version}\n", f"{name}==4.0.0\n"))
    with pytest.raises(env.LockMismatch, match=rf"filelock: {version} is installed, the lock "
                                               r"pins 4\.0\.0[\s\S]*make install"):
        env.check(lock, run_pip_check=False)


def test_a_missing_lock_says_how_to_write_it(tmp_path):
    with pytest.raises(env.LockMismatch, match="make lock"):
        env.check(tmp_path / "requirements.lock")


def test_pip_check_passes_over_the_known_decord_tag_only(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'decord 0.6.0 is not supported on this platform'\n"
                    "echo 'foo 1.0 has requirement bar<2, but you have bar 2.1.'\nexit 1\n")
    fake.chmod(0o755)
    assert env.pip_conflicts(str(fake)) == ["foo 1.0 has requirement bar<2, but you have bar 2.1."]


def test_the_test_venv_is_the_locked_environment():
    """The tests run in exactly the environment requirements.lock pins, with no pip conflict."""
    out = subprocess.run([sys.executable, "-m", "harness.environment", "check"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "pip check: no conflicts" in out.stdout


def test_the_lock_holds_the_deliberate_pins():
    pins = {key: version for key, (_, version) in env.read_lock(env.LOCK).items()}
    assert pins["filelock"].split(".")[0] == "3"  # lmms-eval 0.7.3 imports filelock._api
    assert pins["antlr4-python3-runtime"] == "4.9.3"  # Hydra's grammar
    assert pins["wandb"] == "0.25.0"  # lmms-eval's exact pin
    assert pins["lm-eval"] == "0.4.13" and pins["lmms-eval"] == "0.7.3"
