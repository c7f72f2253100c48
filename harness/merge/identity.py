"""What determines a merge besides its input weights, in one place for the merge engine (which
adds the input files) and the run records (which add the pair's identity)."""

from __future__ import annotations

import dataclasses
from typing import Any

import harness.merge.randomness as randomness
from harness.merge.registry import get_method, make_params


def method_identity(method: str, params: dict[str, Any] | None, seed: int) -> dict:
    """The method, its parameters as the method resolves them (defaults filled in), the seed,
    the draw definition of a stochastic method and the method's revision, when it has one.

    A merge (or a record) made by an earlier definition of the method or of its draws differs
    here, so it is never reused.
    """
    spec = get_method(method)
    ident: dict[str, Any] = {"method": method,
                             "params": dataclasses.asdict(make_params(spec, params)),
                             "seed": int(seed)}
    if spec.stochastic:
        ident["draws"] = randomness.DRAWS
    if spec.revision:
        ident["revision"] = spec.revision
    return ident
