"""`python -m harness.bench` (= `make bench`): merge speed and memory against the I/O floor and
mergekit, on a synthetic pair with a real Llama / LLaVA layout.

Builds (once, cached under `<cache>/bench/<size>`) a bf16 base LLM and a LLaVA whose language
model is the base plus noise, then measures, alternating repetitions, each in a fresh process so
its peak RSS is its own:
- `floor`: the engine's whole path (every tensor of both inputs read, out/llm and out/mllm
  written, merge.json; with `--device cuda` also the copies to the GPU and back) by a method
  that keeps the tuned tensor: no arithmetic;
- every merge method of the harness (LLM ↔ LLaVA, on `--device`: cpu, or cuda for the GPU
  pipeline of harness/merge/gpu.py);
- mergekit (installed by the bench in its own venv) on the same language-model tensors for the
  methods it has (LLM ↔ LLM), unless `--no-mergekit`, with its performance flags
  (`mergekit_flags`: asynchronous writes, one thread per core, `--cuda` for `--device cuda`).
Prints seconds (median), ratio to the floor, ratio to mergekit and peak RSS, and writes
results/bench/bench_<size>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness import paths
from harness.errors import ConfigError
from harness.merge.buffers import MEMORY_MB
from harness.merge.engine import pick_device
from harness.merge.registry import TUNED, get_method, register

SIZES = {
    # about 1.1 B parameters in the language model, and half of it
    "1b": {"hidden": 2048, "layers": 16, "ffn": 5632, "vocab": 32000, "heads": 16},
    "0.5b": {"hidden": 2048, "layers": 8, "ffn": 5632, "vocab": 32000, "heads": 16},
    # Llama-3-8B's tensors (grouped k/v: 8 heads of 128) in 4 of its 32 layers: ~1.9 B parameters
    "8b-layers": {"hidden": 4096, "layers": 4, "ffn": 14336, "vocab": 128256, "heads": 32,
                  "kv_heads": 8},
    "tiny": {"hidden": 256, "layers": 2, "ffn": 704, "vocab": 1000, "heads": 4},
}
VISION = {"hidden": 1024, "layers": 4, "ffn": 4096, "image": 336, "patch": 14}
# every method merges with its defaults (its parameter dataclass: the CLI's defaults too)
METHODS = ("base", "mllm", "model_soup", "task_arithmetic", "ties", "dare", "breadcrumbs", "della",
           "neuron_fusion")
MERGEKIT_PACKAGE = "mergekit==0.1.5"  # the release docs/performance.md compares against
# harness method → mergekit's method and the harness parameters it takes (scale is its weight)
MERGEKIT = {"task_arithmetic": ("task_arithmetic", ()), "ties": ("ties", ("density",)),
            "dare": ("dare_linear", ("density",)),
            "breadcrumbs": ("breadcrumbs", ("density", "gamma")),
            "della": ("della", ("density", "epsilon"))}


def mergekit_params(method: str) -> tuple[str, dict]:
    """(mergekit's method name, its parameters) for a harness method at the harness's defaults."""
    from harness.merge.registry import default_params

    name, keys = MERGEKIT[method]
    defaults = default_params(get_method(method))
    return name, {"weight": defaults["scale"], **{k: defaults[k] for k in keys}}


def _lm_shapes(s: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, f, v = s["hidden"], s["ffn"], s["vocab"]
    kv = h // s["heads"] * s.get("kv_heads", s["heads"])  # rows of k_proj and v_proj
    out = [("model.embed_tokens.weight", (v, h))]
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        out += [(p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, h)),
                (p + "mlp.gate_proj.weight", (f, h)), (p + "mlp.up_proj.weight", (f, h)),
                (p + "mlp.down_proj.weight", (h, f)), (p + "input_layernorm.weight", (h,)),
                (p + "post_attention_layernorm.weight", (h,))]
    return out + [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]


def _vision_shapes(s: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, f = VISION["hidden"], VISION["ffn"]
    out = []
    for i in range(VISION["layers"]):
        p = f"model.vision_tower.vision_model.encoder.layers.{i}."
        for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"):
            out += [(p + n + ".weight", (h, h)), (p + n + ".bias", (h,))]
        out += [(p + "mlp.fc1.weight", (f, h)), (p + "mlp.fc1.bias", (f,)),
                (p + "mlp.fc2.weight", (h, f)), (p + "mlp.fc2.bias", (h,))]
    return out + [("model.multi_modal_projector.linear_1.weight", (s["hidden"], h)),
                  ("model.multi_modal_projector.linear_2.weight", (s["hidden"], s["hidden"]))]


def _llama_config(s: dict):
    """The base LLM's LlamaConfig for a size of SIZES."""
    from transformers import LlamaConfig

    llama = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"],
                        intermediate_size=s["ffn"], num_hidden_layers=s["layers"],
                        num_attention_heads=s["heads"],
                        num_key_value_heads=s.get("kv_heads", s["heads"]),
                        tie_word_embeddings=False, torch_dtype="bfloat16")
    llama.architectures = ["LlamaForCausalLM"]
    return llama


def build_pair(root: Path, s: dict) -> tuple[Path, Path]:
    """Write the synthetic base LLM and LLaVA (streaming, so memory stays flat)."""
    from transformers import CLIPVisionConfig, LlavaConfig

    from harness.models.checkpoint import PlannedWriter

    base, tuned = root / "base", root / "llava"
    if (root / "done").is_file():
        return base, tuned
    llama = _llama_config(s)
    lm = _lm_shapes(s)
    tuned_names = [("model.language_model." + n[len("model."):]) if n.startswith("model.") else n
                   for n, _ in lm]
    bw = PlannedWriter(base, [(n, shape, "BF16") for n, shape in lm], 2000 * 2**20)
    tw = PlannedWriter(tuned, [(t, shape, "BF16") for t, (_, shape) in zip(tuned_names, lm)]
                       + [(n, shape, "BF16") for n, shape in _vision_shapes(s)], 2000 * 2**20)
    gen = torch.Generator().manual_seed(0)
    for name, shape in _lm_shapes(s):
        w = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
        bw.add(name, w)
        noise = (torch.randn(shape, generator=gen) * 0.002).to(torch.bfloat16)
        new = name.replace("model.", "model.language_model.", 1) if name.startswith("model.") \
            else name
        tw.add(new, w + noise)
    for name, shape in _vision_shapes(s):
        tw.add(name, (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16))
    bw.close()
    tw.close()
    llama.save_pretrained(base)
    vision = CLIPVisionConfig(hidden_size=VISION["hidden"], intermediate_size=VISION["ffn"],
                              num_hidden_layers=VISION["layers"], image_size=VISION["image"],
                              patch_size=VISION["patch"], num_attention_heads=16)
    LlavaConfig(vision_config=vision.to_dict(), text_config=llama.to_dict()).save_pretrained(tuned)
    (root / "done").write_text("ok")
    return base, tuned


# ru_maxrss survives exec on Linux (a child would report its parent's peak): read VmHWM instead
_PEAK = """
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

_WARM_KERNELS = """
import torch
from harness.merge import kernels
for family in ("topk", "dare", "della"):
    kernels.warm(family, torch.bfloat16)
print("{}")
"""

_MERGE = _PEAK + """
import json, sys, time
import harness
import transformers
from harness.bench import register_floor
from harness.merge import merge_checkpoints
from harness.merge.registry import get_method
register_floor()
get_method("base")
t = time.perf_counter()
merge_checkpoints(sys.argv[1], sys.argv[2], sys.argv[4], json.loads(sys.argv[5]), out=sys.argv[3],
                  device=sys.argv[6], force=True, progress=False, memory_mb=int(sys.argv[7]),
                  kernels=sys.argv[8])
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": peak_rss_mb()}))
"""


@dataclass(frozen=True)
class FloorParams:
    """No parameters."""


def _keep_tuned(base, tuned, p: FloorParams, ctx) -> str:
    return TUNED


def register_floor() -> None:
    """Register `floor`, a method that reads both inputs and writes the tuned tensor unchanged:
    a merge by it is the engine's whole path (reads into the pool, prefetch, finiteness check,
    both writers, the output files) without any method's arithmetic. Called only in the bench's
    own measuring processes, so the floor never appears among the harness's methods."""
    register("floor", FloorParams, _keep_tuned)


def _merge_args(base: Path, tuned: Path, out: Path, method: str, params: dict, device: str,
                memory_mb: int, kernels: str) -> list[str]:
    return [str(base), str(tuned), str(out), method, json.dumps(params), device, str(memory_mb),
            kernels]


def _run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=False, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mergekit(venv: Path) -> Path:
    """A venv with mergekit (its own environment; never part of the harness's), installed from
    the package index on first use; ConfigError when that fails (offline, say)."""
    py = venv / "bin" / "python"
    if not (venv / "ok").is_file():
        for cmd in ([sys.executable, "-m", "venv", str(venv)],
                    [str(py), "-m", "pip", "install", "-q", "torch==2.14.1", MERGEKIT_PACKAGE]):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
                raise ConfigError(
                    f"could not install mergekit into {venv} (`{' '.join(cmd)}` exited "
                    f"{proc.returncode}):\n{tail}\nThe bench installs it from the package index "
                    f"into its own venv: on a machine without one, run with --no-mergekit, or "
                    f"install {MERGEKIT_PACKAGE} into {venv} and create {venv / 'ok'}")
        (venv / "ok").write_text("ok")
    return venv / "bin" / "mergekit-yaml"


def mergekit_flags(device: str) -> list[str]:
    """mergekit-yaml's performance options at their best for this machine: its README's
    `--lazy-unpickle` (no effect on safetensors inputs), asynchronous shard writes, one thread
    per core, and the GPU when the harness merges on one."""
    flags = ["--lazy-unpickle", "--async-write", "-j", str(os.cpu_count() or 1)]
    return flags + (["--cuda"] if device.startswith("cuda") else [])


def _run_mergekit(exe: Path, base: Path, tuned_llm: Path, out: Path, method: str,
                  flags: list[str]) -> dict:
    name, params = mergekit_params(method)
    cfg = out.parent / f"mergekit_{method}.yml"
    lines = [f"merge_method: {name}", f"base_model: {base}", "dtype: bfloat16", "models:",
             f"  - model: {tuned_llm}", "    parameters:"]
    lines += [f"      {k}: {v}" for k, v in params.items()]
    cfg.write_text("\n".join(lines) + "\n")
    code = ("import json, resource, subprocess, sys, time\n"
            "t = time.perf_counter()\n"
            "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
            "r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
            "print(json.dumps({'seconds': time.perf_counter() - t, 'peak_rss_mb': r}))\n")
    return _run(code, str(exe), str(cfg), str(out), "--no-copy-tokenizer",
                "--no-write-model-card", *flags)


def _clear_outputs(scratch: Path) -> None:
    """Remove the merge and floor outputs under the bench's scratch directory (directories of
    about twice the model each; its mergekit configs stay)."""
    if scratch.is_dir():
        for path in scratch.iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def bench(size: str, reps: int, methods: list[str], with_mergekit: bool, cache: Path,
          results: Path, device: str = "cpu", memory_mb: int = MEMORY_MB,
          mergekit_reps: int | None = None, kernels: str = "auto") -> list[dict]:
    """Run the measurements for one size; return one row per measurement. mergekit runs in the
    first `mergekit_reps` repetitions only (default: all)."""
    mergekit_reps = reps if mergekit_reps is None else mergekit_reps
    s = SIZES[size]
    root = cache / "bench" / size
    base, tuned = build_pair(root, s)
    scratch = root / "scratch"
    times: dict[str, list[dict]] = {}
    exe = tuned_llm = None
    if with_mergekit:
        exe = _mergekit(cache / "bench" / "mergekit-venv")
        tuned_llm = root / "tuned_llm"
        if not (tuned_llm / "llm").is_dir():
            from harness.merge import merge_checkpoints

            merge_checkpoints(base, tuned, "mllm", {}, out=tuned_llm, progress=False)
        tuned_llm = tuned_llm / "llm"
    # one untimed floor first: the first process after the build or after idling pays for
    # cold caches (measured 2x here), which would flatter every later ratio to the floor;
    # and the fused kernels compiled into numba's on-disk cache, as after a machine's first merge
    _clear_outputs(scratch)  # what an interrupted bench left (each about twice the model)
    try:
        _run(_WARM_KERNELS)
        warm_up = _merge_args(base, tuned, scratch / "warmup", "floor", {}, device, memory_mb,
                              kernels)
        _run(_MERGE, *warm_up)
        _clear_outputs(scratch)
        for rep in range(reps):
            order = ["floor"] + methods + ([f"mergekit:{m}" for m in methods if m in MERGEKIT]
                                           if with_mergekit and rep < mergekit_reps else [])
            for item in order:
                if item == "floor" and rep > 0 and rep - 1 < mergekit_reps and with_mergekit:
                    # mergekit's 4-7 GB evicted the inputs from the page cache: read them back
                    # untimed, as before the first repetition
                    _run(_MERGE, *warm_up)
                    _clear_outputs(scratch)
                out = scratch / item.replace(":", "_")
                # every measurement starts with no dirty pages: a merge writes ~2x the model,
                # close to the kernel's dirty limit, and the previous run's writeback would
                # otherwise land on this one (measured: the same floor 3.0 s or 5.4 s)
                os.sync()
                if item.startswith("mergekit:"):
                    r = _run_mergekit(exe, base, tuned_llm, out, item.split(":")[1],
                                      mergekit_flags(device))
                else:
                    r = _run(_MERGE, *_merge_args(base, tuned, out, item, {},
                                                  device, memory_mb, kernels))
                times.setdefault(item, []).append(r)
                print(f"[{size} rep {rep + 1}/{reps}] {item}: {r['seconds']:.2f} s, "
                      f"{r['peak_rss_mb']:.0f} MB", flush=True)
                _clear_outputs(scratch)
    finally:
        _clear_outputs(scratch)
    floor = statistics.median(r["seconds"] for r in times["floor"])
    rows = []
    for item, rs in times.items():
        sec = statistics.median(r["seconds"] for r in rs)
        mk = times.get(f"mergekit:{item}")
        rows.append({"size": size, "what": item, "runs": len(rs), "seconds": round(sec, 3),
                     "x_floor": round(sec / floor, 3),
                     "x_mergekit": round(sec / statistics.median(r["seconds"] for r in mk), 3)
                     if mk else None,
                     "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs), 1)})
    results.mkdir(parents=True, exist_ok=True)
    (results / f"bench_{size}.json").write_text(json.dumps(rows, indent=2))
    lines = ["| what | runs | seconds (median) | × floor | × mergekit | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        mk = "" if r["x_mergekit"] is None else f"{r['x_mergekit']:.2f}"
        lines.append(f"| {r['what']} | {r['runs']} | {r['seconds']:.2f} | {r['x_floor']:.2f} | "
                     f"{mk} | "
                     f"{r['peak_rss_mb']:.0f} |")
    (results / f"bench_{size}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (`eval ...`: the evaluation benchmark, harness/bench_eval.py)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"]:
        from harness.bench_eval import main as eval_main

        return eval_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1b,0.5b", help=f"comma list of {', '.join(SIZES)}")
    p.add_argument("--reps", type=int, default=3,
                   help="repetitions per method; the median is reported (default 3)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma list of methods to time (default: all)")
    p.add_argument("--mergekit", action=argparse.BooleanOptionalAction, default=True,
                   help="also time mergekit, installed in its own venv (default: on)")
    p.add_argument("--cache", type=Path,
                   default=paths.cache_root(),
                   help="where the synthetic pairs are built once (default: HARNESS_CACHE or "
                        ".cache/harness)")
    p.add_argument("--results", type=Path,
                   default=paths.results_root() / "bench",
                   help="where bench_<size>.{md,json} go (default: <HARNESS_RESULTS or "
                        "results>/bench)")
    p.add_argument("--device", default="cpu", help="merge.device of the harness's merges")
    p.add_argument("--mergekit-reps", type=int, default=1,
                   help="time mergekit in the first N repetitions only (default 1: its merges "
                        "take minutes, and its ratio to the harness is several-fold)")
    p.add_argument("--memory-mb", type=int, default=MEMORY_MB,
                   help="merge.memory_mb (buffer budget) of the merges and of the floor")
    p.add_argument("--kernels", default="auto", choices=("auto", "torch"),
                   help="merge.kernels of the harness's merges (torch: without the accelerator)")
    a = p.parse_args(argv)
    for flag, value, least in (("--reps", a.reps, 1), ("--mergekit-reps", a.mergekit_reps, 0),
                               ("--memory-mb", a.memory_mb, 1)):
        if value < least:
            p.error(f"{flag} {value}: must be at least {least}")
    t = time.perf_counter()
    sizes, methods = a.sizes.split(","), a.methods.split(",")
    for size in sizes:
        if size not in SIZES:
            raise ConfigError(f"--sizes: unknown size {size!r}; choose from {', '.join(SIZES)}")
    for method in methods:
        get_method(method)  # ConfigError naming the valid methods
    pick_device(a.device)  # cuda without a GPU: ConfigError
    for size in sizes:
        bench(size, a.reps, methods, a.mergekit, a.cache, a.results, a.device,
              a.memory_mb, a.mergekit_reps, a.kernels)
    print(f"bench done in {time.perf_counter() - t:.0f} s; tables in {a.results}")


if __name__ == "__main__":
    from harness.cli import run_main

    run_main(main, elsewhere="--results DIR and --cache DIR")
