"""TensorFlow checkpoints (tensor bundles) read without TensorFlow: the ``.index`` table and its data shards.

A checkpoint ``PREFIX`` is ``PREFIX.index`` and ``PREFIX.data-SSSSS-of-NNNNN`` (an index file renamed keeps
its data beside it as ``NAME-WITHOUT-SUFFIX.data-...``). The index is a table in
LevelDB's format: blocks of key/value entries, each key sharing a prefix with the one before it (reset at
restart points listed at the block's end), each block followed by a compression byte and the masked
CRC32C of the block and that byte; an index block of handles (offset, size) to the data blocks; and a
48-byte footer (the handles of the metaindex and index blocks, zero padding, a magic number). Keys are
sorted. The entry under the empty key is a ``BundleHeaderProto`` (number of shards, byte order, version);
every other key is a variable's name and its value a ``BundleEntryProto``: dtype, shape, shard, offset,
size, the masked CRC32C of the tensor's bytes, and slices (for a variable saved in partitions). The data
of a tensor is ``size`` bytes at ``offset`` in its shard, in C order and little-endian.

Everything is checked before a value is used: the footer's magic, every block's checksum and bounds, that
keys are strictly increasing, each entry's size against its dtype and shape and its bytes against the
shard's length; a tensor's checksum when it is read. Each failure is a :class:`BundleError` saying what.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _onnx_decode as pb
from ._lazy import np
from .errors import FormatError

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
# TensorFlow's DataType numbers, for the dtypes a checkpoint of weights holds (others are named, not read).
DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 9: "int64", 10: "bool",
          14: "bfloat16", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64"}
OTHER_DTYPES = {7: "string", 8: "complex64", 18: "complex128", 20: "resource", 21: "variant"}
_ITEMSIZE = {"float32": 4, "float64": 8, "int32": 4, "uint8": 1, "int16": 2, "int8": 1, "int64": 8, "bool": 1,
             "bfloat16": 2, "uint16": 2, "float16": 2, "uint32": 4, "uint64": 8}


class BundleError(FormatError):
    """The files are not a TensorFlow checkpoint, or are damaged (the message names the file and what)."""


# -- the protobuf messages (tensorflow/core/protobuf/tensor_bundle.proto and the framework's protos) ------


class _Version(pb.Message):
    FIELDS = pb._fields((1, "producer", "i32"), (2, "min_consumer", "i32"), (3, "bad_consumers", "i32", "r"))


class _Header(pb.Message):
    FIELDS = pb._fields((1, "num_shards", "i32"), (2, "endianness", "enum:2"), (3, "version", _Version))


class _Dim(pb.Message):
    FIELDS = pb._fields((1, "size", "i64"), (2, "name", "str"))


class _Shape(pb.Message):
    FIELDS = pb._fields((2, "dim", _Dim, "r"), (3, "unknown_rank", "i32"))


class _Extent(pb.Message):
    FIELDS = pb._fields((1, "start", "i64"), (2, "length", "i64"))


class _Slice(pb.Message):
    FIELDS = pb._fields((1, "extent", _Extent, "r"))


class _Entry(pb.Message):
    FIELDS = pb._fields((1, "dtype", "i32"), (2, "shape", _Shape), (3, "shard_id", "i32"), (4, "offset", "i64"),
                        (5, "size", "i64"), (6, "crc32c", "u32"), (7, "slices", _Slice, "r"))


def _message(cls: type, data: bytes, what: str) -> Any:
    try:
        return pb._decode(cls, data, [(0, len(data))], 0)
    except pb.DecodeError as exc:
        raise BundleError(f"{what} is damaged ({exc})") from None


# -- CRC32C (Castagnoli), as TensorFlow masks it -------------------------------------------------------

_POLY = 0x82F63B78


def _table() -> list[int]:
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ (_POLY if c & 1 else 0)
        out.append(c)
    return out


_TABLE = _table()


def _update(crc: int, data: bytes | memoryview) -> int:
    """The CRC register after ``data`` (no initial or final inversion)."""
    table = _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _apply(matrix: list[int], vector: int) -> int:
    out, bit = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[bit]
        vector >>= 1
        bit += 1
    return out


def _zeros_operator(count: int) -> list[int]:
    """The linear map that ``count`` zero bytes apply to a CRC register (as 32 images of the unit vectors)."""
    step = [_TABLE[(1 << k) & 0xFF] ^ ((1 << k) >> 8) for k in range(32)]  # one zero byte
    result = [1 << k for k in range(32)]
    while count:
        if count & 1:
            result = [_apply(step, column) for column in result]
        step = [_apply(step, column) for column in step]
        count >>= 1
    return result


def crc32c(data: bytes | memoryview, start: int = 0) -> int:
    """CRC32C of ``data`` (continuing ``start``, the CRC32C of the bytes before it). Large inputs run as many
    lanes at once in NumPy, each lane a stretch of the bytes, and the lanes' registers are joined with the
    linear map of a stretch of zeros."""
    view = memoryview(data).cast("B")
    n = len(view)
    if n < 1 << 16:
        return _update(start ^ 0xFFFFFFFF, view) ^ 0xFFFFFFFF
    lanes = 4096
    stretch = n // lanes
    raw = np.frombuffer(view, np.uint8, lanes * stretch).reshape(lanes, stretch)
    table = np.asarray(_TABLE, np.uint32)
    registers = np.zeros(lanes, np.uint32)
    for column in range(0, stretch, 512):
        block = np.ascontiguousarray(raw[:, column:column + 512].T)  # one row per step, one column per lane
        for row in block:
            registers = table[(registers ^ row) & 0xFF] ^ (registers >> 8)
    join = _zeros_operator(stretch)
    crc = start ^ 0xFFFFFFFF
    for register in registers.tolist():
        crc = _apply(join, crc) ^ register
    return _update(crc, view[lanes * stretch:]) ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    """TensorFlow's (and LevelDB's) mask of a stored CRC."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# -- the index table -----------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    try:
        return pb._varint(buf, pos, end)
    except pb.DecodeError as exc:
        raise BundleError(f"{what}: {exc}") from None


def _handle(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, end, what)
    size, pos = _varint(buf, pos, end, what)
    return offset, size, pos


def _block(data: bytes, offset: int, size: int, what: str) -> bytes:
    if offset + size + 5 > len(data) - _FOOTER:
        raise BundleError(f"{what} at byte {offset} ({size} bytes) runs past the table's end")
    contents = data[offset:offset + size + 1]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if masked(crc32c(contents)) != stored:
        raise BundleError(f"{what} at byte {offset} fails its checksum: the file is damaged")
    if contents[-1] != 0:
        raise BundleError(f"{what} is compressed (type {contents[-1]}); TensorFlow writes checkpoint indexes "
                          "uncompressed, and this reader reads only those")
    return contents[:-1]


def _entries(block: bytes, what: str) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise BundleError(f"{what} is too short to hold its restart points")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if restarts < 1 or end < 0:
        raise BundleError(f"{what} lists {restarts} restart points, which its {len(block)} bytes cannot hold")
    out: list[tuple[bytes, bytes]] = []
    key, pos = b"", 0
    while pos < end:
        shared, pos = _varint(block, pos, end, what)
        own, pos = _varint(block, pos, end, what)
        size, pos = _varint(block, pos, end, what)
        if shared > len(key) or own + size > end - pos:
            raise BundleError(f"{what}: an entry at byte {pos} runs past the block or shares more than its key")
        key = key[:shared] + block[pos:pos + own]
        out.append((key, block[pos + own:pos + own + size]))
        pos += own + size
    return out


def read_table(data: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """The key/value entries of a LevelDB-format table held in ``data``, in order."""
    if len(data) < _FOOTER:
        raise BundleError(f"{where}: {len(data)} bytes, too short for a checkpoint index (its footer is {_FOOTER})")
    footer = len(data) - _FOOTER
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != _MAGIC:
        raise BundleError(f"{where}: not a TensorFlow checkpoint index (no table magic number at its end)")
    _, _, pos = _handle(data, footer, footer + 40, f"{where}: the footer")
    offset, size, _ = _handle(data, pos, footer + 40, f"{where}: the footer")
    entries: list[tuple[bytes, bytes]] = []
    for _, value in _entries(_block(data, offset, size, f"{where}: the index block"), f"{where}: the index block"):
        block_offset, block_size, _ = _handle(value, 0, len(value), f"{where}: the index block")
        block = _block(data, block_offset, block_size, f"{where}: a data block")
        entries.extend(_entries(block, f"{where}: the data block at byte {block_offset}"))
    for (a, _), (b, _) in zip(entries, entries[1:]):
        if not a < b:
            raise BundleError(f"{where}: the keys are not in strictly increasing order ({a[:60]!r}, then "
                              f"{b[:60]!r}): the file is damaged")
    return entries


# -- the bundle ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """One entry of a checkpoint: a variable's dtype name (or TensorFlow's number when not a numeric
    dtype), shape and where its bytes are."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int
    sliced: bool


class Bundle:
    """A checkpoint: its variables by name (:attr:`variables`), and their values (:meth:`array`)."""

    def __init__(self, index: Path) -> None:
        self.index = index
        self.prefix = index.with_suffix("")  # model.ckpt-100.index: model.ckpt-100
        where = str(index)
        data = index.read_bytes()
        entries = read_table(data, where)
        if not entries or entries[0][0] != b"":
            raise BundleError(f"{where}: has no bundle header (the entry under the empty key)")
        header = _message(_Header, entries[0][1], f"{where}: the bundle header")
        if header.endianness != 0:
            raise BundleError(f"{where}: written big-endian; this reader reads little-endian checkpoints")
        if not 1 <= header.num_shards <= 99999:
            raise BundleError(f"{where}: declares {header.num_shards} data shards (expected 1 to 99999)")
        self.num_shards = header.num_shards
        self._lengths: dict[int, int] = {}
        self.variables: dict[str, Variable] = {}
        for raw, value in entries[1:]:
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BundleError(f"{where}: the variable name {raw[:60]!r} is not UTF-8") from None
            self.variables[name] = self._variable(name, _message(_Entry, value, f"{where}: the entry of {name!r}"))

    def _variable(self, name: str, entry: Any) -> Variable:
        where = f"{self.index}: {name}"
        dtype = DTYPES.get(entry.dtype) or OTHER_DTYPES.get(entry.dtype) or f"DataType {entry.dtype}"
        if entry.shape.unknown_rank:
            raise BundleError(f"{where}: saved with an unknown rank")
        shape = tuple(int(d.size) for d in entry.shape.dim)
        if any(d < 0 for d in shape):
            raise BundleError(f"{where}: the shape {list(shape)} has a negative dimension")
        if not 0 <= entry.shard_id < self.num_shards:
            raise BundleError(f"{where}: in shard {entry.shard_id}, but the checkpoint has {self.num_shards}")
        if entry.offset < 0 or entry.size < 0:
            raise BundleError(f"{where}: a negative offset or size ({entry.offset}, {entry.size})")
        if dtype in _ITEMSIZE and not entry.slices and math.prod(shape) * _ITEMSIZE[dtype] != entry.size:
            raise BundleError(f"{where}: declares shape {list(shape)} of {dtype} "
                              f"({math.prod(shape) * _ITEMSIZE[dtype]} bytes) but holds {entry.size}")
        if entry.offset + entry.size > self._length(entry.shard_id):
            raise BundleError(f"{where}: its {entry.size} bytes at byte {entry.offset} run past the end of "
                              f"{self.shard_path(entry.shard_id).name} ({self._length(entry.shard_id)} bytes)")
        return Variable(name, dtype, shape, entry.shard_id, entry.offset, entry.size, entry.crc32c,
                        bool(entry.slices))

    def _length(self, shard: int) -> int:
        """The size of a data shard (BundleError when it is not beside the index)."""
        if shard not in self._lengths:
            path = self.shard_path(shard)
            if not path.is_file():
                raise BundleError(f"{self.index}: its data file {path.name} is missing beside the index")
            real, folder = path.resolve(), path.parent.resolve()
            if real.parent != folder and folder not in real.parents:
                raise BundleError(f"{self.index}: its data file {path.name} is a symlink leading out of the "
                                  f"checkpoint's folder (to {real}): refused")
            self._lengths[shard] = path.stat().st_size
        return self._lengths[shard]

    def shard_path(self, shard: int) -> Path:
        return self.prefix.parent / f"{self.prefix.name}.data-{shard:05d}-of-{self.num_shards:05d}"

    def array(self, name: str, check: bool = True) -> np.ndarray:
        """The value of variable ``name``, its bytes checked against the entry's CRC32C (unless ``check``)."""
        var = self.variables[name]
        where = f"{self.index}: {name}"
        if var.sliced:
            raise BundleError(f"{where}: saved in partitions (slices), which this reader does not join")
        if var.dtype not in _ITEMSIZE:
            raise BundleError(f"{where}: holds {var.dtype} values, not numbers")
        shard = self.shard_path(var.shard)
        with open(shard, "rb") as handle:
            handle.seek(var.offset)
            data = handle.read(var.size)
        if len(data) != var.size:
            raise BundleError(f"{where}: {shard.name} ended before its {var.size} bytes at byte {var.offset}")
        if check and masked(crc32c(data)) != var.crc32c:
            raise BundleError(f"{where}: its bytes in {shard.name} fail their checksum: the file is damaged")
        return np.frombuffer(data, _numpy_dtype(var.dtype)).reshape(var.shape)

    def strings(self, name: str) -> list[bytes]:
        """The values of a string variable: varint lengths, the masked CRC32C of the lengths (each as four
        bytes), then the bytes; the entry's CRC32C covers the lengths as four bytes, their checksum and the
        bytes."""
        var = self.variables[name]
        where = f"{self.index}: {name}"
        if var.dtype != "string" or var.sliced:
            raise BundleError(f"{where}: holds {var.dtype} values, not strings")
        with open(self.shard_path(var.shard), "rb") as handle:
            handle.seek(var.offset)
            data = handle.read(var.size)
        if len(data) != var.size:
            raise BundleError(f"{where}: its data file ended before its {var.size} bytes")
        count = math.prod(var.shape)
        if count > len(data):
            raise BundleError(f"{where}: declares {count} strings in {len(data)} bytes")
        lengths, pos = [], 0
        for _ in range(count):
            size, pos = _varint(data, pos, len(data), where)
            lengths.append(size)
        if pos + 4 + sum(lengths) != len(data):
            raise BundleError(f"{where}: its lengths ({sum(lengths)} bytes of strings) do not match its "
                              f"{len(data)} bytes")
        packed = b"".join(struct.pack("<I" if n <= 0xFFFFFFFF else "<Q", n) for n in lengths)
        crc = crc32c(packed)
        if struct.unpack_from("<I", data, pos)[0] != masked(crc) or \
                masked(crc32c(data[pos + 4:], crc32c(data[pos:pos + 4], crc))) != var.crc32c:
            raise BundleError(f"{where}: fails its checksum: the file is damaged")
        out, pos = [], pos + 4
        for size in lengths:
            out.append(data[pos:pos + size])
            pos += size
        return out


# -- the object graph of a TensorFlow 2 checkpoint (tensorflow/core/protobuf/trackable_object_graph.proto) -

OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


class _Reference(pb.Message):
    FIELDS = pb._fields((1, "node_id", "i32"), (2, "local_name", "str"))


class _Serialized(pb.Message):
    FIELDS = pb._fields((1, "name", "str"), (2, "full_name", "str"), (3, "checkpoint_key", "str"))


class _SlotReference(pb.Message):
    FIELDS = pb._fields((1, "original_variable_node_id", "i32"), (2, "slot_name", "str"),
                        (3, "slot_variable_node_id", "i32"))


class _Object(pb.Message):
    FIELDS = pb._fields((1, "children", _Reference, "r"), (2, "attributes", _Serialized, "r"),
                        (3, "slot_variables", _SlotReference, "r"))


class _Graph(pb.Message):
    FIELDS = pb._fields((1, "nodes", _Object, "r"))


@dataclass(frozen=True)
class Saved:
    """A variable of a TensorFlow 2 checkpoint: its checkpoint key and the variable's own name (``full_name``,
    ``sequential/enc/lstm_cell/kernel``); ``slot`` when it is an optimizer's slot of another variable."""

    key: str
    full_name: str
    slot: bool


def object_graph(bundle: Bundle) -> list[Saved]:
    """The variables a TensorFlow 2 checkpoint's object graph lists (optimizer slots marked). The graph's paths
    from its root are not built: a chain of objects would make them quadratic in the file's size."""
    if bundle.variables[OBJECT_GRAPH].shape != ():
        raise BundleError(f"{bundle.index}: {OBJECT_GRAPH} has shape {list(bundle.variables[OBJECT_GRAPH].shape)}, "
                          "not one string")
    (data,) = bundle.strings(OBJECT_GRAPH)
    nodes = _message(_Graph, data, f"{bundle.index}: the object graph").nodes
    slots = {ref.slot_variable_node_id for node in nodes for ref in node.slot_variables}
    return [Saved(attr.checkpoint_key, attr.full_name, index in slots) for index, node in enumerate(nodes)
            for attr in node.attributes if attr.name == "VARIABLE_VALUE"]


def _numpy_dtype(name: str) -> Any:
    if name == "bfloat16":
        from ._optional import require

        return np.dtype(require("ml_dtypes").bfloat16)
    return np.dtype(name).newbyteorder("<")
