"""Structure-aware fuzzing: each reader gets files that are well-formed at every level but one, which a
strategy changes where the format has structure (safetensors headers and their JSON metadata, zip
members, HDF5 groups, datasets and attributes, pickle opcodes, ONNX protobuf fields, .npy headers,
TensorFlow checkpoints' index entries and data, Flax msgpack trees and their array extensions, Equinox's
.npy records and skeleton, Haiku's keys, TFLite's FlatBuffer tables, vectors and offsets), and
must answer with a model or the library's own error: never another exception, a hang or a crash.

CI runs LSTM_CONVERT_FUZZ_EXAMPLES (default 40) cases per reader, derandomized. The long run, whose last
result the README records, is

    python scripts/fuzz_long.py --chunks 10 --cases 10000   (10 seeded chunks of 10,000 per test)

Each finding becomes a file under ``tests/corpus/<format>/`` (test_hostile.py reads them all).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstm_convert as lc
from lstm_convert import files
from lstm_convert.describe import describe

EXAMPLES = int(os.environ.get("LSTM_CONVERT_FUZZ_EXAMPLES", "40"))
LONG = "LSTM_CONVERT_FUZZ_EXAMPLES" in os.environ
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG, database=None,
                suppress_health_check=list(HealthCheck))
VALID: dict[str, bytes] = {}
FINDINGS = Path(os.environ.get("LSTM_CONVERT_FUZZ_FINDINGS", tempfile.gettempdir())) / "lstm_convert_findings"


def _valid(name: str) -> bytes:
    """A valid file of format ``name``, made on first use: a test builds only the sample its reader needs, so
    the long run (scripts/fuzz_long.py) can tell which of the package's modules a test reached."""
    if name not in VALID:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            if name == "torch-safetensors":
                from conftest import random_torch_lstm

                module = random_torch_lstm(np.random.default_rng(3), input_size=3, hidden_size=2)
                files.write(lc.Model((lc.from_torch(module),)), work / "t.safetensors", "torch")
                VALID[name] = (work / "t.safetensors").read_bytes()
            else:
                import importlib

                sample = importlib.import_module(f"test_{name}").sample(work, np.random.default_rng(3))
                VALID[name] = sample.read_bytes()
                if name == "tf_checkpoint":  # the data shard beside the index
                    VALID[f"{name}-data"] = sample.with_suffix(".data-00000-of-00001").read_bytes()
    return VALID[name]


# The valid sample each test mutates, made before the test (hypothesis runs its strategies, which read
# the sample, under its own seeding of ``random``; Keras building a model uses ``random``).
SAMPLES = {"test_keras_zip_members_and_weights": "keras", "test_h5_groups_datasets_and_attributes": "h5",
           "test_pickle_reassembly_is_faithful": "torch", "test_pt_pickle_opcodes_and_zip_members": "torch",
           "test_npz_headers_and_members": "npz", "test_onnx_protobuf_fields": "onnx",
           "test_tf_checkpoint_entries_header_and_data": "tf_checkpoint", "test_flax_msgpack_trees_and_arrays": "flax",
           "test_eqx_records_and_skeleton": "equinox", "test_haiku_npz_keys_and_members": "haiku",
           "test_tflite_tables_vectors_and_offsets": "tflite"}


@pytest.fixture(autouse=True)
def valid_sample(request):
    params = getattr(request.node, "callspec", None)
    name = params.params["name"] if params is not None else SAMPLES.get(request.node.originalname)
    if name is not None:
        _valid(name)


def _read(data: bytes, suffix: str, fmt: str | None, label: str, companions: dict[str, bytes] | None = None) -> None:
    """Every way the tool reads a file (to convert it, and to list it for inspect); a foreign exception is
    kept as a finding (with the files read beside it, ``companions`` by the tail of their names) and
    re-raised."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(data)
        for tail, content in (companions or {}).items():
            (Path(tmp) / f"fuzz{tail}").write_bytes(content)
        try:
            for inventory in (False, True):
                try:
                    describe(files.read(path, fmt, inventory=inventory), fmt or files.detect(path), str(path))
                except lc.LSTMConvertError:
                    pass
        except BaseException:
            FINDINGS.mkdir(parents=True, exist_ok=True)
            stem = f"{label}-{abs(hash(data)):x}"
            (FINDINGS / f"{stem}{suffix}").write_bytes(data)
            for tail, content in (companions or {}).items():
                (FINDINGS / f"{stem}{tail}").write_bytes(content)
            raise


# -- JSON, the configuration inside every format ---------------------------------------------------------

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.integers(-(2 ** 63), 2 ** 64),
                     st.sampled_from([0.5, -1.0, 1e308, float("nan")]), st.text(max_size=8),
                     st.sampled_from(["lstm", "gru", "rnn", "dense", "float32", "bfloat16", "linear", "tanh",
                                      "relu", "sigmoid", "hard_sigmoid", "LSTM", "Dense", "concat", "same"]))
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                     max_leaves=12)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@st.composite
def _perturbed(draw, value):
    """``value`` with one node replaced by random JSON, removed, or a container given another member."""
    value = json.loads(json.dumps(value))
    paths = list(_paths(value))
    where = draw(st.sampled_from(paths))
    op = draw(st.sampled_from(["replace", "replace", "delete", "insert"]))
    if not where:
        return draw(_JSON) if op != "insert" else value
    parent = value
    for step in where[:-1]:
        parent = parent[step]
    if op == "replace":
        parent[where[-1]] = draw(_JSON)
    elif op == "delete":
        del parent[where[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=10))] = draw(_JSON)
    else:
        parent.insert(where[-1], draw(_JSON))
    return value


# -- safetensors headers (the archive, PyTorch-layout safetensors) -----------------------------------------

def _header(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


def _safetensors(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header, allow_nan=True).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


@st.composite
def _safetensors_files(draw, name):
    header, body = _header(_valid(name))
    metadata = header.get("__metadata__", {})
    target = draw(st.sampled_from(["entry", "metadata-json", "metadata-value", "header"]))
    if target == "entry":
        key = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        header[key] = draw(_perturbed(header[key]))
    elif target == "metadata-json" and metadata:
        key = draw(st.sampled_from(sorted(metadata)))
        try:
            metadata[key] = json.dumps(draw(_perturbed(json.loads(metadata[key]))), allow_nan=True)
        except ValueError:
            metadata[key] = draw(st.text(max_size=20))
    elif target == "metadata-value" and metadata:
        metadata[draw(st.sampled_from(sorted(metadata)))] = draw(st.one_of(st.text(max_size=20), _JSON))
    else:
        header = draw(_perturbed(header))
    if draw(st.booleans()):
        body = body[:draw(st.integers(0, len(body)))]
    return _safetensors(header, body) if isinstance(header, dict) else _safetensors({"x": header}, body)


@pytest.mark.parametrize("name", ["archive", "torch-safetensors"])
@FUZZ
@given(data=st.data())
def test_safetensors_headers(name, data):
    content = data.draw(_safetensors_files(name))
    _read(content, ".safetensors", None, name)


# -- zip members (.keras, .pt, .npz) ---------------------------------------------------------------------

def _members(data: bytes) -> list[tuple[str, bytes, int]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(i.filename, archive.read(i), i.compress_type) for i in archive.infolist()]


def _zip(members: list[tuple[str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are one of the cases
        for name, content, method in members:
            archive.writestr(name, content, compress_type=method)
    return buffer.getvalue()


@st.composite
def _zip_level(draw, members):
    """The members themselves changed: dropped, duplicated, renamed (outside the archive too), compressed."""
    members = list(members)
    op = draw(st.sampled_from(["drop", "duplicate", "rename", "compress", "truncate"]))
    index = draw(st.integers(0, len(members) - 1))
    name, content, method = members[index]
    if op == "drop":
        del members[index]
    elif op == "duplicate":
        members.append((name, draw(st.sampled_from([content, b"", b"{}"])), method))
    elif op == "rename":
        members[index] = (draw(st.sampled_from(["../" + name, "/" + name, name + "/", "x/" + name, "C:" + name,
                                                 name.upper(), "x"])), content, method)
    elif op == "compress":
        members[index] = (name, content, zipfile.ZIP_DEFLATED if method == zipfile.ZIP_STORED else zipfile.ZIP_STORED)
    else:
        members[index] = (name, content[:draw(st.integers(0, len(content)))], method)
    return members


@st.composite
def _h5_edit(draw, data: bytes, legacy: bool) -> bytes:
    """An HDF5 file with one dataset, group or attribute changed: removed, reshaped, retyped, re-attributed."""
    import h5py

    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as h5:
        names: list[str] = []
        h5.visit(names.append)
        name = draw(st.sampled_from(names))
        op = draw(st.sampled_from(["delete", "reshape", "retype", "attribute", "attribute", "group"]))
        obj = h5[name]
        if op == "delete":
            del h5[name]
        elif op in ("reshape", "retype") and isinstance(obj, h5py.Dataset):
            shape = draw(st.lists(st.integers(0, 5), max_size=3)) if op == "reshape" else obj.shape
            dtype = draw(st.sampled_from(["float32", "float64", "float16", "int32", "uint8", "bool"])) \
                if op == "retype" else obj.dtype
            del h5[name]
            h5.create_dataset(name, data=np.ones(shape, dtype))
        elif op == "group":
            obj = obj if isinstance(obj, h5py.Group) else obj.parent
            obj.create_group(draw(st.sampled_from(["vars", "0", "cell", "lstm", "x"])) + "_" + str(len(names)))
        else:
            keys = list(obj.attrs)
            key = draw(st.sampled_from(keys)) if keys and draw(st.booleans()) else draw(
                st.sampled_from(["name", "weight_names", "layer_names", "model_config", "keras_version", "x"]))
            old = obj.attrs.get(key)
            if isinstance(old, (str, bytes)) and old[:1] in ("{", b"{"):
                text = old.decode() if isinstance(old, bytes) else old
                obj.attrs[key] = json.dumps(draw(_perturbed(json.loads(text))), allow_nan=True)
            else:
                text = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=12)  # HDF5 strings hold no NUL
                obj.attrs[key] = draw(st.one_of(text, st.integers(-5, 5), st.lists(text, max_size=4).map(
                                                    lambda v: np.array(v, dtype=h5py.string_dtype()))))
    return buffer.getvalue()


@st.composite
def _keras_files(draw):
    members = _members(_valid("keras"))
    target = draw(st.sampled_from(["zip", "config.json", "metadata.json", "model.weights.h5", "model.weights.h5"]))
    if target == "zip":
        return _zip(draw(_zip_level(members)))
    out = []
    for name, content, method in members:
        if name == target == "model.weights.h5":
            content = draw(_h5_edit(content, legacy=False))
        elif name == target:
            content = json.dumps(draw(_perturbed(json.loads(content))), allow_nan=True).encode()
        out.append((name, content, method))
    return _zip(out)


@FUZZ
@given(data=st.data())
def test_keras_zip_members_and_weights(data):
    _read(data.draw(_keras_files()), ".keras", None, "keras")


@FUZZ
@given(data=st.data())
def test_h5_groups_datasets_and_attributes(data):
    _read(data.draw(_h5_edit(_valid("h5"), legacy=True)), ".h5", None, "h5")


# -- pickle opcodes (.pt) ---------------------------------------------------------------------------------

_GLOBALS = [("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch", "FloatStorage"),
            ("torch", "LongStorage"), ("builtins", "eval"), ("os", "system"), ("torch", "Tensor"),
            ("torch._utils", "_rebuild_parameter"), ("numpy", "ndarray")]


@st.composite
def _pickle(draw, data: bytes) -> bytes:
    """The pickle re-assembled opcode by opcode, one of them changed: its argument, a global, or dropped,
    repeated or swapped with its neighbour."""
    ops = [(op, arg) for op, arg, _ in pickletools.genops(data)]
    index = draw(st.integers(0, len(ops) - 1))
    change = draw(st.sampled_from(["argument", "argument", "global", "drop", "repeat", "swap"]))
    op, arg = ops[index]
    if change == "argument" and isinstance(arg, int):
        ops[index] = (op, draw(st.sampled_from([0, 1, -1, 255, 2 ** 31 - 1, arg + 1, arg - 1])))
    elif change == "argument" and isinstance(arg, str):
        ops[index] = (op, draw(st.sampled_from(["", "weight", "storage", "cpu", arg + "x", "0", "../x"])))
    elif change == "global":
        module, name = draw(st.sampled_from(_GLOBALS))
        ops[index] = (pickletools.opcodes[[o.name for o in pickletools.opcodes].index("GLOBAL")],
                      f"{module} {name}")
    elif change == "drop":
        del ops[index]
    elif change == "repeat":
        ops.insert(index, ops[index])
    elif index + 1 < len(ops):
        ops[index], ops[index + 1] = ops[index + 1], ops[index]
    return _assemble(ops)


def _assemble(ops) -> bytes:
    out = io.BytesIO()
    for op, arg in ops:
        out.write(op.code.encode("latin-1"))
        kind = op.arg
        if kind is None:
            continue
        name = kind.name
        if name == "uint1":
            out.write(bytes([arg & 0xFF]))
        elif name == "uint2":
            out.write(struct.pack("<H", arg & 0xFFFF))
        elif name in ("int4", "uint4"):
            out.write(struct.pack("<i" if name == "int4" else "<I", max(min(arg, 2 ** 31 - 1), -(2 ** 31))
                                  if name == "int4" else arg & 0xFFFFFFFF))
        elif name == "uint8":
            out.write(struct.pack("<Q", arg & (2 ** 64 - 1)))
        elif name in ("unicodestring1", "unicodestring4", "unicodestring8"):
            raw = str(arg).encode("utf-8", "surrogatepass")
            width = {"unicodestring1": "<B", "unicodestring4": "<I", "unicodestring8": "<Q"}[name]
            out.write(struct.pack(width, len(raw) % (256 if width == "<B" else 2 ** 32)) + raw)
        elif name in ("bytes1", "bytes4", "bytes8", "string1"):
            raw = arg if isinstance(arg, bytes) else str(arg).encode("latin-1", "replace")
            width = "<B" if name in ("bytes1", "string1") else ("<I" if name == "bytes4" else "<Q")
            out.write(struct.pack(width, len(raw) % (256 if width == "<B" else 2 ** 32)) + raw)
        elif name in ("stringnl_noescape_pair", "stringnl_noescape"):
            out.write(str(arg).replace(" ", "\n").encode("latin-1", "replace") + b"\n")
        elif name in ("decimalnl_short", "decimalnl_long", "floatnl", "stringnl", "unicodestringnl"):
            out.write(repr(arg).encode("latin-1", "replace") + b"\n")
        elif name == "float8":
            out.write(struct.pack(">d", float(arg)))
        elif name == "long1":
            raw = pickle.encode_long(int(arg))
            out.write(bytes([len(raw) % 256]) + raw)
        else:
            raise AssertionError(f"no encoder for pickle argument {name}")
    return out.getvalue()


@st.composite
def _pt_files(draw):
    members = _members(_valid("torch"))
    if draw(st.integers(0, 4)) == 0:
        return _zip(draw(_zip_level(members)))
    return _zip([(n, draw(_pickle(c)) if n.endswith("data.pkl") else c, m) for n, c, m in members])


def test_pickle_reassembly_is_faithful():
    members = _members(_valid("torch"))
    data = next(c for n, c, _ in members if n.endswith("data.pkl"))
    assert _assemble([(op, arg) for op, arg, _ in pickletools.genops(data)]) == data


@FUZZ
@given(data=st.data())
def test_pt_pickle_opcodes_and_zip_members(data):
    _read(data.draw(_pt_files()), ".pt", None, "torch")


# -- .npy headers (.npz) ------------------------------------------------------------------------------------

@st.composite
def _npz_files(draw):
    members = _members(_valid("npz"))
    if draw(st.integers(0, 3)) == 0:
        return _zip(draw(_zip_level(members)))
    index = draw(st.integers(0, len(members) - 1))
    name, content, method = members[index]
    length = struct.unpack("<H", content[8:10])[0]
    header = content[10:10 + length].decode("latin-1")
    fields = {"descr": draw(st.sampled_from(["'<f4'", "'<f8'", "'|O'", "'<i8'", "'>f4'", "'|b1'", "'V8'", "[('a', '<f4')]"])),
              "fortran_order": draw(st.sampled_from(["False", "True", "0"])),
              "shape": draw(st.sampled_from(["()", "(0,)", "(-1,)", "(2, 3)", "(1000000000, 1000000000)", "(3,)",
                                             "(8, 3)", "(24,)", "None"]))}
    keep = draw(st.sets(st.sampled_from(sorted(fields)), min_size=1))
    new = "{" + ", ".join(f"'{k}': {fields[k]}" if k in keep else f"'{k}': " + header.split(f"'{k}': ")[1].split(
        ", '")[0].rstrip("}, ") for k in fields) + ", }"
    new = new.ljust(length - 1) + "\n" if len(new) < length else new + "\n"
    content = content[:8] + struct.pack("<H", len(new)) + new.encode("latin-1") + content[10 + length:]
    members[index] = (name, content, method)
    return _zip(members)


@FUZZ
@given(data=st.data())
def test_npz_headers_and_members(data):
    _read(data.draw(_npz_files()), ".npz", None, "npz")


# -- ONNX protobuf fields ----------------------------------------------------------------------------------

_OPS = ["LSTM", "GRU", "RNN", "Gemm", "MatMul", "Add", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Concat",
        "Slice", "Gather", "Reshape", "Constant", "If", "Loop", "Conv", "Tanh", "Sigmoid"]


@st.composite
def _onnx_files(draw):
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load_from_string(_valid("onnx"))
    graph = proto.graph
    target = draw(st.sampled_from(["op_type", "attribute", "input", "initializer", "initializer", "metadata",
                                   "output"]))
    if target in ("op_type", "attribute", "input"):
        node = graph.node[draw(st.integers(0, len(graph.node) - 1))]
        if target == "op_type":
            node.op_type = draw(st.sampled_from(_OPS))
        elif target == "input":
            names = [*(t.name for t in graph.initializer), *(o for n in graph.node for o in n.output), "", "missing"]
            if node.input:
                node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(names))
        elif node.attribute and draw(st.booleans()):
            attr = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
            if attr.type == onnx.AttributeProto.INT:
                attr.i = draw(st.sampled_from([0, 1, -1, 2, 3, 2 ** 40]))
            elif attr.type == onnx.AttributeProto.FLOAT:
                attr.f = draw(st.sampled_from([0.0, -1.0, float("nan"), 1e30]))
            elif attr.type == onnx.AttributeProto.STRING:
                attr.s = draw(st.sampled_from([b"forward", b"reverse", b"bidirectional", b"", b"\xff"]))
            elif attr.type == onnx.AttributeProto.STRINGS:
                attr.strings[:] = draw(st.lists(st.sampled_from([b"Sigmoid", b"Tanh", b"Relu", b"HardSigmoid", b"x"]),
                                                max_size=7))
            elif attr.type == onnx.AttributeProto.INTS:
                attr.ints[:] = draw(st.lists(st.integers(-3, 5), max_size=4))
        else:
            node.attribute.append(helper.make_attribute(
                draw(st.sampled_from(["hidden_size", "direction", "clip", "linear_before_reset", "axis", "perm",
                                      "layout", "input_forget", "activations", "transB", "alpha"])),
                draw(st.one_of(st.integers(-2, 4), st.sampled_from([0.5, "reverse", [1, 0, 2], ["Tanh"]])))))
    elif target == "initializer" and graph.initializer:
        index = draw(st.integers(0, len(graph.initializer) - 1))
        old = graph.initializer[index]
        array = numpy_helper.to_array(old)
        op = draw(st.sampled_from(["shape", "dtype", "raw", "dims"]))
        if op == "shape":
            array = np.ones(draw(st.lists(st.integers(0, 5), max_size=4)), array.dtype)
        elif op == "dtype":
            array = array.astype(draw(st.sampled_from(["float64", "float16", "int64", "int32", "bool"])))
        new = numpy_helper.from_array(array, old.name)
        if op == "raw":
            new.raw_data = new.raw_data[:draw(st.integers(0, len(new.raw_data)))]
        elif op == "dims":
            new.dims[:] = draw(st.lists(st.integers(-1, 2 ** 20), max_size=4))
        graph.initializer[index].CopyFrom(new)
    elif target == "metadata" and proto.metadata_props:
        prop = proto.metadata_props[draw(st.integers(0, len(proto.metadata_props) - 1))]
        try:
            prop.value = json.dumps(draw(_perturbed(json.loads(prop.value))), allow_nan=True)
        except ValueError:
            prop.value = draw(st.text(max_size=20))
    elif graph.output:
        graph.output[draw(st.integers(0, len(graph.output) - 1))].name = draw(st.sampled_from(["", "x", "gru"]))
    raw = proto.SerializeToString()
    # The wire itself (the decoder is lstm_convert's own): a span repeated (a field given twice: merged or
    # replaced), cut, or overwritten with bytes that make tags, lengths and varints.
    wire_op = draw(st.sampled_from(["none", "none", "repeat", "cut", "bytes"]))
    if raw and wire_op != "none":
        start = draw(st.integers(0, len(raw) - 1))
        end = draw(st.integers(start, min(len(raw), start + 64)))
        if wire_op == "repeat":
            raw = raw[:end] + raw[start:end] + raw[end:]
        elif wire_op == "cut":
            raw = raw[:start] + raw[end:]
        else:
            noise = draw(st.lists(st.sampled_from([0x00, 0x01, 0x02, 0x05, 0x07, 0x08, 0x0A, 0x12, 0x3A, 0x7F, 0x80,
                                                   0xFF]), min_size=1, max_size=12))
            raw = raw[:start] + bytes(noise) + raw[start + len(noise):]
    return raw


@FUZZ
@given(data=st.data())
def test_onnx_protobuf_fields(data):
    import onnx

    from lstm_convert import _onnx_decode
    from test_onnx_decode import agrees

    raw = data.draw(_onnx_files())
    _read(raw, ".onnx", None, "onnx")
    try:
        ours, theirs = _onnx_decode.decode(raw), onnx.load_from_string(raw)
    except Exception:  # one of them refuses it (protobuf also checks fields lstm_convert skips unread)
        return
    agrees(ours, theirs)  # what both parse, lstm_convert decodes as protobuf (and so onnxruntime) does


# -- TensorFlow checkpoints: the index's entries, its header and keys, and the data shard ------------------

_DATA = ".data-00000-of-00001"
_NAMES = ["rnn/lstm_cell/kernel", "rnn/lstm_cell/bias", "rnn/lstm_cell/w_i_diag", "rnn/lstm_cell/w_f_diag",
          "rnn/lstm_cell/w_o_diag", "rnn/lstm_cell/projection/kernel", "rnn/lstm_cell/bias_cudnn_0",
          "rnn/gru_cell/gates/kernel", "rnn/gru_cell/candidate/kernel", "rnn/multi_rnn_cell/cell_1/lstm_cell/kernel",
          "bi/fw/basic_lstm_cell/kernel", "bi/bw/basic_lstm_cell/kernel", "dense/kernel", "dense/bias",
          "rnn/lstm_cell/kernel/Adam", "global_step", "_CHECKPOINTABLE_OBJECT_GRAPH", "", "x" * 300]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A LevelDB-format table of ``entries`` (in the order given), written here independently of the reader:
    one data block (restart points every 4 entries), an empty metaindex block, the index block, the footer."""
    from lstm_convert._tf_bundle import crc32c, masked

    out = bytearray()

    def block(items):
        buf, restarts, last = bytearray(), [], b""
        for k, (key, value) in enumerate(items):
            shared = 0
            if k % 4 == 0:
                restarts.append(len(buf))
            else:
                while shared < min(len(key), len(last)) and key[shared] == last[shared]:
                    shared += 1
            buf += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
            last = key
        for r in restarts or [0]:
            buf += struct.pack("<I", r)
        return bytes(buf + struct.pack("<I", len(restarts or [0])))

    def put(contents):
        offset = len(out)
        out.extend(contents + b"\0" + struct.pack("<I", masked(crc32c(contents + b"\0"))))
        return _varint(offset) + _varint(len(contents))

    data = put(block(entries))
    meta = put(block([]))
    index = put(block([(entries[-1][0] + b"\xff" if entries else b"\xff", data)]))
    footer = (meta + index).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    return bytes(out + footer)


@st.composite
def _checkpoints(draw):
    from tensorflow.core.protobuf import tensor_bundle_pb2

    from lstm_convert._tf_bundle import crc32c, masked, read_table

    index, shard = _valid("tf_checkpoint"), VALID["tf_checkpoint-data"]
    entries = read_table(index, "sample")
    header = tensor_bundle_pb2.BundleHeaderProto.FromString(entries[0][1])
    parsed = [(key, tensor_bundle_pb2.BundleEntryProto.FromString(value)) for key, value in entries[1:]]
    target = draw(st.sampled_from(["entry", "entry", "entry", "key", "header", "shard", "drop", "copy"]))
    if target in ("entry", "key", "drop", "copy") and parsed:
        at = draw(st.integers(0, len(parsed) - 1))
        key, entry = parsed[at]
        if target == "entry":
            field = draw(st.sampled_from(["dtype", "dims", "shard_id", "offset", "size", "crc32c", "slices"]))
            if field == "dtype":
                entry.dtype = draw(st.sampled_from([0, 1, 2, 3, 7, 9, 14, 19, 20, 21, 101, 2 ** 20]))
            elif field == "dims":
                dims = [d.size for d in entry.shape.dim]
                dims = draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 7, 12, 2 ** 31, 2 ** 40, -1, *dims]),
                                     max_size=4))
                del entry.shape.dim[:]
                for d in dims:
                    entry.shape.dim.add(size=d)
            elif field == "slices":
                entry.slices.add().extent.add(start=0, length=1)
            else:
                values = {"shard_id": [0, 1, -1, 2 ** 31 - 1], "offset": [0, 1, -1, 4, 2 ** 31 - 1, 2 ** 62],
                          "size": [0, 1, -1, 4, 2 ** 31 - 1, 2 ** 62]}
                setattr(entry, field, draw(st.sampled_from(values[field])) if field != "crc32c"
                        else draw(st.integers(0, 2 ** 32 - 1)))
            if field in ("dims", "offset", "size") and draw(st.booleans()):  # checksum kept right where it can be
                span = shard[entry.offset:entry.offset + entry.size] if entry.offset >= 0 else b""
                entry.crc32c = masked(crc32c(span))
        elif target == "key":
            key = draw(st.sampled_from(_NAMES)).encode()
        elif target == "drop":
            del parsed[at]
        else:
            parsed.append((draw(st.sampled_from(_NAMES)).encode(), entry))
        if target in ("entry", "key"):
            parsed[at] = (key, entry)
    elif target == "header":
        header.num_shards = draw(st.sampled_from([0, 1, 2, 99999, 100000, -1]))
        header.endianness = draw(st.sampled_from([0, 0, 1]))
    else:
        cut = draw(st.integers(0, len(shard)))
        shard = shard[:cut] if draw(st.booleans()) else shard + bytes(draw(st.integers(0, 64)))
    rows = [(b"", header.SerializeToString())] + [(key, entry.SerializeToString()) for key, entry in parsed]
    if draw(st.booleans()):
        rows[1:] = sorted(rows[1:], key=lambda row: row[0])  # as TensorFlow writes them; unsorted otherwise
    return _table(rows), shard


@FUZZ
@given(data=st.data())
def test_tf_checkpoint_entries_header_and_data(data):
    index, shard = data.draw(_checkpoints())
    _read(index, ".index", None, "tf_checkpoint", {_DATA: shard})


# -- msgpack trees (Flax .msgpack) ------------------------------------------------------------------------

def _flax_tree():
    import msgpack

    return msgpack.unpackb(_valid("flax"), raw=False)  # arrays stay msgpack.ExtType


@st.composite
def _array_ext(draw, ext):
    """An array extension with its shape, dtype or bytes changed (or a wholly other payload)."""
    import msgpack

    try:
        shape, dtype, buffer = msgpack.unpackb(ext.data, raw=True)
    except (ValueError, TypeError):  # changed by an earlier mutation: change it again, as it is
        return msgpack.ExtType(ext.code, ext.data[:draw(st.integers(0, len(ext.data)))] + draw(st.binary(max_size=8)))
    op = draw(st.sampled_from(["shape", "dtype", "bytes", "code", "payload"]))
    if op == "shape":
        shape = draw(st.one_of(st.lists(st.integers(-2, 2 ** 40), max_size=4), st.just("x"), st.just([[1]])))
    elif op == "dtype":
        dtype = draw(st.sampled_from([b"object", b"float32", b"float64", b"int8", b"bfloat16", b"<f4", b"", b"V8",
                                      b"complex64", b"\xff"]))
    elif op == "bytes":
        buffer = buffer[:draw(st.integers(0, len(buffer)))] + draw(st.binary(max_size=8))
    elif op == "code":
        return msgpack.ExtType(draw(st.integers(0, 127)), ext.data)
    else:
        return msgpack.ExtType(ext.code, draw(st.binary(max_size=24)))
    return msgpack.ExtType(ext.code, msgpack.packb((shape, dtype, buffer), use_bin_type=True))


_MSGPACK = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 64 - 1), st.floats(), st.text(max_size=6),
              st.binary(max_size=6), st.sampled_from(["kernel", "bias", "cell", "ii", "hi", "forward_rnn",
                                                       "__msgpack_chunked_array__", "chunks", "shape"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)


@st.composite
def _flax_files(draw):
    import msgpack

    tree = _flax_tree()
    nodes = []

    def walk(node, path):
        nodes.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
    walk(tree, ())
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(nodes))
        parent = tree
        try:
            for step in where[:-1]:
                parent = parent[step]
            current = parent[where[-1]] if where else tree
        except (KeyError, TypeError):
            continue
        op = draw(st.sampled_from(["array", "replace", "delete", "rename", "insert"]))
        if not where or not isinstance(parent, dict):
            continue
        if op == "array" and isinstance(current, msgpack.ExtType):
            parent[where[-1]] = draw(_array_ext(current))
        elif op == "replace":
            parent[where[-1]] = draw(_MSGPACK)
        elif op == "delete":
            del parent[where[-1]]
        elif op == "rename":
            parent[draw(st.sampled_from(["ij", "hn", "cell", "kernel", "bias", "layers_0", "", "0"]))] = \
                parent.pop(where[-1])
        elif isinstance(current, dict):
            current[draw(st.sampled_from(["bias", "kernel", "embedding", "__msgpack_chunked_array__", "x"]))] = \
                draw(st.one_of(_MSGPACK, st.just(True)))
    try:
        return msgpack.packb(tree, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return _valid("flax")


@FUZZ
@given(data=st.data())
def test_flax_msgpack_trees_and_arrays(data):
    _read(data.draw(_flax_files()), ".msgpack", None, "flax")


# -- .npy records and the skeleton (Equinox .eqx) ---------------------------------------------------------

def _eqx_records(data: bytes) -> list[bytes]:
    """The .npy records of an .eqx file, each its whole bytes."""
    out, at = [], 0
    while at < len(data):
        header = struct.unpack("<H", data[at + 8:at + 10])[0]
        info = eval(data[at + 10:at + 10 + header].decode("latin-1"))  # noqa: S307 - our own sample's header
        size = int(np.prod(info["shape"])) * np.dtype(info["descr"]).itemsize
        out.append(data[at:at + 10 + header + size])
        at += 10 + header + size
    return out


@st.composite
def _eqx_files(draw):
    records = _eqx_records(_valid("equinox"))
    op = draw(st.sampled_from(["header", "skeleton", "drop", "swap", "cut"]))
    k = draw(st.integers(0, len(records) - 1))
    if op == "header":
        record = records[k]
        length = struct.unpack("<H", record[8:10])[0]
        descr = draw(st.sampled_from(["'<f4'", "'<f8'", "'|O'", "'<i8'", "'>f4'", "'|u1'", "'V8'"]))
        shape = draw(st.sampled_from(["()", "(0,)", "(16, 5)", "(5, 16)", "(4,)", "(1000000000,)", "(3, 2)"]))
        fortran = draw(st.sampled_from(["False", "True"]))
        new = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}".ljust(length - 1) + "\n"
        records[k] = record[:8] + struct.pack("<H", len(new)) + new.encode("latin-1") + record[10 + length:]
    elif op == "skeleton":
        record = records[-1]
        length = struct.unpack("<H", record[8:10])[0]
        skeleton = json.loads(record[10 + length:])
        body = json.dumps(draw(_perturbed(skeleton))).encode()
        header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({len(body)},), }}".ljust(length - 1) + "\n"
        records[-1] = record[:8] + struct.pack("<H", len(header)) + header.encode("latin-1") + body
    elif op == "drop":
        del records[k]
    elif op == "swap":
        j = draw(st.integers(0, len(records) - 1))
        records[k], records[j] = records[j], records[k]
    else:
        records[k] = records[k][:draw(st.integers(0, len(records[k])))]
    return b"".join(records)


@FUZZ
@given(data=st.data())
def test_eqx_records_and_skeleton(data):
    _read(data.draw(_eqx_files()), ".eqx", None, "equinox")


# -- Haiku .npz: zip members and their /-joined keys --------------------------------------------------------

@st.composite
def _haiku_files(draw):
    members = _members(_valid("haiku"))
    op = draw(st.sampled_from(["zip", "rename", "header", "data"]))
    if op == "zip":
        return _zip(draw(_zip_level(members)))
    k = draw(st.integers(0, len(members) - 1))
    name, content, method = members[k]
    if op in ("header", "data"):
        length = struct.unpack("<H", content[8:10])[0]
        if op == "data":  # the array's bytes changed, cut or extended
            body = bytearray(content[10 + length:])
            for _ in range(draw(st.integers(1, 4))):
                if body:
                    body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
            body = bytes(body[:draw(st.integers(0, len(body)))]) + draw(st.binary(max_size=8))
            members[k] = (name, content[:10 + length] + body, method)
            return _zip(members)
        descr = draw(st.sampled_from(["'<f4'", "'<f8'", "'|O'", "'<i8'", "'>f4'", "'<f2'", "'|b1'", "'V8'"]))
        shape = draw(st.sampled_from(["()", "(0,)", "(9, 16)", "(16,)", "(5, 12)", "(4, 12)", "(12,)", "(16, 9)",
                                      "(1000000000,)", "(3, 0)"]))
        header = f"{{'descr': {descr}, 'fortran_order': {draw(st.sampled_from(['False', 'True']))}, " \
                 f"'shape': {shape}, }}".ljust(length - 1) + "\n"
        members[k] = (name, content[:8] + struct.pack("<H", len(header)) + header.encode("latin-1")
                      + content[10 + length:], method)
        return _zip(members)
    renamed = draw(st.sampled_from(["lstm/linear/w.npy", "lstm/linear/b.npy", "gru/w_i.npy", "gru/w_h.npy", "gru/b.npy",
                                    "x.npy", "lstm/w.npy", "linear/w.npy", "linear/b.npy", "embed/embeddings.npy",
                                    "lstm_1/linear/w.npy", "a/linear/w.npy", "lstm/linear/w/.npy", "/.npy"]))
    members[k] = (renamed, content, method)
    return _zip(members)


@FUZZ
@given(data=st.data())
def test_haiku_npz_keys_and_members(data):
    _read(data.draw(_haiku_files()), ".npz", "haiku", "haiku")


# -- TFLite: FlatBuffer tables, vectors and offsets --------------------------------------------------------


def _tflite_slots(data: bytes) -> list[tuple[int, str]]:
    """Where a TFLite file's structure lies: ``(byte position, struct format)`` of its offsets, vector lengths,
    operator codes, tensor indices, shapes, types, buffer numbers and option fields."""
    from lstm_convert import _flatbuffers as fb

    slots: list[tuple[int, str]] = [(0, "I")]

    def field(table, index, fmt):
        at = table._field(index)
        if at:
            slots.append((at, fmt))

    def vector(table, index, fmt, elements=True):
        at = table._field(index)
        if not at:
            return
        slots.append((at, "I"))  # the offset to the vector
        found = table._vector(index, struct.calcsize(fmt))
        start, count = found
        slots.append((start - 4, "I"))  # its length
        if elements:
            slots.extend((start + struct.calcsize(fmt) * k, fmt) for k in range(min(count, 64)))

    model = fb.root(data, "fuzz")
    slots.append((model.vtable, "H"))
    for code in model.tables(1):
        field(code, 0, "b")
        field(code, 3, "i")
    for graph in model.tables(2)[:1]:
        vector(graph, 1, "i")
        vector(graph, 2, "i")
        for tensor in graph.tables(0):
            vector(tensor, 0, "i")
            field(tensor, 1, "b")
            field(tensor, 2, "I")
            field(tensor, 5, "B")
            vector(tensor, 7, "i")
            slots.append((tensor.vtable, "H"))
        for op in graph.tables(3):
            field(op, 0, "I")
            vector(op, 1, "i")
            vector(op, 2, "i")
            field(op, 3, "B")
            options = op.table(4)
            if options is not None:
                slots.append((options.vtable + 2, "H"))
                for k in range(6):
                    at = options._field(k)
                    if at:
                        slots.append((at, "f" if k in (1, 2) and options.vsize > 6 else "i"))
    for buffer in model.tables(4):
        vector(buffer, 0, "B", elements=False)
        field(buffer, 1, "Q")
        field(buffer, 2, "Q")
    return slots


@st.composite
def _tflite_files(draw):
    data = bytearray(_valid("tflite"))
    slots = _tflite_slots(bytes(data))
    for _ in range(draw(st.integers(1, 3))):
        at, fmt = draw(st.sampled_from(slots))
        size = struct.calcsize(fmt)
        if fmt == "f":
            value = draw(st.sampled_from([0.0, -1.0, 10.0, 1e-30, float("nan"), float("inf"), -float("inf")]))
        else:
            bits = 8 * size
            low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if fmt.islower() else (0, 2 ** bits - 1)
            value = draw(st.one_of(st.sampled_from([low, high, 0, 1, 2, 3, 4, -1 if low else 5, 44, 52, 16, 9, 71]),
                                   st.integers(low, high)))
            value = min(max(value, low), high)
        struct.pack_into("<" + fmt, data, at, value)
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(data=st.data())
def test_tflite_tables_vectors_and_offsets(data):
    _read(data.draw(_tflite_files()), ".tflite", "tflite", "tflite")
