"""An ambiguous dtype name ('float', 'int') is a DTypeError, not a silent float64."""
import numpy as np
import pytest

import graphc
from graphc.errors import DTypeError


@pytest.mark.parametrize("name, choices", [("float", "'float32' or 'float64'"),
                                           ("int", "'int32' or 'int64'")])
def test_spec_with_an_ambiguous_dtype_name(name, choices):
    with pytest.raises(DTypeError) as e:
        graphc.spec(("S", 4), name)
    assert "ambiguous" in str(e.value) and choices in str(e.value)
    assert "test_dtype_names.py" in str(e.value)     # the user's line


def test_cast_with_an_ambiguous_dtype_name():
    def f(x):
        return x.to("float")
    with pytest.raises(DTypeError):
        graphc.trace(f, graphc.spec(("S", 4), "int64"))


@pytest.mark.parametrize("dtype, want", [("float32", "float32"), ("f64", "float64"),
                                         (np.float32, "float32"), ("int64", "int64"),
                                         (np.dtype("int32"), "int32"), ("bool", "bool")])
def test_explicit_names_still_work(dtype, want):
    assert graphc.spec(("S",), dtype).type.dtype == want


def test_spec_with_dtype_none_is_not_a_silent_float64():
    # np.dtype(None) is float64, while spec's own default is float32
    with pytest.raises(DTypeError) as e:
        graphc.spec(("S", 4), None)
    assert "dtype None" in str(e.value) and "'float32' or 'float64'" in str(e.value)
    assert "test_dtype_names.py" in str(e.value)     # the user's line
    assert graphc.spec(("S", 4)).type.dtype == "float32"


def test_causal_mask_with_dtype_none_is_a_dtype_error():
    def f(x):
        return graphc.causal_mask(x.shape[0], x.shape[0], dtype=None)
    with pytest.raises(DTypeError, match="dtype None"):
        graphc.trace(f, graphc.spec(("S", 4)))
