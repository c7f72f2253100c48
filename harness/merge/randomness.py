"""Seeded randomness of stochastic merges (dare, della).

Each tensor draws from its own CPU generator seeded by (seed, tensor name), so a merge is the same
whatever the device, the tensor order or the number of threads:
    seed_i = (seed · 1_000_003 + crc32(base tensor name)) mod 2^63
    u = torch.rand(shape, generator=torch.Generator("cpu").manual_seed(seed_i))   # float32
"""

from __future__ import annotations

import zlib

import torch


def tensor_seed(seed: int, name: str) -> int:
    """The generator seed of one tensor."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (1 << 63)


def uniform_like(x: torch.Tensor, seed: int, name: str) -> torch.Tensor:
    """U[0, 1) float32 draws of x's shape from the tensor's own generator, on x's device."""
    gen = torch.Generator("cpu").manual_seed(tensor_seed(seed, name))
    return torch.rand(x.shape, generator=gen, dtype=torch.float32).to(x.device, non_blocking=True)


class UniformStream:
    """The draws of `uniform_like` for one tensor, handed out chunk by chunk in element order
    (consecutive `torch.rand` calls on one CPU generator continue the same sequence, so the
    chunks concatenate to exactly the whole-tensor draw)."""

    def __init__(self, seed: int, name: str, device: torch.device):
        self.gen = torch.Generator("cpu").manual_seed(tensor_seed(seed, name))
        self.device = device

    def next(self, n: int) -> torch.Tensor:
        """The next n draws (a reused buffer: valid until the next call)."""
        from harness.merge.stream import scratch

        u = torch.rand(n, generator=self.gen, dtype=torch.float32,
                       out=scratch(4, n, torch.device("cpu")))
        return u if self.device.type == "cpu" else u.to(self.device)
