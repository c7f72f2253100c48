"""The registry of merge methods: name → parameter dataclass + pure tensor function."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from harness.errors import ConfigError


@dataclass(frozen=True)
class Method:
    """A registered merge method.

    `kind` is "tensor" (fn(base, tuned, params, ctx) writes the merged tensor over `tuned` and
    returns it; ctx is a harness.merge.stream.MergeContext) or "group" (neuron_fusion: a
    layer's matrix group at once). `reads_base=False` (the `mllm` identity) spares the engine
    reading the base model. `fused` names the family of fused CPU kernels the method uses
    (harness/merge/fused.py), which the engine loads in the background. `revision` names a
    changed definition (it enters a merge's identity: merges by an earlier one are not reused).
    """

    name: str
    params_cls: type
    fn: Callable
    kind: str = "tensor"
    stochastic: bool = False
    reads_base: bool = True
    fused: str | None = None
    revision: str | None = None


METHODS: dict[str, Method] = {}


def register(name: str, params_cls: type, fn: Callable, kind: str = "tensor",
             stochastic: bool = False, reads_base: bool = True, fused: str | None = None,
             revision: str | None = None) -> None:
    """Add a method to the registry (one line at the bottom of each method file)."""
    METHODS[name] = Method(name, params_cls, fn, kind, stochastic, reads_base, fused, revision)


def get_method(name: str) -> Method:
    """The registered method called `name`; ConfigError listing the valid names otherwise."""
    import harness.merge.methods  # noqa: F401  (registers every method)

    if name not in METHODS:
        raise ConfigError(f"unknown merge method {name!r}; valid methods: "
                          f"{', '.join(sorted(METHODS))}")
    return METHODS[name]


def make_params(method: Method, params: dict[str, Any] | None) -> Any:
    """Build the method's frozen parameter object; unknown or out-of-range values → ConfigError."""
    params = dict(params or {})
    fields = [f.name for f in dataclasses.fields(method.params_cls)]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(f"method {method.name} has no parameter {unknown[0]!r}; its parameters "
                          f"are: {', '.join(fields) if fields else '(none)'}")
    try:
        return method.params_cls(**params)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"method {method.name}: {err}") from err


def check_range(method: str, name: str, value: float, lo: float | None, hi: float | None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ValueError naming the parameter, its value and the valid range when out of range."""
    bad = ((lo is not None and (value <= lo if lo_open else value < lo))
           or (hi is not None and (value >= hi if hi_open else value > hi)))
    if bad or value != value:  # NaN
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ValueError(f"parameter {name}={value} is out of range; valid range {rng}")
