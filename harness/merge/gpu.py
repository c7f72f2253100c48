"""The CUDA pipeline (`merge.device=cuda`): disk reads, host→GPU copies, GPU arithmetic,
GPU→host copies and the output writers all run at the same time, on different units.

While the GPU merges unit i, the copy engines bring unit i+1 in and take unit i−1 out, the
prefetch thread reads unit i+2 from disk into the buffer pool and the writer threads write
units i−2 and earlier. In order, per unit (`run` is the schedule, `CudaStages` the CUDA side):
- read: the engine's prefetch thread reads the unit into pinned pool buffers (buffers.py);
- upload: its base and tuned tensors are copied to the GPU, `non_blocking`, on the upload
  stream, which then records an event;
- compute: the current stream waits for that event, merges the unit by the methods' definitions
  (apply.merge_tensor / merge_group, as on the CPU) and sums each merged tensor in float32 (a
  sum is NaN/Inf whenever an entry is: the engine's finiteness check, done on the GPU);
- download: the download stream waits for the current stream, copies the merged rows back over
  the tuned tensor's own pinned buffer and the sums to a small pinned tensor, and records an
  event;
- wait, finish: the host waits for that event; only then does the engine check the sums and
  hand the buffer to the writers, who give it back to the pool once written.
The host waits only there, two units behind the upload, so the GPU always has queued work (and
where a method's definition reads a value back, e.g. a top-k threshold, which waits for the
current stream alone: the copies go on).
GPU tensors made on one stream and used on another carry `record_stream`, so the caching
allocator does not reuse their memory while another stream may still use it.

Memory: the units in flight hold pool buffers that only this loop hands back, while the
prefetch thread may be waiting for buffers (`BufferPool.take` blocks at the budget). Before it
waits for a read, `run` therefore finishes units in flight until the unit being read fits in the
budget beside them, or none is left: a small budget (or a unit larger than it) makes the
pipeline sequential instead of deadlocking it.

`run` is device-agnostic (tests/test_cuda_pipeline.py drives it on the CPU); `CudaStages` is
the only CUDA code.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from harness.models.keymap import TensorPlan

# one merged tensor of a unit: (plan, base, tuned rows shared with the base), on one device
Work = tuple[TensorPlan, torch.Tensor, torch.Tensor]


class Stages(Protocol):
    """The device side of `run` (CudaStages; tests use a CPU stand-in)."""

    def upload(self, index: int, loaded: Any) -> Any:
        """Start copying unit `index` to the device; returns its in-flight record."""

    def compute(self, flight: Any) -> None:
        """Queue the unit's merge after its upload, then its copy back to the host."""

    def wait(self, flight: Any) -> set[str]:
        """Block until the unit is back on the host; the tuned names checked finite."""

    def abandon(self) -> None:
        """After a failure: wait until the device no longer touches any host buffer."""


@dataclass
class _Unit:
    index: int
    loaded: Any
    flight: Any
    computed: bool = False


def run(count: int, read: Callable[[int], Future], nbytes: Sequence[int], budget: int,
        stages: Stages, finish: Callable[[int, Any, set[str]], None]) -> None:
    """Drive `count` units through read → upload → compute (+ download) → wait → finish.

    Args:
        count: number of units.
        read: starts reading unit i into pool buffers (on the prefetch thread); a Future of it.
        nbytes: pool bytes each unit's read takes.
        budget: the pool's budget in bytes.
        stages: the device side.
        finish: called with (i, what read(i) gave, the tuned names the device found finite)
            once unit i is merged back into its buffers, in unit order; it gives them back.
    """
    flights: deque[_Unit] = deque()  # uploaded, not yet finished; oldest first
    held = 0  # pool bytes of the units in `flights`

    def retire() -> None:
        nonlocal held
        unit = flights.popleft()
        if not unit.computed:
            stages.compute(unit.flight)
        finite = stages.wait(unit.flight)
        held -= nbytes[unit.index]
        finish(unit.index, unit.loaded, finite)

    try:
        pending = read(0) if count else None
        for i in range(count):
            # the read may wait for pool buffers, and those of `flights` come back only
            # through this loop: make room for unit i first (all of it, past the budget)
            while flights and held + nbytes[i] > budget:
                retire()
            loaded = pending.result()
            if i + 1 < count:
                pending = read(i + 1)
            flights.append(_Unit(i, loaded, stages.upload(i, loaded)))
            held += nbytes[i]
            if len(flights) > 1 and not flights[-2].computed:  # while unit i uploads
                stages.compute(flights[-2].flight)
                flights[-2].computed = True
            if len(flights) > 2:  # its download was queued one step ago
                retire()
        while flights:
            retire()
    except BaseException:
        stages.abandon()
        raise


@dataclass
class _Flight:
    """One unit on its way through the GPU."""

    work: list[tuple[TensorPlan, torch.Tensor, torch.Tensor, torch.Tensor]]  # + host rows
    uploaded: torch.cuda.Event | None = None
    downloaded: torch.cuda.Event | None = None
    names: list[str] = field(default_factory=list)  # tuned names of the floating tensors
    sums: torch.Tensor | None = None  # their float32 sums, pinned, valid after `downloaded`


class CudaStages:
    """`Stages` on one CUDA device: copies on an upload and a download stream, the merge on
    the device's current stream (see the module docstring)."""

    def __init__(self, device: torch.device, work_of: Callable[[int, Any], list[Work]],
                 merge: Callable[[list[Work]], None]):
        """`work_of(i, loaded)`: unit i's tensors to merge, on the host (pinned pool buffers);
        `merge(work)`: merges them in place over each tuned tensor, on their device."""
        self.device = device
        self.work_of = work_of
        self.merge = merge
        self.up = torch.cuda.Stream(device)
        self.down = torch.cuda.Stream(device)

    def upload(self, index: int, loaded: Any) -> _Flight:
        """Queue the copies of unit `index`'s base and tuned rows to the GPU."""
        work = self.work_of(index, loaded)
        if not work:
            return _Flight([])
        with torch.cuda.stream(self.up):  # allocated on, and copied by, the upload stream
            moved = [(plan, base.to(self.device, non_blocking=True),
                      tuned.to(self.device, non_blocking=True), tuned)
                     for plan, base, tuned in work]
        return _Flight(moved, uploaded=self.up.record_event())

    def compute(self, flight: _Flight) -> None:
        """Queue the merge after the upload, and the download after the merge."""
        if not flight.work:
            return
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(flight.uploaded)
        for _, base, tuned, _ in flight.work:
            base.record_stream(stream)
            tuned.record_stream(stream)
        self.merge([(plan, base, tuned) for plan, base, tuned, _ in flight.work])
        floats = [(plan.tuned, tuned) for plan, _, tuned, _ in flight.work
                  if tuned.is_floating_point()]
        sums = torch.stack([t.sum(dtype=torch.float32) for _, t in floats]) if floats else None
        self.down.wait_stream(stream)
        with torch.cuda.stream(self.down):
            for _, _, tuned, host in flight.work:
                host.copy_(tuned, non_blocking=True)
                tuned.record_stream(self.down)
            if sums is not None:
                flight.sums = torch.empty(sums.shape, dtype=sums.dtype, pin_memory=True)
                flight.sums.copy_(sums, non_blocking=True)
                sums.record_stream(self.down)
        flight.names = [name for name, _ in floats]
        flight.downloaded = self.down.record_event()
        flight.work = []  # the GPU tensors go (not reused before both streams are past them)

    def wait(self, flight: _Flight) -> set[str]:
        """Wait for the download; the tuned names whose merged sum is finite."""
        if flight.downloaded is None:
            return set()
        flight.downloaded.synchronize()
        if flight.sums is None:
            return set()
        return {name for name, s in zip(flight.names, flight.sums.tolist()) if math.isfinite(s)}

    def abandon(self) -> None:
        """Wait for every queued copy (the host buffers are freed next)."""
        with contextlib.suppress(Exception):  # a failed device must not hide the first error
            torch.cuda.synchronize(self.device)
