"""The few ONNX protobuf messages the ONNX writer makes, encoded here without the ``onnx`` package.

Fields are written in field-number order, scalars of ``onnx.proto`` (proto2) repeated fields one tag per
value, as protobuf's own serializer writes them, so that ``onnx`` re-serializes a parsed message to the
same bytes (``tests/test_onnx.py`` checks it). Field numbers follow ``onnx/onnx.proto``:

- ModelProto: ir_version 1, producer_name 2, graph 7, opset_import 8, metadata_props 14
- OperatorSetIdProto: domain 1, version 2;  StringStringEntryProto: key 1, value 2
- GraphProto: node 1, name 2, initializer 5, input 11, output 12
- NodeProto: input 1, output 2, name 3, op_type 4, attribute 5
- AttributeProto: name 1, f 2, i 3, s 4, floats 7, ints 8, strings 9, type 20
- TensorProto: dims 1, data_type 2, name 8, raw_data 9
- ValueInfoProto: name 1, type 2;  TypeProto: tensor_type 1;  TypeProto.Tensor: elem_type 1, shape 2;
  TensorShapeProto: dim 1;  Dimension: dim_value 1, dim_param 2
"""

from __future__ import annotations

import numbers
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class TensorProto:
    """``TensorProto.DataType`` values."""

    FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL = 1, 2, 3, 4, 5, 6, 7, 8, 9
    FLOAT16, DOUBLE, UINT32, UINT64, BFLOAT16 = 10, 11, 12, 13, 16


_BY_NAME = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8, "int8": TensorProto.INT8,
            "uint16": TensorProto.UINT16, "int16": TensorProto.INT16, "int32": TensorProto.INT32,
            "int64": TensorProto.INT64, "bool": TensorProto.BOOL, "float16": TensorProto.FLOAT16,
            "float64": TensorProto.DOUBLE, "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64,
            "bfloat16": TensorProto.BFLOAT16}
# AttributeProto.AttributeType
_FLOAT, _INT, _STRING, _FLOATS, _INTS, _STRINGS = 1, 2, 3, 6, 7, 8


def np_dtype_to_tensor_dtype(dtype: Any) -> int:
    return _BY_NAME[getattr(dtype, "name", str(dtype))]


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int64 is its two's complement, in ten bytes
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + varint(value)


def _bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return _key(field, 2) + varint(len(data)) + data


def _float(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", value)


def make_opsetid(domain: str, version: int) -> bytes:
    return _bytes(1, domain) + _int(2, version)  # the domain is written even when empty, as onnx sets it


def _attribute(name: str, value: Any) -> bytes:
    out = _bytes(1, name)
    if isinstance(value, numbers.Integral):  # bool and NumPy integers too, as onnx.helper takes them
        return out + _int(3, int(value)) + _int(20, _INT)
    if isinstance(value, numbers.Real):
        return out + _float(2, float(value)) + _int(20, _FLOAT)
    if isinstance(value, (str, bytes)):
        return out + _bytes(4, value) + _int(20, _STRING)
    values = list(value)
    if values and all(isinstance(v, (str, bytes)) for v in values):
        return out + b"".join(_bytes(9, v) for v in values) + _int(20, _STRINGS)
    if values and all(isinstance(v, numbers.Integral) for v in values):
        return out + b"".join(_int(8, int(v)) for v in values) + _int(20, _INTS)
    if values and all(isinstance(v, numbers.Real) for v in values):
        return out + b"".join(_float(7, float(v)) for v in values) + _int(20, _FLOATS)
    raise TypeError(f"attribute {name}: {value!r} is not a value the ONNX writer makes")


def make_node(op_type: str, inputs: Iterable[str], outputs: Iterable[str], name: str | None = None,
              **attrs: Any) -> bytes:
    out = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
    if name is not None:
        out += _bytes(3, name)
    out += _bytes(4, op_type)
    for key, value in sorted(attrs.items()):  # as onnx.helper.make_node orders them
        if value is not None:
            out += _bytes(5, _attribute(key, value))
    return out


def make_tensor_value_info(name: str, elem_type: int, shape: Sequence[int | str | None] | None) -> bytes:
    tensor = _int(1, elem_type)
    if shape is not None:
        dims = b""
        for dim in shape:
            if isinstance(dim, str):
                dims += _bytes(1, _bytes(2, dim))
            elif dim is None:
                dims += _bytes(1, b"")
            else:
                dims += _bytes(1, _int(1, int(dim)))
        tensor += _bytes(2, dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor))


def make_graph(nodes: Iterable[bytes], name: str, inputs: Iterable[bytes], outputs: Iterable[bytes]) -> bytes:
    return (b"".join(_bytes(1, n) for n in nodes) + _bytes(2, name)
            + b"".join(_bytes(11, i) for i in inputs) + b"".join(_bytes(12, o) for o in outputs))


def model_head(ir_version: int, producer_name: str, opsets: Iterable[bytes], props: Mapping[str, str]) -> bytes:
    """A ModelProto's fields but its graph (which the writer streams after them)."""
    return (_int(1, ir_version) + _bytes(2, producer_name) + b"".join(_bytes(8, o) for o in opsets)
            + b"".join(_bytes(14, _bytes(1, k) + _bytes(2, v)) for k, v in props.items()))


def tensor_head(name: str, data_type: int, dims: Sequence[int]) -> bytes:
    """A TensorProto's fields before its raw_data."""
    return b"".join(_int(1, d) for d in dims) + _int(2, data_type) + _bytes(8, name)
