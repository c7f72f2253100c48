"""`python -m harness.bench eval [overrides] [--docs 2,6] [--only a,b]` (= `make bench-eval`):
what one merged model costs to evaluate, projected from a few docs per task.

Merges the pair once (`method=mllm` unless overridden: every merge of a pair has the same size),
then evaluates every benchmark of the suite (`eval=paper13` unless overridden) in its own tool
call at two small numbers of docs per task (`--docs`, conf/bench/eval.yaml), on `eval.device`
with the suite's batch size and dtype. Each benchmark's seconds fit `fixed + per_doc x docs`
through the two points; the projection is `fixed + per_doc x full_docs`, where `full_docs` is the
row count of the task's evaluation split in the `eval.data_root` mirror, or the dataset card's
size (conf/bench/eval.yaml) where the mirror is the rehearsal's mini copy, or the task's own
size when both runs evaluated all of it. On a twin (random weights, which never stop
generating) generation is capped at each task's typical answer length (`answer_tokens`).
A twin with no `eval.data_root` reads the rehearsal mirror (`<cache>/rehearsal`, written if
absent). Prints the table and writes `<results>/bench/eval_<pair>_<suite>_<device>.{md,json}`.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from harness.errors import ConfigError, HarnessError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf" / "bench" / "eval.yaml"


def load_settings(path: Path = CONF) -> dict:
    """The bench's settings: docs, full_docs (per task id), answer_tokens (per task id)."""
    return yaml.safe_load(Path(path).read_text())


def compose(overrides: list[str]) -> DictConfig:
    """The run config the command line names, with the bench's defaults (method=mllm,
    eval=paper13) before the user's overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=["method=mllm", "eval=paper13", *overrides])


def _is_rehearsal(root: Path | None, path: str) -> bool:
    readme = Path(root) / path / "README.md" if root else None
    return bool(readme and readme.is_file() and "(rehearsal copy)" in readme.read_text())


def _leaf_configs(bench, manager) -> list[dict]:
    from harness.eval import mirror

    return (mirror._lm_eval_leaves(manager, bench.task, set()) if bench.tool == "lm-eval"
            else mirror._lmms_eval_leaves(manager, bench.task))


def mirror_docs(bench, manager, root: Path | None) -> int | None:
    """Rows of the benchmark's evaluation split(s) in a real hub-layout mirror (None: no
    mirror, a rehearsal copy, a local task or an unreadable card)."""
    import pyarrow.parquet as pq

    from harness.eval import mirror

    if root is None:
        return None
    total = 0
    leaves = _leaf_configs(bench, manager)
    for cfg in leaves:
        path, split = cfg.get("dataset_path"), cfg.get("test_split") or cfg.get(
            "validation_split")
        if not isinstance(path, str) or not split or _is_rehearsal(root, path):
            return None
        card = mirror._front_matter(Path(root) / path / "README.md")
        patterns = mirror._config_files(card).get(cfg.get("dataset_name") or "default",
                                                  {}).get(split)
        files = [f for p in patterns or () for f in sorted((Path(root) / path).glob(p))]
        if not files:
            return None
        total += sum(pq.read_metadata(f).num_rows for f in files)
    return total if leaves else None


def full_docs(bench, manager, root: Path | None, table: dict,
              measured: list[dict]) -> tuple[int | None, str]:
    """(full number of docs, where it comes from) of one benchmark."""
    counted = mirror_docs(bench, manager, root)
    if counted is not None:
        return counted, "mirror"
    if bench.task in table:
        return int(table[bench.task]), "dataset card"
    docs = [m["docs"] for m in measured]
    if len(set(docs)) == 1 and docs[0] > 0:  # both runs saw the whole task
        return docs[0], "whole task"
    return None, "unknown"


def fit(points: list[dict]) -> tuple[float, float]:
    """(fixed seconds, seconds per doc) through the first and last measured points; a noisy
    pair (the larger run faster) puts all time on the docs of the larger run."""
    a, b = points[0], points[-1]
    if b["docs"] > a["docs"] and b["seconds"] >= a["seconds"]:
        per_doc = (b["seconds"] - a["seconds"]) / (b["docs"] - a["docs"])
        return max(a["seconds"] - per_doc * a["docs"], 0.0), per_doc
    return 0.0, b["seconds"] / max(b["docs"], 1)


def _bench_cfg(eval_cfg: DictConfig, name: str, docs: int, cap: int | None) -> DictConfig:
    """`eval_cfg` restricted to one benchmark at a limit, with its generation cap."""
    cfg = copy.deepcopy(eval_cfg)
    with open_dict(cfg):
        cfg.benchmarks = {name: OmegaConf.to_container(eval_cfg.benchmarks[name])}
        cfg.limit = int(docs)
        cfg.request_cache = False  # a cached answer costs nothing: every request is computed
        if cap is not None:
            cfg.max_new_tokens = int(cap)
    return cfg


def measure(cfg: DictConfig, benches: list, docs_list: list[int], caps: dict, llm_dir: Path,
            mllm_dir: Path | None, work: Path, managers: dict) -> dict[str, list[dict]]:
    """benchmark → one cost entry per number of docs (one tool call each, as in a run)."""
    from harness.eval import _device
    from harness.eval.calls import run_benchmark
    from harness.eval.suite import data_root

    root, device = data_root(cfg.eval), _device(cfg.eval)
    if mllm_dir is None and any(b.tool == "lmms-eval" for b in benches):
        raise ConfigError(f"pair={cfg.pair.name} has no multimodal model to run the visual "
                          f"benchmarks of eval={cfg.eval.name} on; choose them out with --only")

    def call(b, docs: int, run_dir: Path) -> dict:
        bcfg = _bench_cfg(cfg.eval, b.name, docs, caps.get(b.task))
        return run_benchmark(b, bcfg, llm_dir, mllm_dir, run_dir, managers, device,
                             int(cfg.seed), root)[1]

    # a first call of each tool pays its imports and compilations once: not measured
    for tool in dict.fromkeys(b.tool for b in benches):
        first = next(b for b in benches if b.tool == tool)
        log.info("bench eval: warm-up call of %s (%s)", tool, first.name)
        call(first, docs_list[0], work / f"warmup_{first.name}")
    out: dict[str, list[dict]] = {b.name: [] for b in benches}
    for docs in docs_list:
        for b in benches:
            log.info("bench eval: %s at %d docs per task", b.name, docs)
            out[b.name].append({"limit": docs, **call(b, docs, work / f"{b.name}_{docs}")})
    return out


def project(benches, measured: dict, sizes: dict) -> list[dict]:
    """One row per benchmark: measured points, fit and projected seconds for the full task."""
    rows = []
    for b in benches:
        points = measured[b.name]
        fixed, per_doc = fit(points)
        full, source = sizes[b.name]
        last = points[-1]
        req_per_doc = last["requests"] / last["docs"] if last["docs"] else None
        rows.append({"benchmark": b.name, "task": b.task, "tool": b.tool,
                     "points": [{k: p[k] for k in ("limit", "docs", "requests", "seconds")}
                                for p in points],
                     "fixed_s": round(fixed, 3), "per_doc_s": round(per_doc, 5),
                     "full_docs": full, "full_source": source,
                     "full_requests": round(full * req_per_doc) if full and req_per_doc
                     else None,
                     "projected_s": round(fixed + per_doc * full, 1) if full else None,
                     "device": last["device"], "batch_size": last["batch_size"],
                     "dtype": last["dtype"]})
    return rows


def markdown(rows: list[dict], title: str, notes: list[str]) -> str:
    """The projection table as markdown (a total row, hours)."""
    head = ["benchmark", "tool", "batch", "dtype", "docs run", "seconds", "fixed s", "s/doc",
            "full docs", "source", "full requests", "projected s"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        pts = r["points"]
        lines.append("| " + " | ".join([
            r["benchmark"], r["tool"], str(r["batch_size"]), r["dtype"],
            " / ".join(str(p["docs"]) for p in pts),
            " / ".join(f"{p['seconds']:.1f}" for p in pts), f"{r['fixed_s']:.1f}",
            f"{r['per_doc_s']:.4f}", str(r["full_docs"] or "?"), r["full_source"],
            str(r["full_requests"] or "?"),
            f"{r['projected_s']:.0f}" if r["projected_s"] is not None else "?"]) + " |")
    known = [r["projected_s"] for r in rows if r["projected_s"] is not None]
    total = sum(known)
    lines.append(f"| **total** | | | | | | | | | | | **{total:.0f} s = {total / 3600:.2f} h** |")
    return "\n".join(lines + [""] + notes) + "\n"


def machine(device: str) -> str:
    """The machine in words (CPU model and cores, or the GPU's name)."""
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} (1 GPU)"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads"


def run_bench(overrides: list[str], docs_list: list[int], only: list[str] | None,
              gen_cap: str, results: Path, command: str = "",
              full_size: bool = False) -> list[dict]:
    """Measure and project one pair and suite; write the table; return its rows."""
    from harness import records
    from harness.eval import _device, offline_defaults, task_managers
    from harness.eval.local_tasks import render_task_dirs
    from harness.eval.mirror import check_mirror, suite_data_needs
    from harness.eval.suite import data_root, load_benchmarks, task_paths
    from harness.pipeline import run

    settings = load_settings()
    cfg = compose(overrides)
    twin = cfg.pair.get("source") == "twin"
    benches = load_benchmarks(cfg.eval)
    if only:
        unknown = sorted(set(only) - {b.name for b in benches})
        if unknown:
            raise ConfigError(f"--only: {', '.join(unknown)} not in eval={cfg.eval.name}; "
                              f"choose from {', '.join(b.name for b in benches)}")
        benches = [b for b in benches if b.name in only]
    if len(docs_list) < 2 or sorted(docs_list) != docs_list or len(set(docs_list)) < 2:
        raise ConfigError(f"--docs {docs_list}: give two or more increasing numbers of docs")
    with open_dict(cfg):
        cfg.stage = "merge"
        if twin and cfg.eval.get("data_root") in (None, ""):
            cfg.eval.data_root = str(rehearsal_mirror(Path(cfg.paths.cache) / "rehearsal"))
    capped = gen_cap == "on" or (gen_cap == "auto" and twin)
    caps = (settings.get("answer_tokens") or {}) if capped else {}
    offline_defaults()
    device = _device(cfg.eval)
    label = f"{cfg.pair.name}{'_full' if full_size else ''}_{cfg.eval.name}_{device}"
    title = f"{cfg.pair.name}{' (full size)' if full_size else ''}, {cfg.eval.name}, {device}"
    if full_size:
        llm_dir, mllm_dir = full_twin_dirs(cfg, settings, device)
    else:
        run(cfg)  # the merge (reused when complete)
        merge_dir = (Path(cfg.paths.merges) / records.merge_id(cfg)).resolve()
        llm_dir, mllm_dir = merge_dir / "llm", merge_dir / "mllm"
    work = (Path(results) / "work" / label).resolve()
    shutil.rmtree(work, ignore_errors=True)  # no sample log of an earlier bench is counted
    root = data_root(cfg.eval)
    managers = task_managers(benches, render_task_dirs(task_paths(cfg.eval), work / "_tasks"))
    if root is not None:
        check_mirror(root, suite_data_needs(benches, managers), cfg.eval.name)
    start = time.perf_counter()
    measured = measure(cfg, benches, docs_list, caps, llm_dir,
                       mllm_dir if mllm_dir.is_dir() else None, work, managers)
    sizes = {b.name: full_docs(b, managers[b.tool], root, settings.get("full_docs") or {},
                               measured[b.name]) for b in benches}
    rows = project(benches, measured, sizes)
    stem = Path(results) / f"eval_{label}"
    notes = [(f"Machine: {machine(device)}. Pair {cfg.pair.name}, method {cfg.method.name}, "
              f"suite {cfg.eval.name}; measured in {time.perf_counter() - start:.0f} s with "
              f"`{command or 'python -m harness.bench eval ' + ' '.join(overrides)}`."),
             ("Each benchmark runs in its own tool call; seconds = fixed + s/doc x docs through "
              "the measured points (docs run: lm-eval groups count every leaf's docs)."),
             "Generation capped at conf/bench/eval.yaml answer_tokens (random weights)."
             if caps else "Generation: each task's own limit."]
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.md").write_text(markdown(rows, f"Evaluation cost projection: {title}",
                                           notes))
    Path(f"{stem}.json").write_text(json.dumps({"machine": machine(device), "rows": rows,
                                                "overrides": overrides}, indent=2))
    print(Path(f"{stem}.md").read_text())
    return rows


def full_twin_dirs(cfg: DictConfig, settings: dict, device: str) -> tuple[Path, Path]:
    """(llm, mllm) of the pair's full-size random-weight twin, built on `device` on first use
    into `<cache>/full_twins/<pair>/<key>` (harness/models/full_twin.py)."""
    import hashlib

    from harness.models.full_twin import build_full_twin
    from harness.models.twins import build_key, twin_spec

    if cfg.pair.get("source") != "twin":
        raise ConfigError(f"--full-size needs a twin pair (pair=twin_...); pair={cfg.pair.name} "
                          f"is not one")
    spec = twin_spec(cfg.pair)
    sizes = (settings.get("full_size") or {}).get(spec["kind"])
    if not sizes:
        raise ConfigError(f"conf/bench/eval.yaml full_size has no sizes for twin kind "
                          f"{spec['kind']!r}; add its text and vision sizes")
    key = hashlib.sha256(json.dumps([build_key(spec), sizes], sort_keys=True).encode()
                         ).hexdigest()[:12]
    out = Path(cfg.paths.cache) / "full_twins" / cfg.pair.name / key
    return build_full_twin(spec, sizes, out, device)


def rehearsal_mirror(path: Path) -> Path:
    """The rehearsal's mini mirror at `path`, written if it is not there."""
    if not (path / "cais" / "mmlu" / "README.md").is_file():
        from harness.rehearsal.data import write_mirror

        log.info("writing the rehearsal mirror to %s", path)
        write_mirror(path, None)
    return path


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (`python -m harness.bench eval ...`)."""
    p = argparse.ArgumentParser(prog="python -m harness.bench eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. pair=twin_... "
                   "eval.device=cuda eval.batch_size=32")
    p.add_argument("--docs", default=None, help="docs per task of the measured runs "
                   "(default: conf/bench/eval.yaml)")
    p.add_argument("--only", default=None, help="comma list of the suite's benchmarks")
    p.add_argument("--gen-cap", choices=("auto", "on", "off"), default="auto",
                   help="cap generation at each task's typical answer length (auto: on twins)")
    p.add_argument("--full-size", action="store_true",
                   help="a twin pair at its real checkpoints' sizes, random weights built on "
                        "eval.device (a GPU: seconds), evaluated without a merge")
    p.add_argument("--results", type=Path,
                   default=Path(os.environ.get("HARNESS_RESULTS", "results")) / "bench")
    a = p.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        docs = [int(x) for x in (a.docs.split(",") if a.docs else load_settings()["docs"])]
    except ValueError:
        p.error(f"--docs {a.docs!r}: give a comma list of integers, e.g. 2,6")
    try:
        only = [x for x in a.only.split(",") if x] if a.only else None
        run_bench(a.overrides, docs, only, a.gen_cap, a.results,
                  "python -m harness.bench eval " + " ".join(argv if argv is not None
                                                             else sys.argv[2:]),
                  a.full_size)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
