"""Seeded randomness of stochastic merges (dare, della): a counter-based stream per tensor.

Entries 2j and 2j + 1 (flat, row-major) of a tensor draw from the generator's j-th output
x_j = SplitMix64(seed_t, j), its top 24 bits and the next 24:
    u_2j = (x_j >> 40) · 2^-24,   u_2j+1 = ((x_j >> 16) mod 2^24) · 2^-24   (float32, exact, [0, 1))
    SplitMix64(s, j) = mix(s + (j + 1)·0x9E3779B97F4A7C15 mod 2^64)  (Steele et al. 2014; the
        j-th output of the generator seeded with s: Java's SplittableRandom, passes BigCrush)
    seed_t = (seed · 1_000_003 + crc32(base tensor name)) mod 2^63
so a draw depends only on (seed, tensor name, index): the same on every device, in any order,
chunking or number of threads, and the fused CPU kernels (harness/merge/kernels/) compute it
in parallel, two per output (a draw's 64-bit multiplies dominate their loops). `DRAWS` names this
definition in a merge's identity: merges drawn by an earlier definition (one draw per output,
"splitmix64-v1"; before it torch's Mersenne Twister) are not reused.
"""

from __future__ import annotations

import zlib

import torch

DRAWS = "splitmix64-v2"
_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def tensor_seed(seed: int, name: str) -> int:
    """The stream seed of one tensor."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (1 << 63)


def _signed(x: int) -> int:
    """A 64-bit pattern as the int64 value torch stores."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return torch.bitwise_right_shift(z, s).bitwise_and_((1 << (64 - s)) - 1)


def uniform_range(stream_seed: int, start: int, n: int, device) -> torch.Tensor:
    """Draws start … start + n − 1 of a tensor's stream (float32, in [0, 1)), on `device`.
    int64 arithmetic wraps modulo 2^64, which is the unsigned arithmetic of SplitMix64."""
    first, end = start >> 1, (start + n + 1) >> 1  # the outputs that hold these draws
    z = torch.arange(first + 1, end + 1, dtype=torch.int64, device=device)
    z.mul_(_signed(_GAMMA)).add_(_signed(stream_seed))
    z.bitwise_xor_(_shr(z, 30)).mul_(_signed(_MIX1))
    z.bitwise_xor_(_shr(z, 27)).mul_(_signed(_MIX2))
    z.bitwise_xor_(_shr(z, 31))
    pairs = torch.stack((_shr(z, 40), _shr(z, 16).bitwise_and_(0xFFFFFF)), dim=1).reshape(-1)
    at = start - 2 * first
    return pairs[at: at + n].to(torch.float32).mul_(2.0 ** -24)


def uniform_like(x: torch.Tensor, seed: int, name: str) -> torch.Tensor:
    """The draws of every entry of x (its shape, float32), on x's device."""
    return uniform_range(tensor_seed(seed, name), 0, x.numel(), x.device).reshape(x.shape)


class UniformStream:
    """The draws of one tensor handed out chunk by chunk in element order, from its stream
    seed (`tensor_seed`)."""

    def __init__(self, stream_seed: int, device: torch.device):
        self.seed = stream_seed
        self.device = device
        self.at = 0

    def next(self, n: int) -> torch.Tensor:
        """The next n draws."""
        u = uniform_range(self.seed, self.at, n, self.device)
        self.at += n
        return u
