"""Random test data and the relative error every numeric test uses (shared by the op
helpers in tests/ops/opcheck.py and the backend helpers in tests/backends/numba_check.py;
this folder is on sys.path because tests/conftest.py lives here)."""
from __future__ import annotations

import numpy as np


def rel_err(out, expected, magnitude=None) -> float:
    """||out - expected|| / ||expected|| in float64 (absolute when expected is all zero).

    ``magnitude`` (same shape) is the size of the terms that were added up, e.g. |a| @ |b|
    for a @ b: rounding error scales with it, not with a result that cancels to near 0.
    """
    out = np.asarray(out, np.float64)
    expected = np.asarray(expected, np.float64)
    num = np.linalg.norm((out - expected).ravel())
    den = np.linalg.norm(expected.ravel())
    if magnitude is not None:
        den = max(den, np.linalg.norm(np.asarray(magnitude, np.float64).ravel()))
    return float(num / den) if den else float(num)


def randn(rng, shape, dtype="float32", scale=1.0):
    """Standard normal data with no exact zeros."""
    x = rng.standard_normal(shape) * scale
    x = np.where(x == 0, 0.5, x)
    return np.asarray(x, dtype=dtype)


def positive(rng, shape, dtype="float32", low=0.25, high=4.0):
    return np.asarray(rng.uniform(low, high, shape), dtype=dtype)


def nonzero(rng, shape, dtype="float32"):
    """Values bounded away from zero (divisors); integers in +-[1, 5] for int dtypes."""
    sign = np.where(rng.random(shape) < 0.5, -1, 1)
    if np.dtype(dtype).kind in "iu":
        return np.asarray(sign * rng.integers(1, 6, shape), dtype=dtype)
    return np.asarray(sign * rng.uniform(0.5, 2.0, shape), dtype=dtype)


def ints(rng, shape, dtype="int64", low=-9, high=10):
    """Integers in [low, high) without zeros."""
    x = rng.integers(low, high, shape)
    return np.asarray(np.where(x == 0, 1, x), dtype=dtype)
