"""The schema of `python -m harness`'s composed configuration: which keys exist, and the type and
range of each value (checked by harness/config_check.py before anything runs).

A key exists when conf/ declares it (conf/config.yaml, or any option file of the groups below)
or `EXPLICIT` names it. Its rule is `EXPLICIT`'s when there is one, else inferred from the
declared default (a bool stays a bool, an int an int, a float a finite number, a mapping's keys
are its keys). Method parameters come from the method's parameter dataclass in the registry
(harness/merge/registry.py), benchmark entries from harness.eval.suite.Benchmark. A new key is
therefore declared by giving it a default in conf/ (and, when its default says too little, a
rule here).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("paths", "pair", "method", "eval", "tracking", "slurm")
MISSING = "???"


@dataclass(frozen=True)
class Rule:
    """What a value may be. kind: int | float | bool | str | choice | list | map (its keys are
    checked against the schema) | free (anything, keys unchecked) | any | params (the method's
    dataclass) | benchmarks (each entry a Benchmark)."""

    kind: str
    lo: float | None = None
    choices: tuple = ()
    nullable: bool = False
    hint: str = ""

    def problem(self, value) -> str | None:
        """Why `value` breaks the rule (None: it does not)."""
        if value is None:
            return None if self.nullable or self.kind in ("any", "free") else "must be set, not null"
        kind = self.kind
        if kind == "bool" and not isinstance(value, bool):
            return "must be true or false"
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return "must be a whole number"
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return "must be a number"
            if not math.isfinite(value):
                return "must be a finite number"
        if kind in ("int", "float") and self.lo is not None and value < self.lo:
            return f"must be at least {self.lo:g}"
        if kind == "str" and (isinstance(value, (bool, list, dict))):
            return "must be a string"
        if kind == "choice" and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}"
        if kind == "list" and not isinstance(value, list):
            return "must be a list, e.g. [a, b]"
        if kind in ("map", "free", "params", "benchmarks") and not isinstance(value, dict):
            return "must be a mapping of keys to values"
        return None


def _int(lo=None, nullable=False, hint=""):
    return Rule("int", lo=lo, nullable=nullable, hint=hint)


def _choice(*choices, nullable=False):
    return Rule("choice", choices=choices, nullable=nullable)


STR, NSTR, BOOL, LIST = Rule("str"), Rule("str", nullable=True), Rule("bool"), Rule("list")
MAP, FREE = Rule("map"), Rule("free")
LIMIT_HINT = ("eval.limit is the number of docs scored per task, the first N; null scores every "
              "doc; fractions are not accepted")

EXPLICIT: dict[str, Rule] = {
    "stage": _choice("merge", "eval", "all"),
    "seed": _int(lo=0),
    "force": BOOL,
    "experiment_name": STR,
    "merge.shard_size_mb": _int(lo=1),
    "merge.memory_mb": _int(lo=1),
    "merge.progress": BOOL,
    "merge.kernels": _choice("auto", "fused", "torch"),
    "pair.source": _choice("micro", "local", "hub", "twin"),
    "pair.base": NSTR, "pair.mllm": NSTR,
    "pair.base_revision": NSTR, "pair.mllm_revision": NSTR,
    "method.name": STR,
    "method.params": Rule("params"),
    "eval.limit": _int(lo=1, nullable=True, hint=LIMIT_HINT),
    "eval.batch_size": _int(lo=1),
    "eval.max_new_tokens": _int(lo=1, nullable=True),
    "eval.backend": _choice("hf", "vllm"),
    "eval.dtype": _choice("auto", "float32", "bfloat16", "float16"),
    "eval.data_root": NSTR,
    "eval.validation": NSTR,
    "eval.chat_template": BOOL,
    "eval.task_paths": LIST,
    "eval.benchmarks": Rule("benchmarks"),
    "tracking.wandb.mode": _choice("auto", "offline", "online", "disabled"),
    "tracking.wandb.entity": NSTR,
    "slurm.extra": FREE,
    "slurm.setup": LIST,
    # set by experiment files (harness/selection/; the budget's ranges: halving.Budget)
    "selection": MAP,
    "selection.grids": FREE,
    "selection.pair_grids": FREE,
    "selection.budget": MAP,
    "selection.budget.rounds": _int(lo=1),
    "selection.budget.docs": _int(lo=1, nullable=True),
    "selection.budget.growth": Rule("float", lo=1),
    "selection.budget.keep": Rule("float", lo=0),
    "selection.plan_only": BOOL,
}


def _infer(value) -> Rule:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return Rule("int")
    if isinstance(value, float):
        return Rule("float")
    if isinstance(value, str):
        return Rule("any") if value == MISSING or "${" in value else STR
    if isinstance(value, list):
        return LIST
    if isinstance(value, dict):
        return MAP
    return Rule("any")


def _widen(old: Rule, new: Rule) -> Rule:
    """One rule for a key two option files declare differently."""
    if old == new:
        return old
    if {old.kind, new.kind} == {"int", "float"}:
        return Rule("float")
    return Rule("any")


def _walk(node: dict, prefix: str, out: dict[str, Rule]) -> None:
    for key, value in node.items():
        if key == "defaults" and not prefix.count("."):
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        rule = _infer(value)
        out[path] = _widen(out[path], rule) if path in out else rule
        if isinstance(value, dict) and path not in EXPLICIT:
            _walk(value, path, out)


@lru_cache(maxsize=1)
def schema() -> dict[str, Rule]:
    """Dotted key → rule for every key conf/ or EXPLICIT declares."""
    from omegaconf import OmegaConf

    out: dict[str, Rule] = {}
    primary = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False)
    primary.pop("hydra", None)
    _walk(primary, "", out)
    for group in GROUPS:
        out[group] = MAP
        for path in sorted((CONF / group).glob("*.yaml")):
            node = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
            if group == "method":
                node = {k: v for k, v in node.items() if k not in ("params",)}
            _walk(node, group, out)
    out.update(EXPLICIT)
    return out


def rule_of_type(hint) -> Rule:
    """The rule of a dataclass field annotated `hint` (float, int, bool, str, tuple, Optional)."""
    args = typing.get_args(hint)
    if type(None) in args:
        inner = [a for a in args if a is not type(None)]
        rule = rule_of_type(inner[0]) if len(inner) == 1 else Rule("any")
        return dataclasses.replace(rule, nullable=True)
    origin = typing.get_origin(hint) or hint
    if origin is typing.Literal:
        return Rule("choice", choices=args)
    simple = {bool: BOOL, int: Rule("int"), float: Rule("float"), str: STR, tuple: LIST,
              list: LIST}
    return simple.get(origin, Rule("any"))


def field_rules(cls: type) -> dict[str, Rule]:
    """Field name → rule, from a dataclass's annotations."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: accept any value
        hints = {}
    return {f.name: rule_of_type(hints.get(f.name, typing.Any))
            for f in dataclasses.fields(cls)}


def benchmark_rules() -> dict[str, Rule]:
    """Key → rule of one `eval.benchmarks.<name>` entry (harness.eval.suite.Benchmark)."""
    from harness.eval.suite import SUITES, TOOLS, Benchmark

    rules = field_rules(Benchmark)
    rules.pop("name")
    rules.update(suite=Rule("choice", choices=SUITES), tool=Rule("choice", choices=TOOLS),
                 shots=_int(lo=0), extra_data=LIST)
    return rules
