"""Portable CPU numerics: the same float bits on any x86-64 CPU with AVX2, at any thread count.

torch picks its CPU kernels by what the processor offers (ATen's AVX2 or AVX-512 code, MKL's
per-ISA GEMM branches), and those kernels round differently. The micro pair is trained here on
the CPU, and its training is sensitive to the last bit: built on an AVX-512 Xeon it scores
arith 40 / copy 97 for the base LLM, built with AVX2 kernels on the same machine 85 / 85. So the
harness pins the kernels before torch computes anything (it reads these variables lazily, at
the first operation):

- ATEN_CPU_CAPABILITY=avx2: ATen's vectorised kernels use AVX2 even where AVX-512 exists;
- MKL_CBWR=AVX2,STRICT: MKL's conditional numerical reproducibility, AVX2 branch; STRICT makes
  results independent of the thread count and of array alignment;
- ONEDNN_MAX_CPU_ISA=AVX2: oneDNN (convolutions) stays on AVX2 code.

MKL honours `MKL_CBWR=AVX2` on Intel processors only: on any other vendor it runs its AUTO
branch instead (Intel's CNR documentation), so an AMD machine trains a micro pair with other
bits than an Intel one, and scores it differently. The vendor is therefore part of the numerics
identity on non-Intel CPUs (`mkl_branch: auto`): a cache shared by Intel and AMD nodes keeps
their micro pairs apart, and tests/data/micro_expected_scores.json holds the expected scores per
vendor.

Cost: a micro training step is 1.1–1.3x slower than with the native kernels. GPU work is not
affected. `HARNESS_CPU_NUMERICS=native` turns this off (for CPU-heavy work on real models where
speed matters more than bit-identity with other machines); a variable the user set wins.
"""

from __future__ import annotations

import os
import platform
import sys

MODE_VAR = "HARNESS_CPU_NUMERICS"
MODES = ("portable", "native")
PORTABLE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT",
            "ONEDNN_MAX_CPU_ISA": "AVX2"}


def mode() -> str:
    """The numerics mode from HARNESS_CPU_NUMERICS (default portable)."""
    value = os.environ.get(MODE_VAR, "portable").strip().lower() or "portable"
    if value not in MODES:
        raise ValueError(f"{MODE_VAR}={value!r} is not valid; choose one of {', '.join(MODES)}")
    return value


def apply() -> None:
    """Set the portable kernel variables (unless the user set them) in portable mode. Effective
    only before torch's first CPU operation in this process."""
    if mode() == "portable":
        for var, value in PORTABLE.items():
            os.environ.setdefault(var, value)


def _cpuinfo(field: str) -> str | None:
    """The first `field` of /proc/cpuinfo (None where there is no such file or field)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """The CPU vendor string (`GenuineIntel`, `AuthenticAMD`, ...), or the machine type when
    /proc/cpuinfo does not say."""
    return _cpuinfo("vendor_id") or platform.machine()


def describe() -> dict:
    """What the CPU numerics of this process are: mode, kernel variables, the ATen capability
    in effect, the CPU model, torch's thread count (provenance of a result)."""
    out = {"mode": mode(), **{var.lower(): os.environ.get(var) for var in PORTABLE},
           "cpu": _cpu_model(), "cpu_vendor": cpu_vendor()}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["aten_capability"] = torch.backends.cpu.get_cpu_capability()
        out["torch_threads"] = torch.get_num_threads()
    return out


def identity() -> dict:
    """The part of describe() that decides the bits of a CPU computation (not the CPU model or
    thread count, which portable mode makes irrelevant)."""
    info = describe()
    if info["mode"] == "native":
        return {"mode": "native", "cpu": info["cpu"]}
    out = {key: info.get(key) for key in ("mode", *(v.lower() for v in PORTABLE),
                                          "aten_capability")}
    if info["cpu_vendor"] != "GenuineIntel":  # MKL_CBWR=AVX2 is ignored: its AUTO branch runs
        out["mkl_branch"] = "auto"
    return out
