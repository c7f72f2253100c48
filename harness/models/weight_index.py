"""The weight index of a sharded checkpoint (`model.safetensors.index.json`,
`pytorch_model.bin.index.json`): which shard files it names."""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import CheckpointError


def indexed_files(index: Path) -> list[Path]:
    """The shard files `index` maps weights to, sorted; CheckpointError when the index does not
    parse or names a file the directory lacks."""
    directory = index.parent
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({directory / f for f in weight_map.values()})
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{index} is not a valid weight index: {err}") from err
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{index} lists {missing[0].name}, which is missing from "
                              f"{directory}; re-download the checkpoint")
    return files
