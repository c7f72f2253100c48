"""Outside modules that register themselves (merge methods, pair sources), named by an
environment variable as a comma-separated list of importable module names."""

from __future__ import annotations

import importlib
import os

from harness.errors import ConfigError


def import_plugins(env_var: str) -> None:
    """Import every module `env_var` names; ConfigError naming the variable and the module when
    one cannot be imported."""
    for module in filter(None, (m.strip() for m in os.environ.get(env_var, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"{env_var} names {module!r}, which cannot be imported: "
                              f"{err}") from err
