"""Evaluation suites: which benchmarks a run scores, with which tool, metric and percent scale."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from harness.errors import ConfigError

TOOLS = ("lm-eval", "lmms-eval")
SUITES = ("language", "vision")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of a suite."""

    name: str
    suite: str          # language | vision
    tool: str           # lm-eval | lmms-eval
    task: str           # task id in that tool
    metric: str         # metric key without filter suffix
    filter: str = "none"
    shots: int = 0
    percent_scale: float = 100.0
    extra_metrics: tuple[str, ...] = ()   # more '<metric>,<filter>' keys recorded, not averaged
    columns: tuple[str, ...] = ()         # dataset columns the task reads (mirror check)
    extra_data: tuple[dict, ...] = ()     # datasets the task's own code loads (mirror check)

    @property
    def result_key(self) -> str:
        """The key of the metric in the tool's results ('<metric>,<filter>')."""
        return f"{self.metric},{self.filter}"


def load_benchmarks(eval_cfg) -> list[Benchmark]:
    """The benchmarks of a suite config, validated (ConfigError names the bad entry)."""
    raw = eval_cfg.get("benchmarks") or {}
    raw = OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else raw
    out = []
    for name, spec in raw.items():
        where = f"eval={eval_cfg.name}, benchmark {name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping, got {spec!r}")
        missing = [k for k in ("suite", "tool", "task", "metric") if k not in spec]
        if missing:
            raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
        if spec["tool"] not in TOOLS:
            raise ConfigError(f"{where}: tool={spec['tool']!r}; choose one of {', '.join(TOOLS)}")
        if spec["suite"] not in SUITES:
            raise ConfigError(f"{where}: suite={spec['suite']!r}; choose language or vision")
        known = {"suite", "tool", "task", "metric", "filter", "shots", "percent_scale",
                 "extra_metrics", "columns", "extra_data"}
        extra = sorted(set(spec) - known)
        if extra:
            raise ConfigError(f"{where}: unknown key {extra[0]!r}; valid keys: {sorted(known)}")
        out.append(Benchmark(name=name, suite=spec["suite"], tool=spec["tool"],
                             task=spec["task"], metric=spec["metric"],
                             filter=spec.get("filter", "none"), shots=int(spec.get("shots", 0)),
                             percent_scale=float(spec.get("percent_scale", 100.0)),
                             extra_metrics=tuple(spec.get("extra_metrics") or ()),
                             columns=tuple(spec.get("columns") or ()),
                             extra_data=tuple(_extra_data(where, spec.get("extra_data")))))
    return out


def _extra_data(where: str, entries) -> list[dict]:
    """Validated `extra_data` entries: {path, config, splits, columns}."""
    out = []
    for entry in entries or []:
        if not isinstance(entry, dict) or "path" not in entry:
            raise ConfigError(f"{where}: each extra_data entry needs at least `path` (the "
                              f"dataset id), got {entry!r}")
        extra = sorted(set(entry) - {"path", "config", "splits", "columns"})
        if extra:
            raise ConfigError(f"{where}: extra_data key {extra[0]!r} is not valid; use path, "
                              f"config, splits, columns")
        out.append(entry)
    return out


def data_root(eval_cfg) -> Path | None:
    """The suite's local dataset mirror (`eval.data_root`) as an absolute path, or None."""
    root = eval_cfg.get("data_root")
    if root in (None, ""):
        return None
    path = Path(str(root)).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"eval.data_root={root}: no such directory. Write a mirror with "
                          f"`python -m harness.prefetch eval={eval_cfg.name} --mirror {root}` "
                          f"(real data, needs internet) or `python -m harness.rehearsal --out "
                          f"{root}` (the rehearsal's mini datasets)")
    return path


def task_paths(eval_cfg) -> list[Path]:
    """Local task directories of a suite (relative paths are relative to the harness package)."""
    out = []
    for p in eval_cfg.get("task_paths") or []:
        path = Path(str(p))
        path = path if path.is_absolute() else PACKAGE_ROOT / path
        if not path.is_dir():
            raise ConfigError(f"eval={eval_cfg.name}: task path {path} does not exist")
        out.append(path)
    return out


def check_known_tasks(tool: str, known: set[str], benches: list[Benchmark]) -> None:
    """ConfigError-like EvalError when a benchmark's task is not in the tool's task index."""
    from harness.errors import EvalError

    for b in benches:
        if b.task not in known:
            raise EvalError(f"{tool} has no task {b.task!r} (benchmark {b.name}); check the "
                            f"task id, or the suite's task_paths for local tasks")
