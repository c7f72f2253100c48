"""How every command-line entry point ends: a user error is one line on stderr and exit code 1
(2 for a bad command-line option), never a traceback; `HARNESS_DEBUG=1` shows the traceback.

User errors are the harness's own (`HarnessError`), file-system errors (permission, read-only,
not a directory, no space or no inodes, quota) and Hydra's composition errors (an unknown key,
group option or malformed override). Anything else is a bug and keeps its traceback.

    if __name__ == "__main__":
        run_main(main, elsewhere="--results DIR")
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from harness.errors import HarnessError, UsageError

DEBUG_ENV = "HARNESS_DEBUG"
# where `python -m harness` (and the other Hydra entry points) write: said after a file-system error
HYDRA_ELSEWHERE = ("paths.results=DIR (or HARNESS_RESULTS) for results and merges, "
                   "paths.cache=DIR (or HARNESS_CACHE) for built models")

_FS_PROBLEMS = {
    errno.EACCES: ("permission denied", "make it writable for you (chmod, chown)"),
    errno.EPERM: ("operation not permitted", "make it writable for you (chmod, chown)"),
    errno.EROFS: ("read-only file system", "use a writable file system"),
    errno.ENOTDIR: ("a part of this path is a file, not a directory",
                    "remove or rename that file"),
    errno.EEXIST: ("exists and is not a directory", "remove or rename it"),
    errno.EISDIR: ("is a directory where a file is expected", "remove or rename it"),
    errno.ENOSPC: ("no space left on the device, or no free inodes (df -h, df -i)",
                   "free space or inodes"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n)"),
}


def debug() -> bool:
    """True when HARNESS_DEBUG asks for tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _fs_error(err: BaseException) -> OSError | None:
    """The file-system OSError in `err`'s chain (a library may wrap it), or None."""
    for link in _chain(err):
        if isinstance(link, OSError) and link.errno in _FS_PROBLEMS:
            return link
    text = str(err)
    # safetensors' Rust writer reports a full disk as text only
    if "No space left on device" in text or "StorageFull" in text:
        return OSError(errno.ENOSPC, "no space", None)
    return None


def fs_message(err: OSError, elsewhere: str) -> str:
    """One line naming the path, the problem and what to do."""
    problem, fix = _FS_PROBLEMS[err.errno]
    path = err.filename if err.filename is not None else "(a file the harness writes)"
    target = f" -> {err.filename2}" if err.filename2 else ""
    where = f"; or write elsewhere: {elsewhere}" if elsewhere else ""
    return f"{path}{target}: {problem}. {fix[0].upper()}{fix[1:]}{where}"


def _hydra_message(err: BaseException) -> str | None:
    """One line for Hydra's composition and override errors (None: not one of them)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(err, (HydraException, OmegaConfBaseException)):
        return None
    for link in _chain(err):
        if isinstance(link, OmegaConfBaseException) and "not in struct" in str(link):
            from harness.config_check import unknown_key_message

            return unknown_key_message(str(getattr(link, "full_key", "") or link))
    parts = [str(err)]
    if isinstance(err.__cause__, OmegaConfBaseException):
        parts.append(str(err.__cause__))
    # Hydra's search-path listing helps nobody choose an option
    return " ".join(" ".join(parts).split("Config search path")[0].split())


def user_error(err: BaseException, elsewhere: str = HYDRA_ELSEWHERE) -> tuple[str, int] | None:
    """(one-line message, exit code) when `err` is a user error; None for a bug."""
    if isinstance(err, UsageError):
        return str(err), 2
    if isinstance(err, HarnessError):
        return str(err), 1
    found = _fs_error(err)
    if found is not None:
        return fs_message(found, elsewhere), 1
    hydra = _hydra_message(err)
    if hydra is not None:
        return hydra, 1
    return None


_DEFERRED: list[Exception] = []  # raised inside a Hydra task function, raised again by run_main
_RUNNING: list[bool] = []  # non-empty while run_main runs (a submitit job never calls it)


def defer_errors(task: Callable) -> Callable:
    """Wrap a Hydra task function (under `@hydra.main`): its exception is raised again by
    `run_main` once Hydra has returned, so Hydra adds no report of its own. Outside `run_main`
    (a job of Hydra's SLURM launcher, a test calling the function) the error is raised as is."""

    @functools.wraps(task)
    def wrapper(cfg):
        try:
            return task(cfg)
        except Exception as err:
            if not _RUNNING:
                raise
            _DEFERRED.append(err)
            return None

    return wrapper


def run_main(main: Callable[[], int | None], elsewhere: str = HYDRA_ELSEWHERE) -> NoReturn:
    """Run an entry point's `main` and exit with its code; a user error prints `error: <one
    line>` and exits 1 (2 for usage). `elsewhere` says how to point the entry point at other
    directories after a file-system error."""
    # Hydra would print its own multi-line report and a traceback; it raises instead, to us
    os.environ["HYDRA_FULL_ERROR"] = "1"
    _RUNNING.append(True)
    try:
        code = main()
        if _DEFERRED:
            raise _DEFERRED.pop()
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as err:
        found = user_error(err, elsewhere)
        if found is None or debug():
            raise
        message, code = found
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(code)
    sys.exit(code or 0)
