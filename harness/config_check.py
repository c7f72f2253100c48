"""Strict configuration: `python -m harness` checks the composed config against its schema
(harness/config_schema.py) before anything runs. An unknown key anywhere, given with or without
`+`, is an error that names the key and the closest valid one; so is a value of the wrong type
or out of range (`seed=abc`, `force=maybe`, `eval.limit=0.5`, `method.params.scale=inf`).
"""

from __future__ import annotations

import difflib

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.config_schema import (MISSING, Rule, benchmark_rules, field_rules, schema)
from harness.errors import ConfigError

CUTOFF = 0.6  # difflib similarity below which no key is suggested
LIST_KEYS = "`python -m harness --cfg job` prints every key of a configuration"


def closest(key: str, candidates) -> str | None:
    """The candidate most like `key` (the whole dotted key, or its last part within the same
    group), or None when nothing is close."""
    leaf, group = key.rsplit(".", 1)[-1], key.split(".", 1)[0]
    best, score = None, 0.0
    for cand in sorted(set(candidates)):
        s = difflib.SequenceMatcher(None, key, cand).ratio()
        if cand.split(".", 1)[0] == group:
            s = max(s, difflib.SequenceMatcher(None, leaf, cand.rsplit(".", 1)[-1]).ratio())
        if s > score:
            best, score = cand, s
    return best if score >= CUTOFF else None


def _method_fields(method: str | None) -> dict[str, Rule]:
    """The parameter rules of `method` (all methods' parameters when None or unknown)."""
    from harness.merge.registry import load_methods

    methods = load_methods()
    chosen = [methods[method]] if method in methods else list(methods.values())
    return {name: rule for m in chosen for name, rule in field_rules(m.params_cls).items()}


def known_keys(method: str | None = None) -> list[str]:
    """Every concrete dotted key a configuration may hold (method parameters of `method`)."""
    keys = [k for k in schema() if "*" not in k]
    return keys + [f"method.params.{name}" for name in _method_fields(method)]


def unknown_key_message(key: str, method: str | None = None) -> str:
    """'unknown key <key>; did you mean <closest>?' and how to list every key."""
    best = closest(key, known_keys(method))
    hint = f"; did you mean {best}?" if best else ""
    return f"unknown configuration key {key}{hint} ({LIST_KEYS})"


def _show(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    return str(value)


def _bad(path: str, value, problem: str, hint: str = "") -> str:
    return f"{path}={_show(value)}: {problem}" + (f" ({hint})" if hint else "")


def _params_problems(method: str, params: dict) -> list[str]:
    """Unknown, mistyped and out-of-range parameters of `method` (its dataclass decides)."""
    from harness.merge.registry import get_method, make_params

    try:
        spec = get_method(method)
    except ConfigError as err:
        return [f"method.name={method}: {err}"]
    rules = field_rules(spec.params_cls)
    problems = []
    for key, value in params.items():
        path = f"method.params.{key}"
        if key not in rules:
            best = closest(path, [f"method.params.{k}" for k in rules])
            hint = f"; did you mean {best}?" if best else ""
            problems.append(f"unknown configuration key {path}: method {method} has the "
                            f"parameters {', '.join(rules) or '(none)'}{hint}")
        elif value is None:  # null: the dataclass's default (conf/method leaves every one null)
            continue
        elif (problem := rules[key].problem(value)) is not None:
            problems.append(_bad(path, value, problem))
    if not problems:
        try:
            make_params(spec, params)  # the method's own range checks
        except ConfigError as err:
            problems.append(str(err))
    return problems


def _benchmark_problems(suite: str, benchmarks: dict) -> list[str]:
    """Unknown and mistyped keys of each `eval.benchmarks.<name>`, then the suite's own checks."""
    from harness.eval.suite import load_benchmarks

    rules = benchmark_rules()
    problems = []
    for name, spec in benchmarks.items():
        if not isinstance(spec, dict):
            problems.append(_bad(f"eval.benchmarks.{name}", spec, "must be a mapping"))
            continue
        for key, value in spec.items():
            path = f"eval.benchmarks.{name}.{key}"
            if key not in rules:
                best = closest(path, [f"eval.benchmarks.{name}.{k}" for k in rules])
                problems.append(f"unknown configuration key {path}"
                                + (f"; did you mean {best}?" if best else ""))
            elif (problem := rules[key].problem(value)) is not None:
                problems.append(_bad(path, value, problem))
    if not problems:
        try:
            load_benchmarks(OmegaConf.create({"name": suite, "benchmarks": benchmarks}))
        except ConfigError as err:
            problems.append(str(err))
    return problems


def _check_node(node: dict, prefix: str, root: dict, problems: list[str]) -> None:
    rules = schema()
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        rule = rules.get(path)
        if rule is None:
            method = (root.get("method") or {}).get("name")
            problems.append(unknown_key_message(path, method if isinstance(method, str)
                                                else None))
            continue
        if isinstance(value, str) and value == MISSING:
            problems.append(f"{path} has no value: give it one on the command line "
                            f"({path}=...)")
            continue
        problem = rule.problem(value)
        if problem is not None:
            problems.append(_bad(path, value, problem, rule.hint))
        elif rule.kind == "map":
            _check_node(value, path, root, problems)
        elif rule.kind == "params":
            problems += _params_problems(str((root.get("method") or {}).get("name")), value)
        elif rule.kind == "benchmarks":
            problems += _benchmark_problems(str((root.get("eval") or {}).get("name")), value)


def config_problems(cfg: DictConfig) -> list[str]:
    """Every problem of a composed configuration, one short sentence each ([] when valid)."""
    try:
        if "hydra" in cfg:  # Hydra's own node (a config loaded with it): not the run's
            cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as err:
        return [f"the configuration does not resolve: {' '.join(str(err).split())}"]
    problems: list[str] = []
    _check_node(data, "", data, problems)
    return problems


def check_config(cfg: DictConfig) -> None:
    """ConfigError (one line, every problem) unless `cfg` fits the schema."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
