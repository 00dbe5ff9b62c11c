"""Reading the parameters of a TorchScript archive (``torch.jit.save``) as data, without running its code.

A TorchScript archive is a zip: ``<folder>/data.pkl`` pickles the module tree, each module an object of a
``__torch__.<module path>`` class whose state is a dict of its attributes (tensors, submodules, flags);
``<folder>/data/<key>`` holds the storages the tensors view; ``<folder>/code/`` holds the TorchScript code,
which is never read here. The pickle is read by an unpickler that knows only what such a state holds:
tensors (``torch._utils._rebuild_tensor_v2`` over a storage), ``collections.OrderedDict``, the
``torch.jit._pickle`` list tags, and placeholders for ``__torch__`` classes. Anything else refuses the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ._lazy import np

from . import _torch_pickle, _zip
from .errors import FormatError

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
        root = _Unpickler(archive, folder, pickles[0]).load()
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


class _Unpickler(_torch_pickle.Unpickler):
    def more(self, module: str, name: str) -> Any:
        if module == "torch.jit._pickle" and name in _TAGS:
            return _tagged
        if module.startswith("__torch__."):
            return _placeholder(f"{module}.{name}")
        raise pickle.UnpicklingError(f"the archive's data.pkl names {module}.{name}, which is not data")


def _placeholder(qualname: str) -> type:
    return type("ScriptedModule", (Scripted,), {"__new__": lambda cls, *a: _new(cls, qualname)})


def _new(cls: type, qualname: str) -> Scripted:
    obj = object.__new__(cls)
    Scripted.__init__(obj, qualname)
    return obj


def _tagged(value: Any, *_: Any) -> Any:
    return value
