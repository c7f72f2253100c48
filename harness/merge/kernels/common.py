"""What every fused kernel shares: loading and storing the stored bits as float32, torch's
lerp as fmas, the |Δ| key, the SplitMix64 draws, and the torch ↔ numpy storage views.

Each kernel reads the stored tensors directly (bfloat16 as uint16 bits, float16 as int16 bits,
float32 as is), computes in float32 and writes the merged value, rounded once, over `tuned`.
The arithmetic is the torch path's, step by step, so the two give the same bits:
    Δ = t − b (float32);  |Δ| compared through its float32 bits (non-negative floats order
    like their bit patterns);
    θ = fma(w, Δ, b) if |w| < 0.5 else fma(w − 1, Δ, t)       (torch's vectorised lerp)
    rounded to the stored dtype to nearest, ties to even.
The random draws are the counter-based SplitMix64 stream of harness/merge/randomness.py, two
per generator output. Checked: tests/test_kernels.py (loads, stores, draws against torch and
randomness.py, bit for bit).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

BLOCK = 1 << 16  # entries per parallel block (selection counts, tie quotas, dare's tasks)
SERIAL_BELOW = 1 << 18  # entries: smaller tensors run on one thread
_I32MAX = np.iinfo(np.int32).max


@intrinsic
def _fma(typingctx, a, b, c):
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return sig, codegen


@intrinsic
def _u2f(typingctx, x):
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return sig, codegen


@intrinsic
def _f2u(typingctx, x):
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return sig, codegen


def _u32_op(name):
    """A uint32 binary op in 32-bit arithmetic (numba widens uint32 arithmetic to 64 bits, which
    halves the lanes of vectorised loops)."""
    @intrinsic
    def op(typingctx, a, b):
        sig = types.uint32(types.uint32, types.uint32)

        def codegen(context, builder, signature, args):
            return getattr(builder, name)(args[0], args[1])
        return sig, codegen
    return op


_add32, _sub32, _mul32 = _u32_op("add"), _u32_op("sub"), _u32_op("mul")
_shr32, _shl32 = _u32_op("lshr"), _u32_op("shl")
_and32, _or32 = _u32_op("and_"), _u32_op("or_")


def _load(x):
    """float32 value of one stored entry (dispatch on the storage type)."""


def _store(f, like):
    """One float32 value rounded to the storage type of `like` (an array)."""


@overload(_load)
def _load_impl(x):
    if x == types.uint16:  # bfloat16 bits
        return lambda x: _u2f(np.uint32(x) << np.uint32(16))
    if x == types.int16:  # float16 bits
        def f16(x):
            h = np.uint32(np.uint16(x))
            sign = (h & np.uint32(0x8000)) << np.uint32(16)
            e = (h >> np.uint32(10)) & np.uint32(0x1F)
            m = h & np.uint32(0x3FF)
            bits = sign | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13))
            if e == 31:
                bits = sign | np.uint32(0x7F800000) | (m << np.uint32(13))
            elif e == 0:  # zero or subnormal: m units of 2^-24, exact in float32
                bits = sign | _f2u(np.float32(m) * np.float32(5.960464477539063e-08))
            return _u2f(bits)
        return f16
    if x == types.float32:
        return lambda x: x
    return None


@overload(_store)
def _store_impl(f, like):
    dtype = like.dtype
    if dtype == types.uint16:
        def bf16(f, like):
            u = _f2u(f)  # 32-bit arithmetic (see _u32_op): only NaNs carry out of bit 31
            h = _shr32(_add32(u, _add32(_and32(_shr32(u, np.uint32(16)), np.uint32(1)),
                                        np.uint32(0x7FFF))), np.uint32(16))
            if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
                h = np.uint32(0x7FC0)  # NaN
            return np.uint16(h)
        return bf16
    if dtype == types.int16:
        def f16(f, like):
            u = _f2u(f)
            sign = (u >> np.uint32(16)) & np.uint32(0x8000)
            a = u & np.uint32(0x7FFFFFFF)
            # rebias the exponent (normal results; the others wrap, and are replaced below)
            m = _sub32(a, np.uint32(0x38000000))
            h = _shr32(_add32(_add32(m, np.uint32(0xFFF)), _and32(_shr32(m, np.uint32(13)),
                                                                    np.uint32(1))), np.uint32(13))
            if a > np.uint32(0x7F800000):
                h = np.uint32(0x7E00)  # NaN
            elif a >= np.uint32(0x477FF000):
                h = np.uint32(0x7C00)  # rounds to inf
            elif a < np.uint32(0x38800000):  # subnormal: units of 2^-24, to nearest even
                h = np.uint32(np.rint(_u2f(a) * np.float32(16777216.0)))
            return np.int16(np.uint16(sign | h))
        return f16
    if dtype == types.float32:
        return lambda f, like: f
    return None


@njit
def _lerp(b, t, w):
    d = t - b
    if abs(w) < np.float32(0.5):
        return _fma(w, d, b)
    return _fma(w - np.float32(1.0), d, t)


@njit
def _key(b, t):
    return _f2u(abs(t - b))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's state step


@njit
def _state(seed, i):
    """SplitMix64's state for its i-th output (seeded with `seed`): seed + (i + 1)·_GOLDEN; the
    next output's state is this + _GOLDEN. Loops over consecutive draws add the step instead of
    multiplying (a third of the multiplies of a draw, which AVX2 builds from three 32-bit ones)."""
    return seed + np.uint64(i + 1) * _GOLDEN


@njit
def _scramble(z):
    """SplitMix64's output for state z."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit
def _mix(seed, i):
    """The i-th 64-bit output of SplitMix64 seeded with `seed` (see randomness.py)."""
    return _scramble(_state(seed, i))


_DRAW = np.float32(5.960464477539063e-08)  # 2^-24: one draw's step


@njit
def _even(x):
    """The even-index draw of generator output x: its top 24 bits (see randomness.py)."""
    return np.float32(x >> np.uint64(40)) * _DRAW


@njit
def _odd(x):
    """The odd-index draw of generator output x: its next 24 bits."""
    return np.float32((x >> np.uint64(16)) & np.uint64(0xFFFFFF)) * _DRAW


@njit
def _draw(seed, i):
    """Draw i of the stream seeded with `seed` (output i // 2)."""
    x = _mix(seed, i >> 1)
    return _odd(x) if i & 1 else _even(x)


@njit
def _fill_draws(seed, at, u):
    """u[c] = draw at + c of the stream seeded with `seed`, c < u.size: one output per two
    draws, its state stepped by adding _GOLDEN."""
    n = u.size
    c = 0
    if n > 0 and at & 1:
        u[0] = _draw(seed, at)
        c = 1
    z = _state(seed, (at + c) >> 1)
    for j in range((n - c) >> 1):
        x = _scramble(z)
        u[c + 2 * j] = _even(x)
        u[c + 2 * j + 1] = _odd(x)
        z += _GOLDEN
    if (n - c) & 1:
        u[n - 1] = _even(_scramble(z))


@contextmanager
def serial_if_small(n: int) -> Iterator[None]:
    """Run a small tensor's kernels on one thread: a parallel region ends only when every
    thread has finished, and with the reader and writer threads busy a worker can wait a whole
    scheduler slice (measured ~5 ms per 2048-entry tensor, against 0.2 ms alone)."""
    if n >= SERIAL_BELOW:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def storage(x: torch.Tensor) -> np.ndarray:
    """The flat numpy view of a tensor's storage the kernels read: bfloat16 → uint16,
    float16 → int16, float32 → float32 (a view: writes go to the tensor)."""
    flat = x.reshape(-1)
    if x.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy().view(np.uint16)
    if x.dtype == torch.float16:
        return flat.view(torch.int16).numpy()
    if x.dtype == torch.float32:
        return flat.numpy()
    raise TypeError(f"fused kernels take bfloat16, float16 or float32, not {x.dtype}")


def f32_key(value: float) -> int:
    """The bit pattern of a non-negative float as float32 (orders like the value)."""
    return int(np.array(value, dtype=np.float32).view(np.uint32))
