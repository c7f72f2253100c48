"""One run: resolve the pair → merge → evaluate → record (and mirror to W&B).

Each stage lives in its own package; this module only sequences them and decides what to skip:
a complete result.json is never recomputed (unless `force=true`), and a complete merge output is
reused by every run that needs the same merge.
"""

from __future__ import annotations

import datetime as _dt
import logging
import statistics
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness import records
from harness.errors import ConfigError, MergeError

log = logging.getLogger(__name__)

STAGES = ("merge", "eval", "all")


def averages(scores: dict) -> dict:
    """Means of `percent` over language, vision and all benchmarks (None when a suite is empty)."""
    out = {}
    for name, suites in (("language", {"language"}), ("vision", {"vision"}),
                         ("all", {"language", "vision"})):
        vals = [s["percent"] for s in scores.values() if s["suite"] in suites]
        out[name] = statistics.fmean(vals) if vals else None
    return out


def evaluated_with(scores: dict) -> dict:
    """tool → {dtype, device} the tool loaded its model with (from the score entries)."""
    return {s["tool"]: {"dtype": s.get("dtype"), "device": s.get("device")}
            for s in scores.values()}


def method_params(cfg: DictConfig) -> dict:
    """The method's parameters as a plain dict, a null one (conf/method) as the method's
    default ({} when the method has none)."""
    from harness.merge.registry import filled_params, get_method

    params = cfg.method.get("params")
    given = {} if params is None else OmegaConf.to_container(params, resolve=True)
    return filled_params(get_method(cfg.method.name), given)


def run(cfg: DictConfig) -> dict:
    """Run the stages that `cfg.stage` asks for; return the record (or the merge report)."""
    stage = cfg.stage
    if stage not in STAGES:
        raise ConfigError(f"stage={stage!r} is not valid; choose one of {', '.join(STAGES)}")
    ident = records.identity(cfg)
    run_id = records.run_id_of(ident)
    run_dir = Path(cfg.paths.runs) / run_id
    if stage != "merge" and not cfg.force:
        done = records.load_record(run_dir)
        if done is not None:
            log.info("run %s is complete (%s); skipping. Use force=true to rerun.",
                     run_id, run_dir / records.RESULT_FILE)
            return done

    from harness.pairs import resolve_pair
    from harness.merge import merge_checkpoints

    pair = resolve_pair(cfg.pair, cfg.paths)
    if stage != "merge":
        from harness.eval.preflight import check_eval_setup
        check_eval_setup(cfg.eval, pair)  # before a merge that could not be evaluated
    merge_dir = Path(cfg.paths.merges) / records.merge_id(cfg)
    if stage in ("merge", "all"):
        report = merge_checkpoints(
            base=pair.base, mllm=pair.mllm, method=cfg.method.name,
            params=method_params(cfg),
            out=merge_dir, device=cfg.merge.device, seed=int(cfg.seed),
            force=bool(cfg.force), shard_size_mb=int(cfg.merge.shard_size_mb),
            progress=bool(cfg.merge.progress), memory_mb=int(cfg.merge.memory_mb),
            kernels=str(cfg.merge.get("kernels", "auto")),
            allow_unrelated=bool(cfg.merge.get("allow_unrelated", False)),
        )
        if stage == "merge":
            log.info("merged model written to %s", merge_dir)
            return report
    else:
        from harness.merge import load_merge_report
        report = load_merge_report(merge_dir)
        if report is None:
            raise MergeError(
                f"stage=eval needs a complete merge in {merge_dir}, which has no complete "
                f"merge.json. Run the same command with stage=merge (or stage=all) first.")

    from harness.eval import evaluate
    llm_dir = merge_dir / "llm"
    mllm_dir = merge_dir / "mllm"
    cost: dict = {}
    scores = evaluate(cfg.eval, llm_dir=llm_dir,
                      mllm_dir=mllm_dir if mllm_dir.is_dir() else None,
                      run_dir=run_dir, seed=int(cfg.seed), cost=cost)
    record = build_record(cfg, ident, scores, report, merge_dir, cost)
    record["generation"] = generation_summary(cfg, record, run_dir)

    from harness.tracking import log_record
    log_record(cfg, record, run_dir)  # never raises: a W&B failure is a warning
    path = records.write_record(run_dir, record)
    log.info("result written to %s", path)
    return record


def generation_summary(cfg: DictConfig, record: dict, run_dir: Path) -> dict:
    """The run's generation-analysis shares (harness.generation; {} without generative
    benchmarks). A failure here is a warning: the scores are already computed."""
    from harness.generation.collect import record_generation

    try:
        return record_generation(record, run_dir, OmegaConf.to_container(cfg.pair, resolve=True))
    except Exception as err:
        log.warning("generation analysis of %s failed (%s: %s); the record has no shares",
                    run_dir, type(err).__name__, err)
        return {}


def build_record(cfg: DictConfig, ident: dict, scores: dict, report: dict,
                 merge_dir: Path, cost: dict | None = None) -> dict:
    """The tidy result record (its fields: docs/results.md) of the run `ident`
    (records.identity(cfg)); `cost`: benchmark → evaluation cost (harness/eval/cost.py)."""
    from harness import numerics
    from harness.versions import git_sha, library_versions

    merge_stats = {k: report.get(k) for k in ("seconds", "peak_rss_mb", "device", "counts",
                                               "neurons_located") if k in report}
    merge_stats["dir"] = str(merge_dir)
    return {
        "run_id": records.run_id_of(ident),
        "experiment": cfg.experiment_name,
        "pair": cfg.pair.name,
        "method": cfg.method.name,
        "params": method_params(cfg),
        "seed": int(cfg.seed),
        "eval_suite": cfg.eval.name,
        "eval_limit": cfg.eval.get("limit"),
        "status": "complete",
        "scores": scores,
        "evaluated_with": evaluated_with(scores),
        "averages": averages(scores),
        "merge": merge_stats,
        "cost": cost or {},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": library_versions(),
        "identity": ident,
        "cpu_numerics": numerics.describe(),
        "git_sha": git_sha(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
