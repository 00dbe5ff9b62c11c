"""The ONNX decoder (lstm_convert/_onnx_decode.py) against protobuf's own parse, through the onnx package:
every field it keeps agrees on real exports and on hand-made messages of every kind, protobuf's rules for
repeated, duplicated, unknown and mistyped fields hold, and damaged bytes end in DecodeError."""

from __future__ import annotations

import math
import struct
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import lstm_convert as lc
from lstm_convert import _onnx_decode as wire
from lstm_convert import files

_NP = {"i64": np.int64, "i32": np.int32, "u64": np.uint64, "f32": np.float64, "f64": np.float64}


def agrees(ours, theirs, where: str = "model") -> None:
    """Every field ``ours`` (a decoded message) keeps equals protobuf's ``theirs``, presence included."""
    for name, kind, repeated, data in type(ours).FIELDS.values():
        mine, other, at = getattr(ours, name), getattr(theirs, name), f"{where}.{name}"
        if isinstance(kind, type):
            if repeated:
                assert len(mine) == len(other), at
                for index, (a, b) in enumerate(zip(mine, other)):
                    agrees(a, b, f"{at}[{index}]")
            else:
                assert ours.HasField(name) == theirs.HasField(name), at
                agrees(mine, other, at)
        elif repeated and kind in _NP:
            mine = np.concatenate(mine).astype(_NP[kind]) if data and mine else np.asarray(mine, _NP[kind])
            assert np.array_equal(mine, np.asarray(list(other), _NP[kind]), equal_nan=kind in ("f32", "f64")), at
        elif repeated:
            assert list(mine) == list(other), at
        else:
            assert ours.HasField(name) == theirs.HasField(name), at
            if kind == "view":
                mine = bytes(mine)
            assert mine == other or (isinstance(mine, float) and math.isnan(mine) and math.isnan(other)), at


def decoded_both(data: bytes):
    return wire.decode(data), onnx.load_from_string(data)


def _every_kind_of_message() -> bytes:
    """A model with an attribute of every type, tensors in every typed field, a subgraph, shapes, metadata."""
    rng = np.random.default_rng(5)
    tensors = [numpy_helper.from_array(rng.normal(size=(2, 3)).astype(dt), f"raw_{dt}")
               for dt in ("float32", "float64", "float16")]
    tensors += [numpy_helper.from_array(np.array([[1, -2, 3]]).astype(dt), f"raw_{dt}")
                for dt in ("int64", "int32", "int8", "uint8", "int16")]
    tensors += [helper.make_tensor("typed_float", TensorProto.FLOAT, [2, 2], [0.5, -1.5, float("nan"), 3e38]),
                helper.make_tensor("typed_double", TensorProto.DOUBLE, [3], [1e-300, -2.0, 0.1]),
                helper.make_tensor("typed_int64", TensorProto.INT64, [3], [-(2 ** 63), 2 ** 63 - 1, 0]),
                helper.make_tensor("typed_int32", TensorProto.INT32, [2], [-(2 ** 31), 7]),
                helper.make_tensor("typed_half", TensorProto.FLOAT16, [3], [0.5, -2.0, 65504.0]),
                helper.make_tensor("typed_bool", TensorProto.BOOL, [3], [True, False, True]),
                helper.make_tensor("typed_uint64", TensorProto.UINT64, [2], [2 ** 64 - 1, 3]),
                helper.make_tensor("typed_uint16", TensorProto.UINT16, [2], [65535, 1]),
                helper.make_tensor("scalar", TensorProto.FLOAT, [], [2.5]),
                helper.make_tensor("empty", TensorProto.FLOAT, [0, 3], []),
                helper.make_tensor("words", TensorProto.STRING, [2], [b"a", b"z"])]
    branch = helper.make_graph([helper.make_node("Identity", ["raw_float32"], ["b_out"], name="inner")], "branch",
                               [], [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, [2, 3])])
    node = helper.make_node("Custom", ["x", ""], ["y", "z"], name="every", domain="my.domain", doc_string="doc",
                            f=-0.25, i=-7, s=b"\x00bytes", t=tensors[0], g=branch, floats=[1.5, float("inf")],
                            ints=[-1, 2 ** 40], strings=[b"x", b""], tensors=tensors[:2], graphs=[branch, branch])
    undefined = onnx.AttributeProto(name="no_type")
    node.attribute.append(undefined)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, None])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [1])], tensors,
                              value_info=[helper.make_tensor_value_info("z", TensorProto.BOOL, [])])
    model = helper.make_model(graph, producer_name="hand", producer_version="1.0", doc_string="d",
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)])
    helper.set_model_props(model, {"k": "v", "json": '{"a": [1, 2]}'})
    return model.SerializeToString()


def test_every_field_and_value_agrees_with_protobuf():
    ours, theirs = decoded_both(_every_kind_of_message())
    agrees(ours, theirs)
    for a, b in zip(ours.graph.initializer, theirs.graph.initializer, strict=True):
        mine, other = wire.to_array(a), numpy_helper.to_array(b)
        if a.data_type == wire.STRING_TYPE:  # kept as bytes (the onnx package decodes them, failing on non-UTF-8)
            mine = np.array([v.decode("utf-8", "replace") for v in mine.ravel()], dtype=object).reshape(mine.shape)
            other = np.array([str(v) for v in other.ravel()], dtype=object).reshape(other.shape)
        assert mine.shape == other.shape and mine.dtype == other.dtype, a.name
        assert np.array_equal(mine, other, equal_nan=mine.dtype.kind == "f"), a.name
    for a, b in zip(ours.graph.node[0].attribute, theirs.graph.node[0].attribute, strict=True):
        mine, other = wire.attribute_value(a), helper.get_attribute_value(b)
        if a.type in (wire.FLOAT, wire.INT, wire.STRING, wire.FLOATS, wire.INTS, wire.STRINGS, wire.UNDEFINED):
            assert mine == other or np.array_equal(mine, other, equal_nan=True), a.name
        else:
            assert type(mine).__name__ == {wire.TENSOR: "Tensor", wire.GRAPH: "Graph"}.get(a.type, "list"), a.name
    dims = ours.graph.input[0].type.tensor_type.shape.dim
    assert [(d.HasField("dim_value"), d.dim_value, d.dim_param) for d in dims] == [(False, 0, "batch"), (True, 4, ""),
                                                                                   (False, 0, "")]


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_torch_exports_decode_as_protobuf_does(tmp_path, rng, dynamo):
    import logging

    import torch

    from conftest import random_torch_lstm

    module = random_torch_lstm(rng, input_size=5, hidden_size=3, batch_first=True, num_layers=2,
                               bidirectional=True).eval()
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(2, 4, 5),), tmp_path / "t.onnx", dynamo=dynamo, input_names=["x"])
    finally:
        logging.disable(logging.NOTSET)
    agrees(*decoded_both((tmp_path / "t.onnx").read_bytes()))


def test_own_writer_decodes_as_protobuf_does(tmp_path, rng):
    from conftest import random_torch_lstm

    files.write(lc.Model((lc.from_torch(random_torch_lstm(rng, input_size=4, hidden_size=3)),)), tmp_path / "t.onnx")
    agrees(*decoded_both((tmp_path / "t.onnx").read_bytes()))


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + (_varint(len(payload)) + payload if wire_type == 2 else payload)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def test_protobufs_rules_for_repeated_duplicated_unknown_and_mistyped_fields():
    base = _every_kind_of_message()
    # A second graph field merges into the first (its repeated fields appended, its scalars replacing).
    extra = helper.make_graph([helper.make_node("Relu", ["y"], ["w"])], "renamed", [], [],
                              [numpy_helper.from_array(np.array([1.0], np.float32), "late")])
    twice = base + _field(7, 2, extra.SerializeToString())
    ours, theirs = decoded_both(twice)
    agrees(ours, theirs)
    assert ours.graph.name == "renamed" and ours.graph.node[-1].op_type == "Relu" and len(ours.graph.node) == 2
    # Packed dims, a last-wins scalar, an unknown field of each wire type, a known field of another wire type.
    tensor = (_field(1, 2, _varint(2) + _varint(3)) + _field(2, 0, _varint(7)) + _field(2, 0, _varint(1))
              + _field(8, 2, b"packed") + _field(9, 2, np.arange(6, dtype="<f4").tobytes())
              + _field(99, 0, _varint(5)) + _field(98, 1, b"\x00" * 8) + _field(97, 5, b"\x00" * 4)
              + _field(96, 2, b"xyz") + _field(8, 0, _varint(3)) + _field(14, 0, _varint(9)))
    model = _field(1, 0, _varint(8)) + _field(7, 2, _field(5, 2, tensor))
    ours, theirs = decoded_both(model)
    agrees(ours, theirs)
    (t,) = ours.graph.initializer
    assert t.name == "packed" and t.dims == [2, 3] and t.data_type == 1 and not t.HasField("data_location")
    np.testing.assert_array_equal(wire.to_array(t), np.arange(6, dtype=np.float32).reshape(2, 3))
    # Packed attribute floats and ints, and unpacked float_data, read as protobuf reads them.
    attr = (_field(1, 2, b"a") + _field(7, 2, struct.pack("<2f", 1.5, -2.0)) + _field(8, 2, _varint(2 ** 64 - 1))
            + _field(20, 0, _varint(7)))
    floats = _field(1, 0, _varint(2)) + _field(2, 0, _varint(1)) + b"".join(_field(4, 5, struct.pack("<f", v)) for v in (1.0, 2.0))
    model = _field(7, 2, _field(1, 2, _field(5, 2, attr)) + _field(5, 2, floats))
    ours, theirs = decoded_both(model)
    agrees(ours, theirs)
    assert ours.graph.node[0].attribute[0].ints == [-1] and ours.graph.node[0].attribute[0].floats == [1.5, -2.0]
    np.testing.assert_array_equal(wire.to_array(ours.graph.initializer[0]), np.array([1.0, 2.0], np.float32))


@pytest.mark.parametrize("data, message", [
    (b"\x08", "a number cut short at byte 1"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "a number longer than 10 bytes"),
    (b"\x3a\x05\x0a\x01", r"a field of 5 bytes at byte 0, past the end of its message \(4\)"),
    (b"\x3b", "wire type 3"),
    (b"\x00\x01", "a field numbered 0"),
    (b"\x3a\x04\x12\x02\xff\xfe", "is not UTF-8"),
    (b"\x3a\x05\x2a\x03\x0d\x00\x00", "a field cut short"),
    (b"\x3a\x07\x2a\x05\x22\x03\x00\x00\x00", "a packed list of numbers of 3 bytes"),
])
def test_damaged_bytes_are_a_decode_error_saying_what_and_where(data, message):
    with pytest.raises(wire.DecodeError, match=message):
        wire.decode(data)


def test_nesting_is_bounded_without_recursion_errors():
    graph = b""
    for _ in range(200):  # a graph in an attribute of a node of a graph ...
        graph = _field(1, 2, _field(5, 2, _field(6, 2, graph)))
    with pytest.raises(wire.DecodeError, match="nested more than 64 deep"):
        wire.decode(_field(7, 2, graph))


def test_values_that_do_not_fit_their_dims_are_refused_before_any_allocation():
    huge = wire.decode(_field(7, 2, _field(5, 2, _field(1, 0, _varint(2 ** 62)) + _field(1, 0, _varint(2 ** 62))
                                          + _field(2, 0, _varint(1)) + _field(9, 2, b"\x00" * 8))))
    with pytest.raises(ValueError, match=r"8 bytes of values for shape \(4611686018427387904, 4611686018427387904\)"):
        wire.to_array(huge.graph.initializer[0])
    negative = wire.decode(_field(7, 2, _field(5, 2, _field(1, 0, _varint(2 ** 64 - 1)) + _field(2, 0, _varint(1)))))
    with pytest.raises(ValueError, match="negative dimension"):
        wire.to_array(negative.graph.initializer[0])
    short = wire.decode(_field(7, 2, _field(5, 2, _field(1, 0, _varint(3)) + _field(2, 0, _varint(7))
                                           + _field(7, 0, _varint(1)))))
    with pytest.raises(ValueError, match=r"1 values for shape \(3,\), expected 3"):
        wire.to_array(short.graph.initializer[0])
    odd = wire.decode(_field(7, 2, _field(5, 2, _field(2, 0, _varint(99)))))
    with pytest.raises(ValueError, match="element type 99 is not one lstm_convert reads"):
        wire.to_array(odd.graph.initializer[0])


def test_every_truncation_of_a_real_file_is_a_decode_error_or_a_prefix(tmp_path, rng):
    from conftest import random_torch_lstm

    files.write(lc.Model((lc.from_torch(random_torch_lstm(rng, input_size=4, hidden_size=3)),)), tmp_path / "t.onnx")
    data = (tmp_path / "t.onnx").read_bytes()
    for end in range(len(data)):
        try:
            ours = wire.decode(data[:end])
        except wire.DecodeError:
            continue
        agrees(ours, onnx.load_from_string(data[:end]))  # what is decoded is what protobuf parses
