"""The registry of merge methods: name → parameters + the method's weight.

Every method is θ = lerp(θ_base, θ_tuned, w) = θ_base + w·Δ; a method file declares its
parameter dataclass and how to compute w, and registers both with `register` (one call at the
bottom of the file). The engine (harness/merge/engine.py) does everything else: reading,
chunking, the lerp in float32, rounding once to the stored dtype, writing.

Kinds of method:
- `tensor`: `weight(base, tuned, p, ctx)` for one tensor returns
  - a float (the same w for every entry),
  - a `ChunkWeight`: `w(lo, hi, fb, ft)` → the float32 weights of one chunk of entries, flat
    [lo, hi) or, when registered with `rows=True`, whole rows [lo, hi) of the (rows, last
    dimension) view; fb / ft are the chunk's float32 base and tuned values (Δ = ft − fb).
    Chunks come in order, each once. `weight` itself may first read the pair (a top-k
    threshold) with harness.merge.stream.for_each_delta,
  - `BASE` or `TUNED`: that input, exactly.
- `group`: `weight` as above for tensors outside any neuron group, and
  `group_weight(bases, tuneds, p, ctx)` for one layer's FFN or attention group (role →
  tensor, roles as in harness/merge/neurons.py) returns (role → a float, or (vector, axis):
  one weight per row (axis 0) or column (axis 1); a JSON-able record of what it found).

Methods outside this package are added by naming their modules in HARNESS_METHOD_MODULES
(comma-separated importable modules, each calling `register`), plus a conf/method/<name>.yaml
on Hydra's search path (docs/methods.md, "Adding a method").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from harness.errors import ConfigError
from harness.plugins import import_plugins

ChunkWeight = Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor | float]
BASE = "θ_base"    # a weight meaning: the base tensor itself (a copy, not a lerp)
TUNED = "θ_tuned"  # a weight meaning: the tuned tensor itself
KINDS = ("tensor", "group")
PLUGINS_ENV = "HARNESS_METHOD_MODULES"


@dataclass(frozen=True)
class Method:
    """A registered merge method (see the module docstring for `kind`, `weight`,
    `group_weight` and `rows`).

    `reads_base=False` (the `mllm` identity) spares the engine reading the base model.
    `stochastic`: draws from the seeded streams of harness/merge/randomness.py. `revision` names
    a changed definition (it enters a merge's identity: merges by an earlier one are not
    reused). `label` and `row` place the method in tables (rows sorted by `row`, then name).
    """

    name: str
    params_cls: type
    weight: Callable
    kind: str = "tensor"
    group_weight: Callable | None = None
    rows: bool = False
    stochastic: bool = False
    reads_base: bool = True
    revision: str | None = None
    label: str = ""
    row: int = 1000


METHODS: dict[str, Method] = {}


def register(name: str, params_cls: type, weight: Callable, *, kind: str = "tensor",
             group_weight: Callable | None = None, rows: bool = False,
             stochastic: bool = False, reads_base: bool = True, revision: str | None = None,
             label: str | None = None, row: int = 1000) -> Method:
    """Add a method to the registry (one call at the bottom of each method file)."""
    if kind not in KINDS:
        raise ValueError(f"method {name}: kind={kind!r} is not one of {', '.join(KINDS)}")
    if (kind == "group") != (group_weight is not None):
        raise ValueError(f"method {name}: a group_weight is given exactly for kind='group'")
    method = Method(name, params_cls, weight, kind, group_weight, rows, stochastic, reads_base,
                    revision, label or name, row)
    METHODS[name] = method
    return method


def load_methods() -> dict[str, Method]:
    """Every registered method: this package's and those of the modules in
    HARNESS_METHOD_MODULES (imported once)."""
    import harness.merge.methods  # noqa: F401  (registers every built-in method)

    import_plugins(PLUGINS_ENV)
    return METHODS


def get_method(name: str) -> Method:
    """The registered method called `name`; ConfigError listing the valid names otherwise."""
    methods = load_methods()
    if name not in methods:
        raise ConfigError(f"unknown merge method {name!r}; valid methods: "
                          f"{', '.join(sorted(methods))}")
    return methods[name]


def table_rows() -> list[tuple[str, str]]:
    """(name, label) of every method in table order."""
    methods = load_methods()
    return [(m.name, m.label) for m in sorted(methods.values(), key=lambda m: (m.row, m.name))]


def default_params(method: Method) -> dict[str, Any]:
    """The method's defaults as plain values: its parameter dataclass's field defaults, the one
    place they are written (conf/method/*.yaml leaves them null; docs/methods.md)."""
    out = {}
    for f in dataclasses.fields(method.params_cls):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def filled_params(method: Method, params: dict[str, Any] | None) -> dict[str, Any]:
    """Every parameter of the method as given, a missing or null one as its default (plain
    values, as a record or a table label shows them); unknown or invalid values → ConfigError."""
    make_params(method, params)
    given = {k: v for k, v in (params or {}).items() if v is not None}
    return {**default_params(method), **given}


def make_params(method: Method, params: dict[str, Any] | None) -> Any:
    """Build the method's frozen parameter object, a missing or null parameter taking its
    default; unknown or out-of-range values → ConfigError."""
    params = {k: v for k, v in (params or {}).items() if v is not None}
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
