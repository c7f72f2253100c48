"""`python -m harness.gpu_check` (`make gpu-check`): is this GPU node ready for a sweep?

Run it on one node of the cluster, in the environment the sweep will use, before submitting:

1. CUDA: torch sees a device.
2. gpu tests: the CUDA merge tests (tests/test_gpu.py, marked `gpu`) and the CUDA pipeline
   tests (tests/test_cuda_pipeline.py).
3. rehearsal data: the mini copies of the paper13 datasets (`harness.rehearsal`).
4. per family (one twin per `family` of conf/pair/twin_*.yaml): the twin merged with
   `merge.device=cuda` and evaluated with `eval.device=cuda` on paper13 through lm-eval and
   lmms-eval, offline, on the rehearsal data.

Each step prints one verdict line (PASS, FAIL with the reason, or SKIP with the reason). Nothing
is downloaded; results go to a temporary folder (`--results` to choose, `--keep` to keep it).
On a machine without CUDA the CUDA steps are skipped, so the check runs as far as it can.
Exit status: 1 when a step failed, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
GPU_TESTS = ("tests/test_gpu.py", "tests/test_cuda_pipeline.py")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass
class Step:
    """One verdict line."""

    name: str
    verdict: str        # PASS | FAIL | SKIP
    detail: str
    seconds: float = 0.0

    def line(self) -> str:
        """The step as one line."""
        took = f" ({self.seconds:.0f} s)" if self.seconds else ""
        return f"{self.verdict:<4}  {self.name}: {self.detail}{took}"


def twins_per_family(conf: Path = ROOT / "conf" / "pair") -> list[str]:
    """The first twin pair config (by name) of each `family` in conf/pair/twin_*.yaml."""
    chosen: dict[str, str] = {}
    for path in sorted(conf.glob("twin_*.yaml")):
        family = (yaml.safe_load(path.read_text()) or {}).get("family", path.stem)
        chosen.setdefault(str(family), path.stem)
    return sorted(chosen.values())


def _tail(text: str, lines: int = 1) -> str:
    """The last non-empty lines of a process's output, on one line."""
    kept = [x.strip() for x in text.splitlines() if x.strip()][-lines:]
    return " | ".join(kept)[-300:]


def _run(cmd: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **OFFLINE, **env},
                              capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {err.timeout} s")


def cuda_step() -> Step:
    """Whether torch sees a CUDA device (its name), or why not."""
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU build of torch)"
        return Step("CUDA", "SKIP", f"no CUDA device visible to torch {torch.__version__} "
                                    f"(its CUDA: {built}); the CUDA steps below are skipped")
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return Step("CUDA", "PASS", f"{names}; torch {torch.__version__}, CUDA {torch.version.cuda}")


def gpu_tests_step(cuda: bool, timeout: int) -> Step:
    """pytest on the CUDA test files."""
    name = "gpu tests (" + " ".join(GPU_TESTS) + ")"
    if not cuda:
        return Step(name, "SKIP", "no CUDA device")
    start = time.time()
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 *GPU_TESTS], {}, timeout)
    took = time.time() - start
    summary = _tail(proc.stdout)
    if proc.returncode != 0 or "passed" not in summary:
        return Step(name, "FAIL", summary or _tail(proc.stderr), took)
    return Step(name, "PASS", summary, took)


def data_step(out: Path, timeout: int) -> Step:
    """The rehearsal's mini datasets written to `out`."""
    start = time.time()
    proc = _run([sys.executable, "-m", "harness.rehearsal", "--out", str(out)], {}, timeout)
    took = time.time() - start
    if proc.returncode != 0:
        return Step("rehearsal data", "FAIL", _tail(proc.stderr), took)
    return Step("rehearsal data", "PASS", f"written to {out}", took)


def pair_step(pair: str, method: str, data: Path | None, results: Path, device: str,
              cuda: bool, timeout: int) -> Step:
    """`pair` merged and evaluated on `device` (both tools, paper13, rehearsal data)."""
    name = (f"{pair}: {method} merged (merge.device={device}), paper13 on {device} "
            f"(lm-eval + lmms-eval)")
    if device == "cuda" and not cuda:
        return Step(name, "SKIP", "no CUDA device")
    if data is None:
        return Step(name, "SKIP", "no rehearsal data (its step failed)")
    out = results / pair
    start = time.time()
    proc = _run([sys.executable, "-m", "harness", "+experiment=rehearsal", "hydra.mode=RUN",
                 f"pair={pair}", f"method={method}", "eval=paper13", f"eval.data_root={data}",
                 f"eval.device={device}", f"merge.device={device}",
                 f"eval.dtype={'bfloat16' if device == 'cuda' else 'float32'}",
                 "merge.progress=false"],
                {"HARNESS_RESULTS": str(out), "HARNESS_WANDB_MODE": "disabled",
                 "HF_HOME": str(out / "hf")}, timeout)
    took = time.time() - start
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    if proc.returncode != 0:
        return Step(name, "FAIL", (errors[0] if errors else _tail(proc.stderr))[:400], took)
    records = sorted((out / "runs").glob("*/result.json"))
    if not records:
        return Step(name, "FAIL", f"no result.json under {out / 'runs'}", took)
    record = json.loads(records[0].read_text())
    tools = sorted({s["tool"] for s in record["scores"].values()})
    where = (record["merge"].get("device"), record["config"]["eval"]["device"])
    if where != (device, device):
        return Step(name, "FAIL", f"ran on merge/eval devices {where}, not {device}", took)
    return Step(name, "PASS", f"{len(record['scores'])} benchmarks scored through "
                              f"{' + '.join(tools)}", took)


def main(argv: list[str] | None = None) -> int:
    """Run every step, print one line each, return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m harness.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=None,
                        help="folder for data and results (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the results folder")
    parser.add_argument("--pairs", default=None,
                        help="comma-separated twin pairs (default: one twin per family)")
    parser.add_argument("--method", default="neuron_fusion", help="merge method of the runs")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per step")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="device of the merge and evaluation runs (cpu: to check the "
                             "check itself on a machine without a GPU)")
    args = parser.parse_args(argv)
    pairs = args.pairs.split(",") if args.pairs else twins_per_family()
    known = sorted(p.stem for p in (ROOT / "conf" / "pair").glob("*.yaml"))
    unknown = [p for p in pairs if p not in known]
    if unknown:
        parser.error(f"--pairs: no pair config {unknown[0]!r} in conf/pair; valid: "
                     f"{', '.join(known)}")
    made = args.results is None
    results = Path(tempfile.mkdtemp(prefix="gpu_check_")) if made else args.results
    results.mkdir(parents=True, exist_ok=True)
    print(f"gpu-check: results under {results}", flush=True)
    steps: list[Step] = []

    def record(step: Step) -> Step:
        steps.append(step)
        print(step.line(), flush=True)
        return step

    try:
        cuda = record(cuda_step()).verdict == "PASS"
        record(gpu_tests_step(cuda, args.timeout))
        data = results / "rehearsal"
        ok = record(data_step(data, args.timeout)).verdict == "PASS"
        for pair in pairs:
            record(pair_step(pair, args.method, data if ok else None, results / "runs",
                             args.device, cuda, args.timeout))
    finally:
        if made and not args.keep:
            shutil.rmtree(results, ignore_errors=True)
    counts = {v: sum(s.verdict == v for s in steps) for v in ("PASS", "FAIL", "SKIP")}
    if counts["FAIL"]:
        verdict = "NOT READY: fix the failed steps before submitting a sweep"
    elif counts["SKIP"]:
        verdict = "INCOMPLETE: steps were skipped (run this on a GPU node)"
    else:
        verdict = "READY for a sweep on this node"
    print(f"gpu-check: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} "
          f"skipped. {verdict}", flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
