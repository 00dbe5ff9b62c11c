"""Writing a state dict in ``torch.save``'s format without PyTorch, tensor by tensor.

The format (PyTorch 1.6 and later) is an uncompressed zip holding, under one
folder: ``data.pkl``, a pickle of the ``OrderedDict`` whose tensors refer to
their storages by key; ``data/<key>``, each storage's raw little-endian bytes;
``byteorder`` and ``version``. The pickle written here uses only what
``torch.load(..., weights_only=True)`` accepts: ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and the typed storage classes. It is
assembled opcode by opcode, since pickling those names needs PyTorch itself.

The zip container is written here too (ZIP64 throughout, no compression): each
member's CRC-32 is computed before its header, so the data is written once,
in large pieces, straight from the arrays, and storages start on 64-byte
boundaries as PyTorch's own writer places them (``torch.load(mmap=True)``
needs that).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping, Iterable, Sequence
from pathlib import Path

from ._lazy import np

from ._atomic import open_output
from ._stream import Stream

_STORAGES = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
             "bfloat16": "BFloat16Storage", "int64": "LongStorage"}  # int64: BatchNorm's num_batches_tracked
_ALIGN = 64


def write(path: str | Path, tensors: Iterable[tuple[str, Sequence[np.ndarray]]], folder: str = "archive",
          records: Mapping[str, bytes] | None = None) -> None:
    """Write ``(name, chunks)`` pairs as a state dict that ``torch.load(weights_only=True)`` reads;
    ``records`` are further members of the zip (``<folder>/<name>``), which torch.load ignores."""
    entries = []
    for key, (name, chunks) in enumerate(tensors):
        chunks = [np.asarray(c) for c in chunks]
        first = chunks[0]
        if first.dtype.name not in _STORAGES:
            raise ValueError(f"{name}: dtype {first.dtype} has no torch storage")
        shape = (sum(c.shape[0] for c in chunks), *first.shape[1:]) if first.ndim else ()
        entries.append((name, str(key), first.dtype.name, shape, chunks))
    with open_output(path) as out:
        zip_file = _Zip(out)
        zip_file.add(f"{folder}/data.pkl", _pickle(entries))
        zip_file.add(f"{folder}/byteorder", b"little")
        # A storage's CRC-32 belongs in its header, before its data: the other thread computes it as the
        # data is written, and finish() writes it into the header afterwards.
        crcs = {key: 0 for _, key, *_ in entries}

        def crc(key: str, piece: np.ndarray) -> None:
            crcs[key] = zlib.crc32(piece.view(np.uint8).data, crcs[key])
        stream = Stream(out, crc)
        try:
            for _, key, _, _, chunks in entries:
                zip_file.add(f"{folder}/data/{key}", stream, key=key, chunks=chunks, align=_ALIGN)
            stream.finish()
        finally:
            stream.close()
        for name, data in (records or {}).items():
            zip_file.add(f"{folder}/{name}", data)
        zip_file.add(f"{folder}/version", b"3\n")
        zip_file.finish(crcs)


class _Zip:
    """A minimal ZIP64 writer for stored (uncompressed) members."""

    def __init__(self, out):
        self.out, self.offset, self.central = out, 0, []

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.offset += len(data)

    def add(self, name: str, data: bytes | Stream, key: str | None = None, chunks: Sequence[np.ndarray] = (),
            align: int = 1) -> None:
        """A member holding ``data``, or ``chunks`` written through the stream ``data`` (their CRC is filled
        in by :meth:`finish`, under ``key``)."""
        size = len(data) if isinstance(data, (bytes, bytearray)) else sum(np.asarray(c).nbytes for c in chunks)
        crc = zlib.crc32(data) if isinstance(data, (bytes, bytearray)) else 0
        encoded = name.encode("utf-8")
        zip64 = struct.pack("<HHQQ", 0x0001, 16, size, size)
        fixed = 30 + len(encoded) + len(zip64)
        padding = -(self.offset + fixed + 4) % align if align > 1 else 0
        extra = zip64 + (struct.pack("<HH", 0xCAFE, padding) + b"\0" * padding if align > 1 else b"")
        header_offset = self.offset
        self._write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                                len(encoded), len(extra)) + encoded + extra)
        if isinstance(data, (bytes, bytearray)):
            self._write(data)
        else:
            before = data.written
            for chunk in chunks:
                data.write(key, chunk)
            self.offset += data.written - before
        self.central.append((encoded, crc, size, header_offset, key))

    def finish(self, crcs: Mapping[str, int]) -> None:
        """Write the streamed members' CRCs into their headers, then the central directory."""
        end = self.offset
        for _, _, _, header_offset, key in self.central:
            if key is not None:
                self.out.seek(header_offset + 14)
                self.out.write(struct.pack("<I", crcs[key]))
        self.out.seek(end)
        self.central = [(encoded, crcs[key] if key is not None else crc, size, offset)
                        for encoded, crc, size, offset, key in self.central]
        start = self.offset
        for encoded, crc, size, header_offset in self.central:
            extra = struct.pack("<HHQQQ", 0x0001, 24, size, size, header_offset)
            self._write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF,
                                    0xFFFFFFFF, len(encoded), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + encoded + extra)
        end = self.offset
        count = len(self.central)
        self._write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, end - start, start))
        self._write(struct.pack("<IIQI", 0x07064B50, 0, end, 1))
        self._write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))


def _pickle(entries: list) -> bytes:
    out = bytearray(b"\x80\x02")  # PROTO 2
    out += _global("collections", "OrderedDict") + b")R"  # OrderedDict()
    out += b"("  # MARK: the items
    for name, key, dtype, shape, _ in entries:
        out += _text(name)
        out += _global("torch._utils", "_rebuild_tensor_v2") + b"("
        out += b"(" + _text("storage") + _global("torch", _STORAGES[dtype]) + _text(key) + _text("cpu")
        out += _int(math.prod(shape)) + b"tQ"  # the persistent id, resolved to the storage
        out += _int(0)  # storage offset
        out += _tuple([_int(d) for d in shape])
        strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
        out += _tuple([_int(s) for s in strides])
        out += b"\x89"  # requires_grad=False
        out += _global("collections", "OrderedDict") + b")R"  # backward hooks
        out += b"tR"
    out += b"u."  # SETITEMS, STOP
    return bytes(out)


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    if 0 <= value < 2 ** 31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


def _tuple(items: list[bytes]) -> bytes:
    if not items:
        return b")"
    return b"(" + b"".join(items) + b"t"
