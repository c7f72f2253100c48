"""Pair sources: where a pair's two checkpoints come from, and what identifies them.

A pair config names its source (`source: hub | local | micro | twin`); each source is one small
module of this package that registers a `PairSource` (one `register` call at its bottom):
  hub.py    `hub` (HF ids in the local HF cache, named by their resolved commit) and `local`
            (two directories, named by the fingerprint of their files)
  micro.py  `micro`, the embedded pair built here (named by its build key)
  twin.py   `twin`, the tiny random-weight twins of the paper pairs (named by their build key)
Sources outside this package are added by naming their modules in HARNESS_PAIR_SOURCES
(comma-separated importable modules, each calling `register`).

`resolve_pair` turns a pair config into local directories; `pair_identity` says what makes two
pairs the same (their content, never their name or path), for the run records and merge ids.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from harness.errors import ConfigError
from harness.models.pair import ResolvedPair, is_multimodal, read_config
from harness.plugins import import_plugins

PLUGINS_ENV = "HARNESS_PAIR_SOURCES"


@dataclass(frozen=True)
class PairSource:
    """A registered pair source.

    `resolve(pair, cache)` returns the (base, mllm) directories of a pair config `pair` (a
    plain dict), building or finding them (never downloading) under the cache root `cache`;
    `identity(pair)` returns a JSON-able dict of what determines the pair's weights. It must
    not need the checkpoints to exist: a checkpoint it cannot find is named as missing (the
    run then stops at `resolve`, before anything is written).
    """

    name: str
    resolve: Callable[[dict, Path], tuple[Path, Path]]
    identity: Callable[[dict], dict]


SOURCES: dict[str, PairSource] = {}


def register(source: PairSource) -> PairSource:
    """Add a pair source to the registry (one call at the bottom of each source module)."""
    SOURCES[source.name] = source
    return source


def load_sources() -> dict[str, PairSource]:
    """Every registered source: this package's modules, then those named in
    HARNESS_PAIR_SOURCES."""
    for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        importlib.import_module(info.name)
    import_plugins(PLUGINS_ENV)
    return SOURCES


def get_source(name: str) -> PairSource:
    """The source `name`; a ConfigError naming the valid ones when it is not registered."""
    sources = load_sources()
    if name not in sources:
        raise ConfigError(f"pair.source={name!r} is not valid; choose "
                          f"{', '.join(sorted(sources))}")
    return sources[name]


def _plain(pair_cfg) -> dict:
    if OmegaConf.is_config(pair_cfg):
        return OmegaConf.to_container(pair_cfg, resolve=True)
    return dict(pair_cfg)


def resolve_pair(pair_cfg, paths_cfg) -> ResolvedPair:
    """Local directories of a pair config (its `source` decides how they are found)."""
    pair = _plain(pair_cfg)
    source = get_source(pair.get("source", "local"))
    base, mllm = source.resolve(pair, Path(paths_cfg.cache))
    return ResolvedPair(pair["name"], Path(base), Path(mllm), is_multimodal(read_config(mllm)))


def pair_identity(pair_cfg) -> dict:
    """What determines a pair's weights, readable: its name (the tables' label) and its
    source's identity of the content (fingerprints, commits or build keys)."""
    pair = _plain(pair_cfg)
    return {"name": pair.get("name"), **get_source(pair.get("source", "local")).identity(pair)}
