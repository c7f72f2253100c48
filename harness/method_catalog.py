"""What the tables, plots and reports need to know about the merge methods, in one place: each
method's row label, the row order, and its default configuration, all read from the method
registry (harness/merge/registry.py, where each method file declares them).

The registry imports the method files (and torch with them), so this module imports it only
when asked. Configurations are labelled `k=v, ...` (parameters sorted by name, the seed left
out; `-` for none), the same label for a record's parameters and for the defaults.
"""

from __future__ import annotations


def rows() -> list[tuple[str, str]]:
    """(method, row label) of every registered method, in table order."""
    from harness.merge.registry import table_rows

    return table_rows()


def labels() -> dict[str, str]:
    """Method → row label."""
    return dict(rows())


def label(method: str) -> str:
    """A method's row label (its name when it is not registered)."""
    return labels().get(method, method)


def in_order(methods) -> list[str]:
    """`methods` in table order; unregistered names last, sorted."""
    order = [m for m, _ in rows()]
    return [m for m in order if m in methods] + sorted(set(methods) - set(order))


def format_value(v) -> str:
    """A parameter value as a configuration label shows it (lists and tuples joined by +)."""
    if isinstance(v, (list, tuple)):
        return "+".join(map(str, v))
    return str(v)


def config_label(params: dict | None) -> str:
    """`k=v, ...` of a parameter dict (sorted, the seed left out), or `-`."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in sorted((params or {}).items())
                     if k != "seed") or "-"


def default_labels() -> dict[str, str]:
    """Configuration label of each method's defaults (its parameter dataclass: the CLI's too,
    since conf/method leaves every value null; docs/methods.md)."""
    from harness.merge.registry import default_params, load_methods

    return {name: config_label(default_params(spec)) for name, spec in load_methods().items()}
