"""The `twin` pair source: tiny random-weight twins of the paper pairs, built on first use
(docs/twins.md) and named by their build key (the build block and the library releases that
wrote them)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError
from harness.pairs import PairSource, register


def resolve(pair: dict, cache: Path) -> tuple[Path, Path]:
    """(base, mllm) of a twin, built into `<cache>/twins/` when missing."""
    from omegaconf import OmegaConf

    from harness.models import twins

    try:
        return twins.ensure_pair(OmegaConf.create(pair), Path(cache))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def identity(pair: dict) -> dict:
    """The build block and its build key."""
    from harness.models.twins import build_key

    return {"build": pair.get("build"), "build_key": build_key(pair.get("build"))}


register(PairSource("twin", resolve, identity))
