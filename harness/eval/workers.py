"""Worker processes of a task's data processing receive modules by name, never by value.

Task code may process its dataset in worker processes: lmms-eval's GQA builds its `image` column
with `dataset.map(..., num_proc=8)` (one worker per row up to 8, whatever the core count). The
`datasets` library sends the mapped function to the workers with `multiprocess`, which pickles
with dill. That function is a closure of GQA's `utils.py`, which lmms-eval loads from its file
path without registering it in `sys.modules`, so dill pickles the function together with its
module's globals, among them the `datasets` module.

dill pickles a module by name only when it lives under `sys.prefix` or in a `site-packages`
folder; any other module (a package installed with `pip install --target DIR` and `PYTHONPATH`,
an editable install, a shared software tree on a cluster) is pickled by value, with its whole
namespace. For `datasets` that namespace holds `datasets.utils.tqdm.tqdm`, whose class attribute
`_lock` is tqdm's write lock, a `multiprocessing.RLock`. Pickling it raises
`RuntimeError: RLock objects should only be shared between processes through inheritance`, and
the task fails to load (in a venv the same run passes, which hides the cause).

`modules_by_name()` makes the pickler of worker messages (multiprocess's ForkingPickler) send
every module that is imported under its own name by name: a forked worker has it already, a
spawned one imports it from the same `sys.path`. Modules that are not importable by name (such as
lmms-eval's task `utils`) keep dill's by-value pickling. Only worker messages are affected;
`datasets`' fingerprints use their own pickler.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType


def _importable(module: ModuleType) -> bool:
    """Whether a worker can get `module` by importing its name."""
    name = getattr(module, "__name__", None)
    return (isinstance(name, str) and name != "__main__" and sys.modules.get(name) is module
            and getattr(module, "__spec__", None) is not None)


@contextlib.contextmanager
def modules_by_name() -> Iterator[None]:
    """Within the block, worker processes of `multiprocess` (the `datasets` library's pools)
    receive importable modules by name (see the module docstring for why)."""
    from multiprocess.reduction import ForkingPickler

    own = ForkingPickler.__dict__.get("dispatch")  # None: it shares dill.Pickler's table
    table = ForkingPickler.dispatch
    by_value = table[ModuleType]

    def save_module(pickler, obj: ModuleType) -> None:
        if _importable(obj):
            pickler.save_reduce(importlib.import_module, (obj.__name__,), obj=obj)
        else:
            by_value(pickler, obj)

    # a copy of the table (same type: it dispatches metaclasses too), so no other dill pickler
    # sees the change
    dispatch = type(table)(table.copy())
    dispatch[ModuleType] = save_module
    ForkingPickler.dispatch = dispatch
    try:
        yield
    finally:
        if own is None:
            del ForkingPickler.dispatch
        else:
            ForkingPickler.dispatch = own
