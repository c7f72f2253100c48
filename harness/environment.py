"""The locked environment: compare the running venv with requirements.lock, and write the lock.

requirements.lock pins every distribution the tests pass with (`name==version`, one a line, plain
pip syntax) for Python 3.11 on Linux x86_64. `make install` installs exactly that; this module
tells whether the venv still matches it:

    python -m harness.environment check [--lock requirements.lock] [--quick]
    python -m harness.environment freeze > requirements.lock     # what `make lock` runs

Scores move with library versions (a resolver picking the newest allowed release changed the micro
table), so a venv that differs from the lock is an error, not a warning. Only the standard library
is imported here: the check runs before anything is known to be installed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"
# Installer tools (pip freeze leaves them out too) and the project itself are not locked.
UNLOCKED = {"pip", "setuptools", "wheel", "distribute", "harness"}
# decord 0.6.0's only Linux wheel is tagged cp36-abi3-manylinux; it imports and works on 3.11,
# but `pip check` reports it as "not supported on this platform".
PIP_CHECK_KNOWN = ("decord 0.6.0 is not supported on this platform",)
HEADER = """\
# The environment `make test` passes in: every distribution at its exact version.
# Python 3.11, Linux x86_64. Written by `make lock` from pyproject.toml; do not edit by hand.
# To upgrade: change the range in pyproject.toml, `make lock`, `make test`, commit both files.
"""


class LockMismatch(RuntimeError):
    """The venv does not hold what requirements.lock pins."""


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of `-`, `_`, `.` as one `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, tuple[str, str]]:
    """{normalised name: (name, version)} from a lock file of `name==version` lines."""
    pins: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if match is None:
            raise LockMismatch(f"{path}:{number}: {raw!r} is not a `name==version` line; "
                               f"regenerate the lock with `make lock`")
        pins[normalise(match[1])] = (match[1], match[2])
    return pins


def installed() -> dict[str, tuple[str, str]]:
    """{normalised name: (name, version)} of the distributions the running interpreter sees,
    without the installer tools and the project itself."""
    found: dict[str, tuple[str, str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and normalise(name) not in UNLOCKED:
            found.setdefault(normalise(name), (name, dist.version))
    return found


def differences(lock: dict[str, tuple[str, str]], have: dict[str, tuple[str, str]]) -> list[str]:
    """One line per package that is missing, extra, or at another version than the lock's."""
    lines = []
    for key in sorted(lock.keys() | have.keys()):
        if key not in have:
            lines.append(f"{lock[key][0]}: missing (the lock pins {lock[key][1]})")
        elif key not in lock:
            lines.append(f"{have[key][0]}: {have[key][1]} is installed but not in the lock")
        elif have[key][1] != lock[key][1]:
            lines.append(f"{lock[key][0]}: {have[key][1]} is installed, the lock pins "
                         f"{lock[key][1]}")
    return lines


def pip_conflicts(python: str = sys.executable) -> list[str]:
    """What `pip check` reports for `python`'s environment, less the known false positives."""
    out = subprocess.run([python, "-m", "pip", "check"], check=False, capture_output=True,
                         text=True)
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return [line for line in lines
            if line not in PIP_CHECK_KNOWN and not line.startswith("No broken requirements")]


def check(lock_path: Path = LOCK, run_pip_check: bool = True) -> None:
    """Raise LockMismatch naming every package where the venv and the lock differ, and every
    conflict `pip check` reports."""
    lock_path = Path(lock_path)
    if not lock_path.is_file():
        raise LockMismatch(f"{lock_path} does not exist; write it with `make lock`")
    problems = differences(read_lock(lock_path), installed())
    if problems:
        raise LockMismatch(
            f"{sys.prefix} does not match {lock_path}:\n  " + "\n  ".join(problems)
            + f"\nFix: `make install` re-installs the locked versions; remove a package the "
              f"lock does not name with `{sys.prefix}/bin/pip uninstall NAME`, or start over "
              f"with `rm -rf {sys.prefix} && make install`. To change a version on purpose: "
              f"edit pyproject.toml, `make lock`, `make test`, commit both.")
    conflicts = pip_conflicts() if run_pip_check else []
    if conflicts:
        raise LockMismatch(f"`pip check` in {sys.prefix} reports conflicts:\n  "
                           + "\n  ".join(conflicts)
                           + f"\nThe lock {lock_path} is inconsistent: regenerate it with "
                             "`make lock` and run `make test`.")


def freeze() -> str:
    """The lock file's text for the running environment."""
    pins = sorted(installed().values(), key=lambda item: normalise(item[0]))
    return HEADER + "".join(f"{name}=={version}\n" for name, version in pins)


def main(argv: list[str] | None = None) -> int:
    """`check` (exit 1 with the differences) or `freeze` (the lock on stdout)."""
    parser = argparse.ArgumentParser(prog="python -m harness.environment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check_cmd = sub.add_parser("check", help="compare this venv with the lock")
    check_cmd.add_argument("--lock", type=Path, default=LOCK,
                           help="the lock file to compare with (default: the repository's "
                                "requirements.lock)")
    check_cmd.add_argument("--quick", action="store_true",
                           help="versions only (skip `pip check`); prints nothing on success")
    sub.add_parser("freeze", help="print the lock for this venv")
    args = parser.parse_args(argv)
    if args.command == "freeze":
        sys.stdout.write(freeze())
        return 0
    try:
        check(args.lock, run_pip_check=not args.quick)
    except LockMismatch as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not args.quick:
        print(f"{sys.prefix} matches {args.lock} ({len(read_lock(args.lock))} packages); "
              f"pip check: no conflicts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
