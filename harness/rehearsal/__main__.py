"""`python -m harness.rehearsal --out DIR [--only mmlu,gqa,...]`: write the rehearsal mirror
and print one line per repository written."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.rehearsal.data import BENCHMARKS, SEED, write_mirror


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, write the mirror, print what was written; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m harness.rehearsal", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="mirror root to write into")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated benchmarks (default: all): {','.join(BENCHMARKS)}")
    parser.add_argument("--seed", type=int, default=SEED, help="content seed (default %(default)s)")
    args = parser.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()] if args.only else None
    start = time.perf_counter()
    try:
        manifest = write_mirror(args.out, only, seed=args.seed)
    except ValueError as err:
        parser.error(str(err))
    repos = {repo: bench for bench, ids in manifest.items() for repo in ids}
    for repo, bench in repos.items():
        print(f"{bench:15s} {args.out / repo}")
    print(f"wrote {len(repos)} repositories for {len(manifest)} benchmarks in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    from harness.cli import run_main

    run_main(main, elsewhere="--out DIR")
