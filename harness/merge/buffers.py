"""A byte-budgeted pool of reusable tensor buffers for the merge engine.

Every tensor the engine reads lands in a pool buffer, is merged in place there and is written
from there; once written the buffer goes back to the pool and the next tensor of the same size
reuses it. Two things follow:
- memory is flat: the pool never holds more than `budget` bytes (a reader that would exceed it
  waits until the writer hands buffers back), whatever the size of the model;
- fresh memory is rare: a model has a handful of distinct tensor sizes, so after the first layer
  every read goes into pages that are already mapped (a page fault per 4 KiB costs more here
  than the merge arithmetic).
A request larger than the whole budget is still served when nothing else is held, so one huge
tensor (a 128 k-token embedding) can never deadlock the pipeline.

For a CUDA merge the buffers are pinned (page-locked, `pin=True`), so host↔GPU copies run
asynchronously (harness/merge/gpu.py). torch's pinned-memory allocator rounds each block up to a
power of two and caches freed blocks, so pinned memory can reach about twice the budget during
the merge; `clear` hands the cached blocks back.
"""

from __future__ import annotations

import threading

import torch

MEMORY_MB = 768  # default budget (merge.memory_mb in conf/config.yaml, which must agree)


class BufferPool:
    """Reusable uint8 CPU buffers, at most `budget` bytes allocated at a time (see module doc).

    `pin`: allocate page-locked buffers (for a CUDA merge); ignored where CUDA is unavailable,
    since there is no device to copy to and torch cannot pin memory without one.
    """

    def __init__(self, budget: int, pin: bool = False):
        self.budget = int(budget)
        self.pin = bool(pin) and torch.cuda.is_available()
        self._free: dict[int, list[torch.Tensor]] = {}
        self._allocated = 0  # bytes in buffers that exist (held or free)
        self._held = 0       # bytes in buffers handed out
        self.peak = 0
        self._closed = False
        self._cond = threading.Condition()

    def take(self, nbytes: int, already_held: int = 0) -> torch.Tensor:
        """A buffer of exactly nbytes; waits while the budget is spent by others' buffers.

        `already_held`: bytes the caller holds for the same unit of work; they do not count as
        held by others when deciding whether an over-budget request may go ahead.
        """
        nbytes = int(nbytes)
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("buffer pool closed (the merge was stopped)")
                free = self._free.get(nbytes)
                if free:
                    buf = free.pop()
                    self._held += nbytes
                    return buf
                self._evict(nbytes)
                if self._allocated + nbytes <= self.budget or self._held <= already_held:
                    break
                self._cond.wait()
            self._allocated += nbytes
            self._held += nbytes
            self.peak = max(self.peak, self._allocated)
        return torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=self.pin)[:nbytes]

    def _evict(self, nbytes: int) -> None:
        """Drop free buffers of other sizes until nbytes more fit in the budget (lock held)."""
        for size in sorted(self._free, reverse=True):
            bufs = self._free[size]
            while bufs and self._allocated + nbytes > self.budget:
                bufs.pop()
                self._allocated -= size
            if not bufs:
                del self._free[size]
            if self._allocated + nbytes <= self.budget:
                return

    def give(self, buf: torch.Tensor) -> None:
        """Return a buffer from `take` to the pool."""
        with self._cond:
            n = buf.numel()
            self._held -= n
            self._free.setdefault(n, []).append(buf)
            self._cond.notify_all()

    def close(self) -> None:
        """Wake and fail every waiting `take` (the merge failed or was interrupted)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> None:
        """Drop every free buffer (after a merge); pinned ones go back to the system."""
        with self._cond:
            for size, bufs in self._free.items():
                self._allocated -= size * len(bufs)
            self._free.clear()
        if self.pin:  # torch caches freed pinned blocks; page-locked memory is never swapped
            try:
                torch.accelerator.memory.empty_host_cache()
            except AttributeError:  # an older torch: the cache stays until the process ends
                pass
