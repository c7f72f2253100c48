"""`python -m harness.selection submit|plan [overrides ...] [--dry-run]`

`submit` advances a selection (e.g. `+experiment=paper_select pair=llava_next_llama3_8b`) on
SLURM by one batch: the next halving round, or the final evaluations, as one array job; run it
again when that job has finished (harness/selection/slurm.py). `plan` prints the plan only.
"""

from __future__ import annotations

import argparse
import logging
import sys

from harness.errors import HarnessError


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; user errors print one line and exit 1."""
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    ap = argparse.ArgumentParser(prog="python -m harness.selection", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("submit", "plan"))
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +experiment=paper_select")
    ap.add_argument("--dry-run", action="store_true",
                    help="write the next job into a temporary directory; submit nothing")
    args = ap.parse_args(argv)
    try:
        if args.command == "plan":
            from hydra import compose, initialize_config_dir

            from harness.selection import print_plan
            from harness.slurm.sweep import CONF_DIR

            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                print_plan(compose("config", overrides=args.overrides))
            return 0
        from harness.selection.slurm import describe, step

        print(describe(step(args.overrides, dry_run=args.dry_run), args.overrides))
        return 0
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
