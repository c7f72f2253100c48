"""`python -m harness.micro --out DIR`: build the micro pair into DIR/base and DIR/mllm.

Options: --steps-scale F (scale both training stages, for quick experiments), --probe (print
quick in-process scores after building), --write-benchmarks (rewrite the benchmark files).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path

from harness.micro.build import DEFAULT_BUILD, build_pair


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m harness.micro", description=__doc__)
    parser.add_argument("--out", type=Path, help="directory to build into")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="scale both training stages (quick experiments; default 1)")
    parser.add_argument("--probe", action="store_true",
                        help="print quick in-process scores after building")
    parser.add_argument("--write-benchmarks", action="store_true",
                        help="rewrite the micro benchmark files of harness/micro/tasks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.write_benchmarks:
        from harness.micro.benchmarks import write_benchmarks

        for path in write_benchmarks():
            print(path)
    if args.out is None:
        if not args.write_benchmarks:
            parser.error("--out DIR is required")
        return
    build = copy.deepcopy(DEFAULT_BUILD)
    for stage in ("language", "visual"):
        build[stage]["steps"] = max(1, int(build[stage]["steps"] * args.steps_scale))
    stats = build_pair(args.out, build, progress=True)
    print(json.dumps(stats, indent=2))
    print(f"base LLM: {args.out / 'base'}\nMLLM:     {args.out / 'mllm'}")
    if args.probe:
        from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer
        from transformers import LlavaForConditionalGeneration

        from harness.micro import probe

        lm = AutoModelForCausalLM.from_pretrained(args.out / "base")
        tok = AutoTokenizer.from_pretrained(args.out / "base")
        print("base language:", probe.language_scores(lm, tok))
        mm = LlavaForConditionalGeneration.from_pretrained(args.out / "mllm")
        print("mllm vision:", probe.visual_scores(mm, AutoProcessor.from_pretrained(args.out / "mllm")))


if __name__ == "__main__":
    main()
