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
- ``_tanh32(x)``: tanh of a float32 that a loop vectorises (libm's ``tanhf`` per element
  does not: GPT-2's tanh-GELU epilogue, when it reaches the kernel written out, spent
  ~25 ms a call in it at 512 x 3072): below |x| = 0.55 the odd Taylor polynomial to
  x^17 (truncation < 5e-9 relative), above it 1 - 2 / (exp(2|x|) + 1) with ``_exp32``
  and the sign of x; tanh(+-inf) = +-1, NaN stays NaN, -0 stays -0.
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

# ``noalias``: Numba's own flag (numba.core.compiler.Flags.noalias, which its parfor
# lowering sets on the functions it outlines), marking the array arguments' data
# pointers noalias; njit has no option for it, so it is mapped here where this Numba
# has the option machinery (_NOALIAS is empty where not: the kernels still run, slower).
try:
    from numba.core import cpu as _cpu, options as _options
    if not hasattr(_cpu.CPUTargetOptions, "noalias"):
        _cpu.CPUTargetOptions.noalias = _options.TargetOptions.Mapping("noalias")
    _NOALIAS = {"noalias": True}
except (ImportError, AttributeError):
    _NOALIAS = {}


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
def _tanh32(x):
    a = abs(x)
    x2 = x * x
    p = np.float32(0.000590027440945586)     # tanh's odd Taylor series to x^17, Horner
    p = np.float32(-0.0014558343870513183) + x2 * p
    p = np.float32(0.003592128036572481) + x2 * p
    p = np.float32(-0.008863235529902197) + x2 * p
    p = np.float32(0.021869488536155203) + x2 * p
    p = np.float32(-0.05396825396825397) + x2 * p
    p = np.float32(0.13333333333333333) + x2 * p
    p = np.float32(-0.3333333333333333) + x2 * p
    small = x * (np.float32(1.0) + x2 * p)
    e = _exp32(a + a)
    big = np.float32(1) - np.float32(2) / (e + np.float32(1))
    big = big if x >= 0 else -big
    r = small if a < np.float32(0.55) else big
    return r if x == x else x


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


def tanh_fn(dtype: str, fastmath: bool = False) -> str:
    """The function that computes tanh of a ``dtype`` value in kernel source (libm's under
    full fastmath, like :func:`exp_fn`)."""
    return "_tanh32" if dtype == "float32" and not fastmath else "math.tanh"


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
