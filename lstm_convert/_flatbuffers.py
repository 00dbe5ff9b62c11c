"""FlatBuffers without generated code or the ``flatbuffers`` package: a reader of tables, bounds-checked for
files from anywhere, and a writer (:func:`build`) of a tree of :class:`T` tables, vectors and strings.

A buffer starts with the offset of its root table. A table starts with a signed offset back to its vtable; the
vtable holds its own size, the table's size and one 16-bit offset per field (0: absent, the default applies).
Scalars sit in the table; strings, vectors and sub-tables are 32-bit offsets from where they are stored to
their data, which for a vector or a string is a 32-bit length and the elements. Every offset and length is
checked against the buffer before it is followed: a damaged file is a :class:`FlatBufferError`, never an
exception of Python's or a read past the end.
"""

from __future__ import annotations

import struct

from .errors import FormatError

_DEPTH = 64


class FlatBufferError(FormatError):
    """A FlatBuffer whose offsets or lengths point outside it."""


class Table:
    """One table of ``data`` at ``pos``; fields by index (the schema's order, from 0)."""

    __slots__ = ("data", "pos", "vtable", "vsize", "depth", "where")

    def __init__(self, data: bytes | memoryview, pos: int, where: str, depth: int = 0) -> None:
        if depth > _DEPTH:
            raise FlatBufferError(f"{where}: tables nest more than {_DEPTH} deep")
        self.data, self.pos, self.depth, self.where = data, pos, depth, where
        _need(data, pos, 4, where)
        (back,) = struct.unpack_from("<i", data, pos)
        self.vtable = pos - back
        _need(data, self.vtable, 4, where)
        self.vsize, table_size = struct.unpack_from("<HH", data, self.vtable)
        if self.vsize < 4 or self.vsize % 2:
            raise FlatBufferError(f"{where}: a table whose vtable has size {self.vsize}")
        _need(data, self.vtable, self.vsize, where)
        _need(data, pos, max(table_size, 4), where)

    def _field(self, index: int) -> int:
        """The field's position in the buffer, or 0 if absent."""
        slot = 4 + 2 * index
        if slot + 2 > self.vsize:
            return 0
        (offset,) = struct.unpack_from("<H", self.data, self.vtable + slot)
        return self.pos + offset if offset else 0

    def scalar(self, index: int, fmt: str, default: int | float | bool = 0) -> int | float | bool:
        at = self._field(index)
        if not at:
            return default
        _need(self.data, at, struct.calcsize(fmt), self.where)
        return struct.unpack_from("<" + fmt, self.data, at)[0]

    def _indirect(self, at: int) -> int:
        _need(self.data, at, 4, self.where)
        (offset,) = struct.unpack_from("<I", self.data, at)
        target = at + offset
        _need(self.data, target, 4, self.where)
        return target

    def table(self, index: int) -> Table | None:
        at = self._field(index)
        return Table(self.data, self._indirect(at), self.where, self.depth + 1) if at else None

    def _vector(self, index: int, size: int) -> tuple[int, int] | None:
        """``(start of the elements, count)`` of a vector field, its bytes checked."""
        at = self._field(index)
        if not at:
            return None
        start = self._indirect(at)
        (count,) = struct.unpack_from("<I", self.data, start)
        _need(self.data, start + 4, count * size, self.where)
        return start + 4, count

    def string(self, index: int) -> str | None:
        found = self._vector(index, 1)
        if found is None:
            return None
        start, count = found
        return bytes(self.data[start:start + count]).decode("utf-8", "replace")

    def bytes(self, index: int) -> memoryview | None:
        found = self._vector(index, 1)
        if found is None:
            return None
        start, count = found
        return memoryview(self.data)[start:start + count]

    def scalars(self, index: int, fmt: str) -> list:
        found = self._vector(index, struct.calcsize(fmt))
        if found is None:
            return []
        start, count = found
        return list(struct.unpack_from(f"<{count}{fmt}", self.data, start))

    def tables(self, index: int) -> list[Table]:
        found = self._vector(index, 4)
        if found is None:
            return []
        start, count = found
        return [Table(self.data, self._indirect(start + 4 * k), self.where, self.depth + 1) for k in range(count)]


def root(data: bytes | memoryview, where: str) -> Table:
    """The root table of a FlatBuffer."""
    _need(data, 0, 8, where)
    (offset,) = struct.unpack_from("<I", data, 0)
    return Table(data, offset, where)


def _need(data, pos: int, size: int, where: str) -> None:
    if pos < 0 or size < 0 or pos + size > len(data):
        raise FlatBufferError(f"{where}: an offset or length points outside the file (byte {pos}, {size} bytes, "
                              f"of {len(data)}): the file is damaged")


# -- writing ---------------------------------------------------------------------------------------------------
#
# The writer lays a tree out front to back: a table's vtable, then the table, then what its offset fields point
# to, so that every unsigned offset points forward as the format requires (a vtable's offset is signed).


class T:
    """A table to write: ``fields`` maps a field's index to ``(struct format, value)`` for a scalar, or to a
    :class:`Vec`, :class:`Tables`, :class:`Str`, :class:`Blob` or :class:`T` for an offset field."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict) -> None:
        self.fields = {k: v for k, v in fields.items() if v is not None}


class Vec:
    """A vector of scalars of one struct format (``"i"``, ``"B"``, ...)."""

    __slots__ = ("fmt", "values")

    def __init__(self, fmt: str, values) -> None:
        self.fmt, self.values = fmt, list(values)


class Tables:
    """A vector of tables."""

    __slots__ = ("items",)

    def __init__(self, items) -> None:
        self.items = list(items)


class Str:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class Blob:
    """A vector of bytes whose data starts at a multiple of ``align`` (TFLite's buffers: 16)."""

    __slots__ = ("data", "align")

    def __init__(self, data, align: int = 16) -> None:
        self.data, self.align = data, align


def build(root_table: T, identifier: bytes = b"") -> bytearray:
    """The FlatBuffer whose root is ``root_table``, with a 4-byte file ``identifier`` after the root offset."""
    if identifier and len(identifier) != 4:
        raise ValueError("a file identifier has 4 bytes")
    out = bytearray(8 if identifier else 4)
    out[4:4 + len(identifier)] = identifier
    struct.pack_into("<I", out, 0, _place(out, root_table))
    if len(out) >= 2 ** 31:
        raise ValueError("a FlatBuffer holds less than 2 GiB")
    return out


def _pad(out: bytearray, align: int, ahead: int = 0) -> None:
    """Zeros until ``len(out) + ahead`` is a multiple of ``align``."""
    out.extend(b"\0" * (-(len(out) + ahead) % align))


def _place(out: bytearray, node) -> int:
    """Write ``node`` at the end of ``out``; its position (a table's: where its vtable offset is)."""
    if isinstance(node, T):
        return _place_table(out, node)
    if isinstance(node, Str):
        data = node.text.encode("utf-8")
        _pad(out, 4)
        at = len(out)
        out += struct.pack("<I", len(data)) + data + b"\0"
        return at
    if isinstance(node, Blob):
        _pad(out, max(4, node.align), 4)
        at = len(out)
        out += struct.pack("<I", len(node.data))
        out += node.data
        return at
    if isinstance(node, Vec):
        size = struct.calcsize(node.fmt)
        _pad(out, max(4, size), 4)
        at = len(out)
        out += struct.pack(f"<I{len(node.values)}{node.fmt}", len(node.values), *node.values)
        return at
    if isinstance(node, Tables):
        _pad(out, 4)
        at = len(out)
        out += struct.pack("<I", len(node.items)) + bytes(4 * len(node.items))
        for k, item in enumerate(node.items):
            slot = at + 4 + 4 * k
            struct.pack_into("<I", out, slot, _place(out, item) - slot)
        return at
    raise TypeError(f"not a FlatBuffers node: {type(node).__name__}")


def _place_table(out: bytearray, table: T) -> int:
    fields = table.fields
    count = max(fields, default=-1) + 1
    # The table's fields after its 4-byte vtable offset, the largest first so that each is aligned.
    sizes = {k: (struct.calcsize(v[0]) if isinstance(v, tuple) else 4) for k, v in fields.items()}
    layout, offset = {}, 4
    for k in sorted(fields, key=lambda k: -sizes[k]):
        offset += -offset % sizes[k]
        layout[k] = offset
        offset += sizes[k]
    table_size = offset + -offset % 4
    _pad(out, 2)
    vtable = len(out)
    out += struct.pack(f"<HH{count}H", 4 + 2 * count, table_size, *(layout.get(k, 0) for k in range(count)))
    _pad(out, max(sizes.values(), default=4) if max(sizes.values(), default=4) > 4 else 4)
    at = len(out)
    out += bytes(table_size)
    struct.pack_into("<i", out, at, at - vtable)
    children = []
    for k, value in fields.items():
        if isinstance(value, tuple):
            struct.pack_into("<" + value[0], out, at + layout[k], value[1])
        else:
            children.append((at + layout[k], value))
    for slot, child in children:
        struct.pack_into("<I", out, slot, _place(out, child) - slot)
    return at
