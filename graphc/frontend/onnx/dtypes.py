"""ONNX element types <-> graphc dtypes."""
from __future__ import annotations

# TensorProto.DataType numbers (onnx.TensorProto.FLOAT ...), so this module needs no onnx.
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL, FLOAT16, DOUBLE, \
    UINT32, UINT64 = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13
BFLOAT16 = 16

GRAPHC_OF = {FLOAT: "float32", DOUBLE: "float64", INT32: "int32", INT64: "int64",
             BOOL: "bool"}
ONNX_OF = {v: k for k, v in GRAPHC_OF.items()}

NAMES = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
         7: "int64", 8: "string", 9: "bool", 10: "float16", 11: "double", 12: "uint32",
         13: "uint64", 14: "complex64", 15: "complex128", 16: "bfloat16",
         17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
         21: "uint4", 22: "int4", 23: "float4e2m1", 24: "float8e8m0", 25: "uint2",
         26: "int2"}

# Types a graph computes in a wider graphc dtype (widen=True, what graphc.onnx_backend
# asks for): the values of the narrow type all fit (uint64: those below 2**63), and the
# backend casts at the boundary.
WIDER = {FLOAT16: "float32", UINT8: "int32", INT8: "int32", UINT16: "int32",
         INT16: "int32", UINT32: "int64", UINT64: "int64"}


def graphc_dtype(elem_type: int, what: str, widen: bool = False, fail=None) -> str:
    dt = GRAPHC_OF.get(elem_type)
    if dt is None and widen:
        dt = WIDER.get(elem_type)
    if dt is None:
        msg = (f"{what} has ONNX type {NAMES.get(elem_type, elem_type)}; graphc computes in "
               f"float32, float64, int32, int64 and bool")
        if fail is not None:
            raise fail(msg)
        from ...errors import DTypeError
        raise DTypeError(msg)
    return dt
