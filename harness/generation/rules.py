"""The phrase lists of a pair: conf/generation/<name>.yaml, where <name> is `micro` for the micro
pair (`source: micro`) and the pair's `family` otherwise."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.errors import ConfigError
from harness.generation.classify import Rules

CONF = Path(__file__).resolve().parent.parent.parent / "conf" / "generation"
KEYS = ("name", "declining", "context", "visual_words", "visual_numbers")


def rules_name(pair: dict) -> str:
    """Which rule file a pair uses: `micro` for the micro pair, else its `family`."""
    if pair.get("source") == "micro":
        return "micro"
    family = pair.get("family")
    if not family:
        raise ConfigError(f"pair {pair.get('name')!r} has no `family:`; add it to its "
                          f"conf/pair file (llama, mistral, ...) so the generation analysis "
                          f"can pick conf/generation/<family>.yaml")
    return str(family)


def load_rules(name: str, conf: Path = CONF) -> Rules:
    """The Rules of conf/generation/<name>.yaml (ConfigError names the file and the fix)."""
    path = Path(conf) / f"{name}.yaml"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in Path(conf).glob("*.yaml")))
        raise ConfigError(f"no phrase lists {path} for the generation analysis; copy one of "
                          f"[{have}] to {path.name} and adapt it to the family's wording")
    spec = yaml.safe_load(path.read_text()) or {}
    extra = sorted(set(spec) - set(KEYS))
    if extra:
        raise ConfigError(f"{path}: unknown key {extra[0]!r}; valid keys: {list(KEYS)}")
    lists = {}
    for key in KEYS[1:]:
        value = spec.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            raise ConfigError(f"{path}: {key} must be a list of phrases, got {value!r}")
        lists[key] = tuple(str(v) for v in value)
    return Rules(name=str(spec.get("name", name)), **lists)


def rules_for(pair: dict, conf: Path = CONF) -> Rules:
    """The Rules of a pair config (a plain dict)."""
    return load_rules(rules_name(pair), conf)
