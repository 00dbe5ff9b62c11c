"""The pickles inside PyTorch zip files, read as data with NumPy alone: no PyTorch, and no code run.

A file of ``torch.save`` (and a TorchScript archive) is a zip: ``<folder>/data.pkl`` pickles the object,
whose tensors are ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` calls over
storages named by persistent ids ``("storage", torch.FloatStorage, key, location, numel)``; the storage's
bytes are the member ``<folder>/data/<key>``, in the order of ``<folder>/byteorder`` (little-endian when
absent). :class:`Unpickler` knows only those names and ``collections.OrderedDict``; any other global
refuses the pickle (:class:`NotData`). A stored little-endian storage is mapped, not read: its tensors
are read-only views of the file, so a tensor that is not used is never read; others are read and become
native-endian copies.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from typing import Any

from ._lazy import np

from . import _zip

STORAGES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
            "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
            "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool"}


class NotData(pickle.UnpicklingError):
    """The pickle names a global that is not tensor data (``qualname``, ``module.name``)."""

    def __init__(self, message: str, qualname: str = ""):
        super().__init__(message)
        self.qualname = qualname


class Storage:
    def __init__(self, dtype: str):
        self.dtype = dtype


class Unpickler(pickle.Unpickler):
    """Unpickles ``<folder>/data.pkl`` of ``archive``; ``more(module, name)`` may allow further globals."""

    def __init__(self, archive: _zip.Zip, folder: str, pickled: str | None = None):
        super().__init__(io.BytesIO(archive.read(pickled or f"{folder}/data.pkl")))
        self.archive, self.folder = archive, folder
        self.storages: dict[str, np.ndarray] = {}
        order = f"{folder}/byteorder"
        self.byteorder = "<"
        if order in archive.names:
            text = archive.read(order)
            if text not in (b"little", b"big"):
                raise pickle.UnpicklingError(f"{order} says {text[:20]!r}, not little or big")
            self.byteorder = "<" if text == b"little" else ">"

    def more(self, module: str, name: str) -> Any:
        raise NotData(f"data.pkl names {module}.{name}, which is not tensor data", f"{module}.{name}")

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor
        if module == "torch" and name in STORAGES:
            return Storage(STORAGES[name])
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        return self.more(module, name)

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], Storage)
                and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage, key, _, numel = pid
        if key not in self.storages:
            member = f"{self.folder}/data/{key}"
            if member not in self.archive.names:
                raise pickle.UnpicklingError(f"storage {key} is not in the file ({member} is missing)")
            dtype = _dtype(storage.dtype, self.byteorder)
            info = self.archive.getinfo(member)
            if numel < 0 or info.file_size != numel * dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key} holds {info.file_size} bytes, not {numel} x {dtype}")
            span = self.archive.stored_span(member)
            if span is None or not numel or self.byteorder == ">":  # a big-endian storage becomes native: a copy
                data = np.frombuffer(self.archive.read(member), dtype=dtype).astype(dtype.newbyteorder("="))
            else:
                data = np.memmap(self.archive.path, dtype=dtype, mode="r", offset=span[0], shape=(numel,))
            self.storages[key] = data
        return self.storages[key]


def _dtype(name: str, byteorder: str) -> np.dtype:
    if name == "bfloat16":
        from ._optional import require

        if byteorder == ">":
            raise pickle.UnpicklingError("big-endian bfloat16 storages are not read")
        return np.dtype(require("ml_dtypes").bfloat16)
    return np.dtype(name).newbyteorder(byteorder)


def rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> np.ndarray:
    """The tensor viewing ``storage`` (read-only, bounds checked), as NumPy."""
    if not (isinstance(storage, np.ndarray) and type(offset) is int and isinstance(size, tuple)
            and isinstance(stride, tuple) and len(size) == len(stride)
            and all(type(v) is int and v >= 0 for v in (offset, *size, *stride))):
        raise pickle.UnpicklingError("a tensor's storage, offset, size or stride is malformed")
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else offset
    if extent > storage.size:
        raise pickle.UnpicklingError(f"a tensor of size {size} reaches past its storage of {storage.size} elements")
    if not all(size):
        return np.zeros(size, storage.dtype)
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=tuple(s * storage.itemsize for s in stride), writeable=False)
    return view
