"""W&B mirror of the run records: one W&B run per harness run, never fatal.

Metric names are `<suite>/<benchmark>/<metric>` (percent) and `<suite>/<benchmark>/<metric>_native`
(the tool's own unit); averages as `avg/<language|vision|all>`; merge statistics as `merge/*`;
the generation analysis's shares as `generation/<benchmark|all>/<category>` (percent); the
evaluation cost as `cost/<benchmark>/<seconds|requests|requests_per_s>` and `cost/total_seconds`,
with a `cost` table (benchmark, tool, requests, seconds, device, batch size, dtype).
Mode: `tracking.wandb.mode` = offline | online | disabled | auto (online when WANDB_API_KEY is
set, else offline). Offline runs land under `<tracking.wandb.dir>/wandb/`; `wandb sync` uploads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def wandb_mode(cfg: DictConfig) -> str:
    """The effective W&B mode of a run."""
    mode = str(OmegaConf.select(cfg, "tracking.wandb.mode", default="auto"))
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    if mode not in ("offline", "online", "disabled"):
        log.warning("tracking.wandb.mode=%s is not valid (offline|online|disabled|auto); "
                    "using offline", mode)
        return "offline"
    return mode


def record_metrics(record: dict) -> dict:
    """Flat W&B metrics of a result record."""
    metrics = {}
    for bench, s in (record.get("scores") or {}).items():
        key = f"{s['suite']}/{bench}/{s['metric']}"
        metrics[key] = s["percent"]
        metrics[f"{key}_native"] = s["value"]
    for name, value in (record.get("averages") or {}).items():
        if value is not None:
            metrics[f"avg/{name}"] = value
    for bench, shares in ((record.get("generation") or {}).get("shares") or {}).items():
        for category, value in shares.items():
            metrics[f"generation/{bench}/{category}"] = value
    cost = record.get("cost") or {}
    for bench, c in cost.items():
        for key in ("seconds", "requests", "requests_per_s"):
            if c.get(key) is not None:
                metrics[f"cost/{bench}/{key}"] = c[key]
    if cost:
        metrics["cost/total_seconds"] = sum(c.get("seconds") or 0.0 for c in cost.values())
    merge = record.get("merge") or {}
    for key in ("seconds", "peak_rss_mb"):
        if merge.get(key) is not None:
            metrics[f"merge/{key}"] = merge[key]
    for layer, groups in (merge.get("neurons_located") or {}).items():
        for group, n in groups.items():
            metrics[f"merge/located/{group}/layer_{int(layer):03d}"] = n
    return metrics


def log_record(cfg: DictConfig, record: dict, run_dir: Path) -> None:
    """Mirror a record to W&B. Any W&B failure is a warning; the local record is unaffected."""
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return
    try:
        import wandb

        wdir = Path(str(OmegaConf.select(cfg, "tracking.wandb.dir", default=run_dir)))
        wdir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=OmegaConf.select(cfg, "tracking.wandb.project", default="locate-then-merge"),
            entity=OmegaConf.select(cfg, "tracking.wandb.entity", default=None),
            group=record.get("experiment"), job_type=record.get("method"),
            name=record["run_id"], id=record["run_id"] + "-" + record["created_at"][:19]
            .replace(":", "").replace("-", ""), dir=str(wdir), mode=mode,
            config=record.get("config"), reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"))
    except Exception as err:  # W&B must never break a run
        log.warning("W&B init failed (%s: %s); the local record is still written",
                    type(err).__name__, err)
        return
    try:
        metrics = record_metrics(record)
        run.log(metrics)
        run.summary.update(metrics)
        rows = [[b, s["suite"], s["tool"], s["task"], s["metric"], s["value"], s["percent"]]
                for b, s in (record.get("scores") or {}).items()]
        run.log({"scores": wandb.Table(columns=["benchmark", "suite", "tool", "task", "metric",
                                                "value", "percent"], data=rows)})
        cost_rows = [[b, c.get("tool"), c.get("requests"), c.get("seconds"), c.get("device"),
                      str(c.get("batch_size")), c.get("dtype")]
                     for b, c in (record.get("cost") or {}).items()]
        if cost_rows:
            run.log({"cost": wandb.Table(columns=["benchmark", "tool", "requests", "seconds",
                                                  "device", "batch_size", "dtype"],
                                         data=cost_rows)})
        run_path = Path(getattr(run, "dir", "")).parent  # <dir>/wandb/<offline-run-…>/files
        record.setdefault("tracking", {})["wandb"] = {"mode": mode, "id": run.id,
                                                      "run_dir": str(run_path)}
    except Exception as err:
        log.warning("W&B logging failed (%s: %s)", type(err).__name__, err)
    finally:
        try:
            run.finish()
        except Exception as err:
            log.warning("W&B finish failed (%s: %s)", type(err).__name__, err)


def read_offline_summary(run_dir: Path, wait_s: float = 30.0) -> dict:
    """The summary of an offline W&B run, read back from its `.wandb` transaction log with
    wandb's own reader (offline runs write no wandb-summary.json). Later updates win. wandb's
    service process may still be writing the log when `finish()` has returned: the reader waits
    (up to `wait_s`) for the run's exit record."""
    import json
    import time

    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    deadline = time.monotonic() + wait_s
    while True:
        (log_file,) = sorted(Path(run_dir).glob("*.wandb"))
        store = datastore.DataStore()
        store.open_for_scan(str(log_file))
        summary: dict = {}
        finished = False
        while True:
            data = store.scan_data()
            if data is None:
                break
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(data)
            kind = rec.WhichOneof("record_type")
            if kind == "summary":
                for item in rec.summary.update:
                    key = item.key or "/".join(item.nested_key)
                    summary[key] = json.loads(item.value_json)
            finished = finished or kind == "exit"
        if finished or time.monotonic() > deadline:
            return summary
        time.sleep(0.5)
