"""The `micro` pair source: the embedded pair, built here on first use (docs/micro.md) and
named by its build key (its config, the torch release and the CPU numerics that trained it)."""

from __future__ import annotations

from pathlib import Path

from harness.pairs import PairSource, register


def resolve(pair: dict, cache: Path) -> tuple[Path, Path]:
    """(base, mllm) of the micro pair, built into `<cache>/micro/` when missing."""
    from harness.micro import ensure_pair

    return ensure_pair(pair, Path(cache), progress=True)


def identity(pair: dict) -> dict:
    """The build block and its build key."""
    from harness.micro.build import build_key

    return {"build": pair.get("build"), "build_key": build_key(pair.get("build"))}


register(PairSource("micro", resolve, identity))
