"""ONNX files decoded without the ``onnx`` package: the protobuf messages the ONNX reader looks at.

Field numbers and types follow ``onnx/onnx.proto`` (proto2), as in :mod:`lstm_convert._onnx_proto`, the
writer's encoder. Decoding keeps protobuf's own rules, so that the reader sees the graph onnxruntime runs:
unknown fields are skipped, a known field with another wire type is an unknown field, a singular scalar
given twice keeps its last value and a singular message given twice is the merge of both, repeated scalars
come packed or one tag per value, an enum value outside its enum is an unknown field. Fields the reader
never looks at (functions, training info, sparse initializers, annotations) are skipped without being
parsed, so a file whose unread parts are damaged is still read where protobuf (and onnxruntime) would
refuse it whole; what both parse, they parse alike (``tests/test_onnx_decode.py``, and the ONNX fuzz test).

Each message is a plain object whose attributes are its fields (a repeated field a list, an absent message
an empty one), with ``HasField``. Tensor values are not copied: ``raw_data`` is a view of the file's bytes,
and :func:`to_array` makes a read-only array over it once its length is checked against the dims.

Hostile input: every length is checked against the bytes left before anything is taken, a varint has at
most 10 bytes, messages nest at most :data:`MAX_DEPTH` deep (a graph in an attribute of a node of a
graph ...), text must be UTF-8, group wire types are refused; each is a :class:`DecodeError` saying what
and at which byte.
"""

from __future__ import annotations

import struct
from typing import Any

from ._lazy import np

MAX_DEPTH = 64
# TensorProto.DataLocation; AttributeProto.AttributeType
DEFAULT, EXTERNAL = 0, 1
UNDEFINED, FLOAT, INT, STRING, TENSOR, GRAPH, FLOATS, INTS, STRINGS, TENSORS, GRAPHS = range(11)
SPARSE_TENSOR, SPARSE_TENSORS, TYPE_PROTO, TYPE_PROTOS = 11, 12, 13, 14


class DecodeError(ValueError):
    """The bytes are not the protobuf encoding of an ONNX model."""


# Field kinds: how a value is carried (wire type 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32) and
# what it becomes. "i64"/"i32"/"u64" varints, "f32"/"f64" fixed, "u32" a fixed32 kept as its bits (a
# checksum), "str" UTF-8 text, "bytes" (copied: short texts), "view" (a memoryview into the file: tensor
# data), "enum:N" an int32 enum of values 0..N-1, or a message class. A repeated numeric field of a tensor
# ("data") is kept as NumPy chunks, not Python numbers.
_WIRE = {"i64": 0, "i32": 0, "u64": 0, "f32": 5, "u32": 5, "f64": 1, "str": 2, "bytes": 2, "view": 2}
_NUMERIC = {"i64": "<i8", "i32": "<i4", "u64": "<u8", "f32": "<f4", "f64": "<f8"}


class Message:
    """A decoded message: FIELDS maps a field number to (name, kind, repeated, data)."""

    FIELDS: dict[int, tuple[str, Any, bool, bool]] = {}

    def __init__(self) -> None:
        self._present: set[str] = set()
        for name, kind, repeated, _ in self.FIELDS.values():
            if repeated:
                setattr(self, name, [])
            elif isinstance(kind, type):
                setattr(self, name, kind())
            else:
                setattr(self, name, _DEFAULTS.get(kind, 0))

    def set(self, name: str, value: Any) -> None:
        """Give a field a value, as if the file had it (the reader fills external data so)."""
        setattr(self, name, value)
        self._present.add(name)

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf's name, which the reader's code uses
        return name in self._present

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r:.40}" for n, *_ in self.FIELDS.values() if n in self._present)
        return f"{type(self).__name__}({shown})"


_DEFAULTS = {"str": "", "bytes": b"", "view": b"", "f32": 0.0, "f64": 0.0}


def _fields(*specs: tuple) -> dict[int, tuple[str, Any, bool, bool]]:
    out = {}
    for spec in specs:
        number, name, kind = spec[:3]
        flags = spec[3] if len(spec) > 3 else ""
        out[number] = (name, kind, "r" in flags, "d" in flags)
    return out


class StringStringEntry(Message):
    FIELDS = _fields((1, "key", "str"), (2, "value", "str"))


class OperatorSetId(Message):
    FIELDS = _fields((1, "domain", "str"), (2, "version", "i64"))


class Dimension(Message):
    FIELDS = _fields((1, "dim_value", "i64"), (2, "dim_param", "str"), (3, "denotation", "str"))


class TensorShape(Message):
    FIELDS = _fields((1, "dim", Dimension, "r"))


class TensorType(Message):
    FIELDS = _fields((1, "elem_type", "i32"), (2, "shape", TensorShape))


class TypeProto(Message):
    FIELDS = _fields((1, "tensor_type", TensorType), (6, "denotation", "str"))


class ValueInfo(Message):
    FIELDS = _fields((1, "name", "str"), (2, "type", TypeProto), (3, "doc_string", "str"))


class Tensor(Message):
    FIELDS = _fields((1, "dims", "i64", "r"), (2, "data_type", "i32"), (4, "float_data", "f32", "rd"),
                     (5, "int32_data", "i32", "rd"), (6, "string_data", "bytes", "r"), (7, "int64_data", "i64", "rd"),
                     (8, "name", "str"), (9, "raw_data", "view"), (10, "double_data", "f64", "rd"),
                     (11, "uint64_data", "u64", "rd"), (12, "doc_string", "str"),
                     (13, "external_data", StringStringEntry, "r"), (14, "data_location", "enum:2"))


class Attribute(Message):
    FIELDS: dict = {}  # filled below: an attribute holds graphs, and a graph nodes with attributes


class Node(Message):
    FIELDS = _fields((1, "input", "str", "r"), (2, "output", "str", "r"), (3, "name", "str"), (4, "op_type", "str"),
                     (5, "attribute", Attribute, "r"), (6, "doc_string", "str"), (7, "domain", "str"))


class Graph(Message):
    FIELDS = _fields((1, "node", Node, "r"), (2, "name", "str"), (5, "initializer", Tensor, "r"),
                     (10, "doc_string", "str"), (11, "input", ValueInfo, "r"), (12, "output", ValueInfo, "r"),
                     (13, "value_info", ValueInfo, "r"))


Attribute.FIELDS = _fields((1, "name", "str"), (2, "f", "f32"), (3, "i", "i64"), (4, "s", "bytes"), (5, "t", Tensor),
                           (6, "g", Graph), (7, "floats", "f32", "r"), (8, "ints", "i64", "r"),
                           (9, "strings", "bytes", "r"), (10, "tensors", Tensor, "r"), (11, "graphs", Graph, "r"),
                           (13, "doc_string", "str"), (20, "type", "enum:15"), (21, "ref_attr_name", "str"))


class Model(Message):
    FIELDS = _fields((1, "ir_version", "i64"), (2, "producer_name", "str"), (3, "producer_version", "str"),
                     (4, "domain", "str"), (5, "model_version", "i64"), (6, "doc_string", "str"), (7, "graph", Graph),
                     (8, "opset_import", OperatorSetId, "r"), (14, "metadata_props", StringStringEntry, "r"))


# -- decoding ------------------------------------------------------------------------------------------


def load(path: Any) -> Model:
    """The ModelProto in the file at ``path`` (DecodeError if its bytes are not one)."""
    with open(path, "rb") as handle:
        data = handle.read()
    return decode(data)


def decode(data: bytes) -> Model:
    return _decode(Model, data, [(0, len(data))], 0)


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise DecodeError(f"a number cut short at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
        if shift >= 70:
            raise DecodeError(f"a number longer than 10 bytes at byte {pos - 10}")


def _signed(value: int, kind: str) -> int:
    if kind == "i32":
        value &= 0xFFFFFFFF
        return value - (1 << 32) if value >= 1 << 31 else value
    if kind == "i64":
        return value - (1 << 64) if value >= 1 << 63 else value
    return value


def _packed_varints(buf: bytes, start: int, end: int, kind: str) -> Any:
    """The varints in ``buf[start:end]``, as one NumPy array of the field's type."""
    raw = np.frombuffer(buf, np.uint8, end - start, start)
    stops = np.flatnonzero(raw < 0x80)
    if end > start and (not len(stops) or stops[-1] != end - start - 1):
        raise DecodeError(f"a packed list of numbers cut short at byte {end}")
    firsts = np.concatenate(([0], stops[:-1] + 1)) if len(stops) else stops
    lengths = stops - firsts + 1
    if len(lengths) and int(lengths.max()) > 10:
        raise DecodeError(f"a number longer than 10 bytes in the list at byte {start}")
    values = np.zeros(len(stops), np.uint64)
    for k in range(int(lengths.max()) if len(lengths) else 0):
        take = lengths > k
        values[take] |= (raw[firsts[take] + k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
    if kind == "i64":
        return values.view(np.int64)
    if kind == "i32":
        return (values & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)
    return values


def _text(buf: bytes, start: int, end: int) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"the name or text {bytes(buf[start:min(end, start + 40)])!r} at byte {start} is not "
                          "UTF-8; the file is damaged") from None


def _decode(cls: type, buf: bytes, spans: list[tuple[int, int]], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise DecodeError(f"messages nested more than {MAX_DEPTH} deep at byte {spans[0][0]}")
    msg = cls()
    fields = cls.FIELDS
    singular: dict[str, list[tuple[int, int]]] = {}  # a singular message field: every span given for it
    for start, end in spans:
        pos = start
        while pos < end:
            at = pos
            key, pos = _varint(buf, pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise DecodeError(f"a field numbered 0 at byte {at}")
            if wire == 0:
                value, pos = _varint(buf, pos, end)
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                if pos + size > end:
                    raise DecodeError(f"a field cut short at byte {at}")
                value, pos = pos, pos + size
            elif wire == 2:
                size, pos = _varint(buf, pos, end)
                if size > end - pos:
                    raise DecodeError(f"a field of {size} bytes at byte {at}, past the end of its message ({end})")
                value, pos = pos, pos + size
            else:
                raise DecodeError(f"wire type {wire} (field {number}) at byte {at}, which ONNX and TensorFlow files do not use")
            field = fields.get(number)
            if field is None:
                continue
            name, kind, repeated, data = field
            if isinstance(kind, type):
                if wire != 2:
                    continue
                if repeated:
                    getattr(msg, name).append(_decode(kind, buf, [(value, pos)], depth + 1))
                else:
                    singular.setdefault(name, []).append((value, pos))
                    msg._present.add(name)
                continue
            if kind.startswith("enum:"):
                if wire != 0:
                    continue
                number_value = _signed(value, "i32")
                if 0 <= number_value < int(kind[5:]):
                    setattr(msg, name, number_value)
                    msg._present.add(name)
                continue
            if repeated and wire == 2 and kind in _NUMERIC:  # packed
                if kind in ("f32", "f64"):
                    size = 4 if kind == "f32" else 8
                    if (pos - value) % size:
                        raise DecodeError(f"a packed list of numbers of {pos - value} bytes at byte {at}")
                    chunk = np.frombuffer(buf, _NUMERIC[kind], (pos - value) // size, value)
                else:
                    chunk = _packed_varints(buf, value, pos, kind)
                if data:
                    getattr(msg, name).append(chunk)
                else:
                    getattr(msg, name).extend(chunk.tolist())
                continue
            if wire != _WIRE[kind]:
                continue
            if kind in ("i64", "i32", "u64"):
                item: Any = _signed(value, kind)
            elif kind == "f32":
                item = struct.unpack_from("<f", buf, value)[0]
            elif kind == "u32":
                item = struct.unpack_from("<I", buf, value)[0]
            elif kind == "f64":
                item = struct.unpack_from("<d", buf, value)[0]
            elif kind == "str":
                item = _text(buf, value, pos)
            elif kind == "bytes":
                item = bytes(buf[value:pos])
            else:
                item = memoryview(buf)[value:pos]
            if repeated:
                getattr(msg, name).append(np.array([item], _NUMERIC[kind]) if data else item)
            else:
                setattr(msg, name, item)
                msg._present.add(name)
    for name, given in singular.items():
        setattr(msg, name, _decode(fields_kind(fields, name), buf, given, depth + 1))
    return msg


def fields_kind(fields: dict, name: str) -> type:
    return next(kind for n, kind, *_ in fields.values() if n == name)


# -- values --------------------------------------------------------------------------------------------

# TensorProto.DataType -> NumPy dtype (little-endian); the typed field that holds values not given as raw
# bytes. FLOAT16 and BFLOAT16 are bit patterns in int32_data, BOOL and the small integers too.
_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "?", 10: "<f2", 11: "<f8",
           12: "<u4", 13: "<u8", 14: "<c8", 15: "<c16", 16: "bfloat16"}
_TYPED = {1: "float_data", 14: "float_data", 11: "double_data", 15: "double_data", 7: "int64_data",
          12: "uint64_data", 13: "uint64_data"}
STRING_TYPE = 8


def np_dtype(data_type: int) -> Any:
    """The NumPy dtype of an ONNX element type (ValueError for one this module does not read)."""
    name = _DTYPES.get(data_type)
    if name is None:
        raise ValueError(f"element type {data_type} is not one lstm_convert reads")
    if name == "bfloat16":
        from ._optional import require

        return np.dtype(require("ml_dtypes").bfloat16)
    return np.dtype(name)


def to_array(tensor: Tensor) -> Any:
    """The tensor's values as a NumPy array of its dims (ValueError when they do not fit the dims)."""
    if tensor.data_location == EXTERNAL:
        raise ValueError("its values are in an external file that was not read")
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimension in {tuple(dims)}")
    count = 1
    for d in dims:
        count *= d
    if tensor.data_type == STRING_TYPE:
        if len(tensor.string_data) != count:
            raise ValueError(f"{len(tensor.string_data)} strings for shape {tuple(dims)}")
        out = np.empty(count, dtype=object)
        out[:] = tensor.string_data
        return out.reshape(dims)
    dtype = np_dtype(tensor.data_type)
    if tensor.HasField("raw_data"):
        raw = tensor.raw_data
        if len(raw) != count * dtype.itemsize:
            raise ValueError(f"{len(raw)} bytes of values for shape {tuple(dims)} of {dtype.name}, expected "
                             f"{count * dtype.itemsize}")
        return np.frombuffer(raw, dtype).reshape(dims)
    field = _TYPED.get(tensor.data_type, "int32_data")
    chunks = getattr(tensor, field)
    values = np.concatenate(chunks) if chunks else np.zeros(0, _NUMERIC[Tensor.FIELDS[_NUMBER[field]][1]])
    wanted = count * 2 if dtype.kind == "c" else count
    if len(values) != wanted:
        raise ValueError(f"{len(values)} values for shape {tuple(dims)}, expected {wanted}")
    if dtype.kind == "c":
        return values.view(dtype).reshape(dims)
    if field == "int32_data" and dtype.itemsize == 2 and dtype.kind in "fV" or dtype.name == "bfloat16":
        return values.astype(np.uint16).view(dtype).reshape(dims)  # FLOAT16 / BFLOAT16 bit patterns
    if dtype.kind == "b":
        return (values != 0).reshape(dims)
    return values.astype(dtype).reshape(dims)


_NUMBER = {name: number for number, (name, *_) in Tensor.FIELDS.items()}


class Unread:
    """An attribute value of a kind the reader never uses (a sparse tensor, a type): no check accepts it."""

    def __init__(self, kind: int) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<attribute of type {self.kind}>"


def attribute_value(attr: Attribute) -> Any:
    """The value of an attribute by its declared type, as ``onnx.helper.get_attribute_value`` gives it:
    None for an attribute of no type, ValueError for a reference to a function's attribute."""
    if attr.ref_attr_name:
        raise ValueError(f"attribute {attr.name} refers to a function's attribute {attr.ref_attr_name!r}")
    kind = attr.type
    if kind in (SPARSE_TENSOR, SPARSE_TENSORS, TYPE_PROTO, TYPE_PROTOS):
        return Unread(kind)
    return {UNDEFINED: lambda: None, FLOAT: lambda: attr.f, INT: lambda: attr.i, STRING: lambda: attr.s,
            TENSOR: lambda: attr.t, GRAPH: lambda: attr.g, FLOATS: lambda: list(attr.floats),
            INTS: lambda: list(attr.ints), STRINGS: lambda: list(attr.strings), TENSORS: lambda: list(attr.tensors),
            GRAPHS: lambda: list(attr.graphs)}[kind]()
