"""Math helpers the Numba kernels share, as source text: every kernel module (rendered
kernels, templates, library ops) starts with ``VMATH``, so a change here changes their
cache keys too (the kernel cache is keyed by a module's source).

- ``_exp32(x)``: exp of a float32 that a loop over it vectorises (LLVM turns libm's
  ``expf``, called per element, into a scalar call; 8-wide AVX2 with this: ~3x faster).
  Cody-Waite reduction ``x = n ln2 + f`` (|f| <= ln2/2), ``e^f`` by its degree-7 Taylor
  polynomial (truncation < 5e-9), ``2^n`` as two float32s built from exponent bits
  (``2^(n//2) * 2^(n - n//2)``: both halves are normal numbers, so results that
  underflow to subnormals or overflow to inf round as they should). Within 1.7 ulp of
  the true value over float32's range (libm: 1 ulp); exp(-inf) = 0, exp(inf) = inf,
  NaN stays NaN. Branch-free: the clamps and the NaN case are selects. Safe under the
  ``reassoc``/``contract`` flags (the attention softmax uses them), not under full
  fast-math (``nnan``/``ninf`` drop the NaN and range handling): kernels compiled with
  ``fastmath=True`` call libm instead (``exp_fn``, ``sigmoid_fn``).
- ``_max`` / ``_min``: NumPy's maximum and minimum (a NaN operand gives NaN), for the
  rendered ``max``/``min`` (relu, max reductions, ``graphc.maximum``).
- ``_sigmoid32`` / ``_sigmoid32_libm`` / ``_sigmoid64``: 1 / (1 + exp(-x)) without overflow for large |x|, both
  sides computed and one selected (a select, not a branch, so a loop over it vectorises),
  every constant in the argument's dtype (an int literal would widen float32 to float64).
"""

VMATH = '''import math
import numpy as np
import numba as nb
from llvmlite import ir as _ir
from numba.core import types as _types
from numba.extending import intrinsic as _intrinsic


@_intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of a 32- or 64-bit integer."""
    if not isinstance(bits, _types.Integer) or bits.bitwidth not in (32, 64):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if bits.bitwidth != 32:
            v = builder.trunc(v, _ir.IntType(32))
        return builder.bitcast(v, _ir.FloatType())
    return _types.float32(bits), codegen


@nb.njit(inline="always")
def _exp32(x):
    lo = np.float32(-110.0)
    hi = np.float32(110.0)
    xc = x if x > lo else lo
    xc = xc if xc < hi else hi
    n = np.floor(xc * np.float32(1.4426950408889634) + np.float32(0.5))
    f = xc - n * np.float32(0.693145751953125) - n * np.float32(1.428606765330187e-06)
    p = np.float32(1) + f * (np.float32(1) + f * (np.float32(1 / 2) + f * (
        np.float32(1 / 6) + f * (np.float32(1 / 24) + f * (np.float32(1 / 120) + f * (
            np.float32(1 / 720) + f * np.float32(1 / 5040)))))))
    k = np.int32(n)
    k1 = k >> 1
    k2 = k - k1
    r = p * _f32_from_bits((k1 + np.int32(127)) << 23) \\
        * _f32_from_bits((k2 + np.int32(127)) << 23)
    return r if x == x else x


@nb.njit(inline="always")
def _max(a, b):
    """NumPy's maximum: a NaN operand gives NaN (Python's max(a, b) keeps a when b is
    NaN). The or is bitwise, so a loop over it has no branch."""
    return a if (a > b) | (a != a) else b


@nb.njit(inline="always")
def _min(a, b):
    return a if (a < b) | (a != a) else b


@nb.njit(inline="always")
def _sigmoid32(x):
    one = np.float32(1)
    e = _exp32(-abs(x))
    s = one / (one + e)
    return s if x >= 0 else e * s


@nb.njit(inline="always")
def _sigmoid32_libm(x):
    one = np.float32(1)
    e = math.exp(-abs(x))
    s = one / (one + e)
    return s if x >= 0 else e * s


@nb.njit(inline="always")
def _sigmoid64(x):
    e = math.exp(-abs(x))
    s = 1.0 / (1.0 + e)
    return s if x >= 0 else e * s
'''


def exp_fn(dtype: str, fastmath: bool = False) -> str:
    """The function that computes exp of a ``dtype`` value in kernel source. Under full
    ``fastmath`` LLVM may reorder ``p * 2^k1 * 2^k2`` (overflow to NaN near float32's top)
    and drop the NaN select, so such kernels keep libm's exp."""
    return "_exp32" if dtype == "float32" and not fastmath else "math.exp"


def sigmoid_fn(dtype: str, fastmath: bool = False) -> str:
    """The function that computes sigmoid of a ``dtype`` value in kernel source."""
    if dtype == "float32":
        return "_sigmoid32_libm" if fastmath else "_sigmoid32"
    return "_sigmoid64"
