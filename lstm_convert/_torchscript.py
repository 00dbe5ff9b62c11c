"""Reading the parameters of a TorchScript archive (``torch.jit.save``) as data, without running its code.

A TorchScript archive is a zip: ``<folder>/data.pkl`` pickles the module tree, each module an object of a
``__torch__.<module path>`` class whose state is a dict of its attributes (tensors, submodules, flags);
``<folder>/data/<key>`` holds the storages the tensors view; ``<folder>/code/`` holds the TorchScript code,
which is never read here. The pickle is read by an unpickler that knows only what such a state holds:
tensors (``torch._utils._rebuild_tensor_v2`` over a storage), ``collections.OrderedDict``, the
``torch.jit._pickle`` list tags, and placeholders for ``__torch__`` classes. Anything else refuses the file.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from . import _zip
from .errors import FormatError

_STORAGES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
             "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
             "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool"}
_TAGS = ("restore_type_tag", "build_tensorlist", "build_intlist", "build_doublelist", "build_boollist")
TRUSTED_ROUTE = ("for a file you trust, save its state dict with PyTorch and convert that: "
                 "import torch; torch.save(torch.jit.load(\"FILE\", map_location=\"cpu\").state_dict(), "
                 "\"state_dict.pt\")")


def is_torchscript(names: list[str]) -> bool:
    """Whether a zip's member names are a TorchScript archive's (its code and constants beside data.pkl)."""
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


class Scripted:
    """A module of the archive: its TorchScript class name and its attributes."""

    def __init__(self, qualname: str):
        self.qualname = qualname
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.qualname} keeps a state of its own ({type(state).__name__}), "
                                         "not a dict of attributes")
        self.state = state


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, dict[str, Any]]]:
    """The archive's tensors by state-dict key, the module class of each prefix (``LSTM``, ``Linear``, ...),
    and each module's plain settings (``batch_first``, ``nonlinearity``); FormatError if it holds more than
    data."""
    with _zip.Zip(path, "TorchScript archive") as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise FormatError(f"{path}: a TorchScript archive has one <folder>/data.pkl, found {len(pickles)}")
        folder = pickles[0].split("/")[0]
        root = _Unpickler(io.BytesIO(archive.read(pickles[0])), archive, folder, path).load()
    if not isinstance(root, Scripted):
        raise FormatError(f"{path}: the archive's data.pkl does not hold a TorchScript module")
    tensors: dict[str, np.ndarray] = {}
    classes: dict[str, str] = {}
    settings: dict[str, dict[str, Any]] = {}
    _walk(root, "", tensors, classes, settings)
    return tensors, classes, settings


def _walk(module: Scripted, prefix: str, tensors: dict, classes: dict, settings: dict) -> None:
    classes[prefix.rstrip(".")] = module.qualname.rpartition(".")[2]
    plain = {}
    for name, value in module.state.items():
        if isinstance(value, np.ndarray):
            tensors[prefix + name] = value
        elif isinstance(value, Scripted):
            _walk(value, f"{prefix}{name}.", tensors, classes, settings)
        elif isinstance(value, (bool, int, float, str)) and not name.startswith("_"):
            plain[name] = value
    settings[prefix.rstrip(".")] = plain


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: io.BytesIO, archive: _zip.Zip, folder: str, path: Path):
        super().__init__(data)
        self.archive, self.folder, self.path = archive, folder, path
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _Storage(_STORAGES[name])
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch.jit._pickle" and name in _TAGS:
            return _tagged
        if module.startswith("__torch__."):
            return _placeholder(f"{module}.{name}")
        raise pickle.UnpicklingError(f"the archive's data.pkl names {module}.{name}, which is not data")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)
                and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage, key, _, numel = pid
        if key not in self.storages:
            member = f"{self.folder}/data/{key}"
            dtype = _dtype(storage.dtype)
            info = self.archive.getinfo(member)
            if numel < 0 or info.file_size != numel * dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key} holds {info.file_size} bytes, not {numel} x {dtype}")
            self.storages[key] = np.frombuffer(self.archive.read(member), dtype=dtype)
        return self.storages[key]


class _Storage:
    def __init__(self, dtype: str):
        self.dtype = dtype


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        from ._optional import require

        return np.dtype(require("ml_dtypes").bfloat16)
    return np.dtype(name).newbyteorder("<")


def _placeholder(qualname: str) -> type:
    return type("ScriptedModule", (Scripted,), {"__new__": lambda cls, *a: _new(cls, qualname)})


def _new(cls: type, qualname: str) -> Scripted:
    obj = object.__new__(cls)
    Scripted.__init__(obj, qualname)
    return obj


def _tagged(value: Any, *_: Any) -> Any:
    return value


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> np.ndarray:
    """The tensor viewing ``storage``: bounds checked, copied out."""
    if not (isinstance(storage, np.ndarray) and isinstance(offset, int) and isinstance(size, tuple)
            and isinstance(stride, tuple) and len(size) == len(stride)
            and all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride))):
        raise pickle.UnpicklingError("a tensor's storage, offset, size or stride is malformed")
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else offset
    if extent > storage.size:
        raise pickle.UnpicklingError(f"a tensor of size {size} reaches past its storage of {storage.size} elements")
    if not all(size):
        return np.zeros(size, storage.dtype)
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=tuple(s * storage.itemsize for s in stride))
    return np.array(view, copy=True)
