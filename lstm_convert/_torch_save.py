"""Writing a state dict in ``torch.save``'s format without PyTorch, tensor by tensor.

The format (PyTorch 1.6 and later) is an uncompressed zip holding, under one
folder: ``data.pkl``, a pickle of the ``OrderedDict`` whose tensors refer to
their storages by key; ``data/<key>``, each storage's raw little-endian bytes;
``byteorder`` and ``version``. The pickle written here uses only what
``torch.load(..., weights_only=True)`` accepts: ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and the typed storage classes. It is
assembled opcode by opcode, since pickling those names needs PyTorch itself.
"""

from __future__ import annotations

import math
import struct
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ._safetensors import _contiguous

_STORAGES = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
             "bfloat16": "BFloat16Storage"}


def write(path: str | Path, tensors: Iterable[tuple[str, Sequence[np.ndarray]]], folder: str = "archive") -> None:
    """Write ``(name, chunks)`` pairs as a state dict that ``torch.load(weights_only=True)`` reads."""
    entries = []
    for key, (name, chunks) in enumerate(tensors):
        chunks = [np.asarray(c) for c in chunks]
        first = chunks[0]
        shape = (sum(c.shape[0] for c in chunks), *first.shape[1:]) if first.ndim else ()
        entries.append((name, str(key), first.dtype.name, shape, chunks))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr(f"{folder}/data.pkl", _pickle(entries))
        archive.writestr(f"{folder}/byteorder", "little")
        for _, key, _, shape, chunks in entries:
            with archive.open(f"{folder}/data/{key}", "w", force_zip64=True) as out:
                for chunk in chunks:
                    out.write(_contiguous(chunk).reshape(-1).view(np.uint8).data)
        archive.writestr(f"{folder}/version", "3\n")


def _pickle(entries: list) -> bytes:
    out = bytearray(b"\x80\x02")  # PROTO 2
    out += _global("collections", "OrderedDict") + b")R"  # OrderedDict()
    out += b"("  # MARK: the items
    for name, key, dtype, shape, _ in entries:
        if dtype not in _STORAGES:
            raise ValueError(f"{name}: dtype {dtype} has no torch storage")
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
