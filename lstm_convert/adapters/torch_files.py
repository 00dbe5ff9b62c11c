"""PyTorch state-dict files: ``.pt`` / ``.pth`` (``torch.save``) and ``.safetensors`` in PyTorch layout.

A ``.pt`` zip whose pickle holds only tensors in dicts is read as data with NumPy
(:mod:`lstm_convert._torch_pickle`: no PyTorch, the storages mapped); any other
``.pt`` only with ``torch.load(..., weights_only=True)``, so a pickle cannot run
code. ``.pt`` files are written in ``torch.save``'s format without PyTorch. A
PyTorch-layout ``.safetensors`` file (as written by
``safetensors.torch.save_file``) is read and written with NumPy and
safetensors alone; it loads with ``safetensors.torch.load_file`` and
``load_state_dict(strict=True)``.

Key names: weights that came from PyTorch keep their keys exactly; others are
``<layer name>.<PyTorch parameter name>`` (``lstm.weight_ih_l0``, ``dense.weight``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._lazy import np

from .. import _safetensors as st
from .._atomic import atomic_write
from .._json import loads as _loads
from .._optional import require
from ..canonical import AROUND, LAYER_TYPES, Dense, Embedding, Layer, Masking, Model, RecurrentLayer
from ..errors import FormatError, LSTMConvertError
from ..formats import KINDS, selects
from . import torch as torch_adapter

if TYPE_CHECKING:  # the .pt readers and writer are imported by the functions that use them
    from .. import _zip

ORDER_KEY = "lstm_convert.key_order"
KINDS_KEY = "lstm_convert.kinds"
# What the model computes (canonical layer specs without tensors, see Model.spec), kept beside the state
# dict: a metadata key of a .safetensors file, a member of a .pt zip that torch.load ignores.
MODEL_KEY = "lstm_convert.model"
MODEL_RECORD = "lstm_convert.model.json"


def read_pt(path: str | os.PathLike, *, kinds: Mapping[str, str] | None = None, only: Sequence[str] = (),
            inventory: bool = False) -> Model:
    """Read a state dict saved with ``torch.save`` into a :class:`Model` (``only`` and ``inventory`` as
    :func:`~lstm_convert.adapters.torch.model_from_state_arrays` takes them)."""
    import zipfile

    from .. import _torchscript, _zip

    path = Path(path)
    if zipfile.is_zipfile(path):
        with _zip.Zip(path, "PyTorch file") as archive:  # every member checked against the file before torch reads it
            names = archive.namelist()
            if _torchscript.is_torchscript(names):
                archive.close()
                return _read_torchscript(path, kinds, only, inventory)
            state = _plain_state(path, archive)
        if isinstance(state, str):  # the global the pickle named
            named = state
            if _pickled_model(named):  # torch.load(weights_only=True) refuses it too: say so without PyTorch
                raise _pickled_object(path, named)
            state = None
        if state is not None:  # tensors and dicts only: read as data, without PyTorch, the storages mapped
            arrays = {key: value if selects(only, key.rpartition(".")[0]) else _placeholder(key, value)
                      for key, value in state.items()}
            return _model(path, arrays, kinds, {"framework": "torch", "file_format": "pt"}, _pt_record(path), only,
                          inventory)
    import pickle
    import warnings

    torch = require("torch")
    try:
        with warnings.catch_warnings():  # PyTorch's notes on pickle protocols are not the user's concern
            warnings.simplefilter("ignore", UserWarning)
            try:  # a zip written by torch.save (or here) is mapped: only the tensors that are used are read
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # a legacy (pre-zip) file, which cannot be mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except pickle.UnpicklingError as exc:  # what weights_only refuses: PyTorch's advice is to load unsafely
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise _pickled_object(path, named.group(1) if named else "") from None
    except Exception as exc:  # torch raises many types for a damaged file
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in message:
            message = type(exc).__name__
        raise FormatError(f"{path}: not a PyTorch state dict that loads with weights_only=True ({message})") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise FormatError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(state).__name__}")
    # A tensor is copied out of the mapped file only when a layer is built from it: not for a module that is
    # not selected, nor for one that is not converted (whose shapes inspect lists).
    try:
        arrays = {key: _Lazy(torch, key, value) if selects(only, key.rpartition(".")[0]) else _placeholder(key, value)
                  for key, value in state.items()}
    except FormatError as exc:
        raise exc.prefixed(str(path)) from None
    # The file does not say which torch version wrote it.
    return _model(path, arrays, kinds, {"framework": "torch", "file_format": "pt"}, _pt_record(path), only,
                  inventory)


def _pickled_model(qualname: str) -> bool:
    """Whether a global a pickle names is a model's class (``torch.nn`` modules, the user's own classes),
    which a state dict never names, rather than something PyTorch's weights_only loader may accept."""
    module = qualname.rpartition(".")[0]
    return module.startswith("torch.nn.modules") or not module.split(".")[0] in (
        "torch", "collections", "builtins", "numpy", "_codecs", "copyreg", "")


def _pickled_object(path: Path, qualname: str) -> FormatError:
    """The refusal of a ``.pt`` whose pickle holds more than tensors: what it holds, why it is not loaded,
    and, for a whole model, how its owner saves the state dict this tool reads."""
    if qualname and _pickled_model(qualname):
        fix = (f"model = torch.load({str(path)!r}, weights_only=False); "
               f"torch.save(model.state_dict(), {str(path.with_name(path.stem + '_state.pt'))!r})")
        return FormatError(f"{path}: holds a whole pickled model ({qualname}), not a state dict; lstm_convert "
                           "reads state dicts, since loading a pickled model runs code from the file",
                           remedy=f"if the file comes from a source you trust, save its state dict in Python "
                                  f"and convert that: {fix}")
    what = f"{qualname}, which is not tensor data" if qualname else "objects that are not tensor data"
    return FormatError(f"{path}: its pickle holds {what}; lstm_convert loads only tensors and dicts of them, "
                       "since anything else could run code from the file")


def _plain_state(path: Path, archive: _zip.Zip) -> dict[str, np.ndarray] | str | None:
    """The state dict of a ``torch.save`` zip holding only tensors in (ordered) dicts, read with NumPy; the
    name of the global when its pickle names anything else (PyTorch's weights_only loader then decides);
    None when it is not such a zip."""
    import pickle

    from .. import _torch_pickle

    pickles = [n for n in archive.names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        return None
    try:
        state = _torch_pickle.Unpickler(archive, pickles[0].split("/")[0]).load()
    except _torch_pickle.NotData as exc:
        return exc.qualname
    # What pickle documents besides UnpicklingError for damaged data, and a memo index so large that pickle
    # fails to allocate it (MemoryError, raised before anything is held).
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, KeyError,
            ValueError, MemoryError, OverflowError, RecursionError) as exc:
        raise FormatError(f"{path}: a damaged PyTorch file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise FormatError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            raise FormatError(f"{path}: {key}: expected a tensor, got {type(value).__name__}")
    return dict(state)


class _Lazy:
    """A tensor of a state dict that becomes a NumPy copy (``np.asarray``) only when it is used."""

    def __init__(self, torch: Any, key: str, value: Any):
        if not isinstance(value, torch.Tensor):
            raise FormatError(f"{key}: expected a tensor, got {type(value).__name__}")
        self.torch, self.key, self.value = torch, key, value
        self.shape = tuple(value.shape)
        self.ndim = len(self.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = torch_adapter.to_numpy(self.torch, self.key, self.value, floating=False)
        return array if dtype is None else array.astype(dtype)


def _placeholder(key: str, value: Any) -> np.ndarray:
    """A read-only array of ``value``'s shape that takes no memory (for what a selection leaves out)."""
    shape = tuple(value.shape) if hasattr(value, "shape") else ()
    return np.broadcast_to(np.zeros((), np.float32), shape)


def _read_torchscript(path: Path, kinds: Mapping[str, str] | None, only: Sequence[str], inventory: bool) -> Model:
    """The parameters of a TorchScript archive, read as data (see :mod:`lstm_convert._torchscript`); the module
    classes it names say what a lone weight is and an nn.RNN's nonlinearity. (``batch_first`` is compiled
    into the archive's code, which is not read: the layers are the weights, whatever the layout of the data.)"""
    from .. import _torchscript

    import pickle

    try:
        arrays, classes, settings = _torchscript.read(path)
    except pickle.UnpicklingError as exc:
        raise FormatError(f"{path}: a TorchScript archive whose parameters cannot be read as data ({exc})",
                          remedy=_torchscript.TRUSTED_ROUTE.replace("FILE", str(path))) from None
    # What pickle documents besides UnpicklingError for damaged data, a storage member that is missing, and a
    # memo index so large that pickle fails to allocate it (MemoryError, raised before anything is held).
    except (EOFError, AttributeError, ImportError, IndexError, TypeError, KeyError, ValueError, MemoryError,
            OverflowError, RecursionError) as exc:
        raise FormatError(f"{path}: a damaged TorchScript archive ({type(exc).__name__}: {exc})") from None
    said = {}
    for prefix, cls in classes.items():
        if cls == "Embedding":
            said[prefix] = "embedding"
        elif cls == "Linear":
            said[prefix] = "linear"
        elif cls in ("Conv1d", "LayerNorm"):  # their settings are compiled into the code: PyTorch's defaults
            said[prefix] = {"Conv1d": "conv1d", "LayerNorm": "layer_norm"}[cls]
        elif cls == "RNN" and settings.get(prefix, {}).get("nonlinearity") in ("tanh", "relu"):
            said[prefix] = f"rnn_{settings[prefix]['nonlinearity']}"
    module_settings = {prefix: {k: v for k, v in plain.items() if k == "batch_first"}
                       for prefix, plain in settings.items()}
    source = {"framework": "torch", "file_format": "torchscript"}
    try:
        return torch_adapter.model_from_state_arrays(arrays, kinds={**said, **(kinds or {})}, settings=module_settings,
                                                      source=source, where=str(path), only=only, inventory=inventory,
                                                      classes=classes)
    except FormatError:
        raise
    except LSTMConvertError as exc:
        raise exc.prefixed(str(path)) from None


def write_pt(weights: Layer | Model, path: str | os.PathLike, *,
             before_rename: Callable[[], None] | None = None) -> Path:
    """Write the PyTorch state dict of ``weights`` in ``torch.save``'s format, without PyTorch and tensor by
    tensor; ``torch.load(path, weights_only=True)`` reads it. What the model computes is kept beside it
    (:data:`MODEL_RECORD`), so that this tool reads the file back as it was written."""
    from .. import _torch_save

    chunks = torch_adapter.state_chunks(weights)
    record = {MODEL_RECORD: _record(weights).encode("utf-8")}
    return atomic_write(path, lambda tmp: _torch_save.write(tmp, chunks.items(), records=record),
                        before_rename=before_rename)


def _record(weights: Layer | Model) -> str:
    model = weights if isinstance(weights, Model) else Model((weights,), source=weights.source)
    spec = model.spec()
    # Where the weights came from; not what this file is (file_format) or how it was read (model_record).
    spec["source"] = {k: v for k, v in spec["source"].items() if k not in _FILE_KEYS}
    return json.dumps({"format_version": 2, **spec}, sort_keys=True)


_FILE_KEYS = ("file_format", "model_record")


def _pt_record(path: Path) -> Any:
    """The model record of a .pt file written here, or None (any other zip, or none)."""
    import zipfile

    from .. import _zip

    try:
        with _zip.Zip(path, "PyTorch file") as archive:
            names = [n for n in archive.namelist() if n.endswith("/" + MODEL_RECORD)]
            if len(names) != 1 or archive.getinfo(names[0]).file_size > 64 << 20:
                return None
            return _parse_record(path, archive.read(names[0]))
    except (zipfile.BadZipFile, OSError, FormatError):
        return None


def _parse_record(path: Path, raw: bytes | str) -> dict:
    try:
        record = _loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: the lstm_convert model record is not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format_version") != 2 or not isinstance(record.get("layers"), list) \
            or not all(isinstance(spec, dict) for spec in record["layers"]):
        raise FormatError(f"{path}: the lstm_convert model record is malformed (expected format_version 2 and a "
                          "list of layer specs)")
    return record


def read_safetensors(path: str | os.PathLike, *, kinds: Mapping[str, str] | None = None,
                     header_only: bool = False, only: Sequence[str] = (), inventory: bool = False) -> Model:
    """Read a PyTorch state dict stored as safetensors (no framework needed): arrays view the mapped
    file, or with ``header_only`` are placeholders with the tensors' shapes and dtypes."""
    path = Path(path)
    handle = st.File.open(path)
    kinds = {**_recorded_kinds(handle.metadata), **(kinds or {})}
    order = _module_order(handle.metadata, handle.keys())
    if not order:
        raise FormatError(f"{path}: holds no tensors")
    # Arrays view the mapped file: a tensor of a module that is not selected is never read.
    arrays = {key: handle.placeholder(key) if header_only else handle.array(key) for key in order}
    record = _parse_record(path, handle.metadata[MODEL_KEY]) if MODEL_KEY in handle.metadata else None
    return _model(path, arrays, kinds, {"framework": "torch", "file_format": "safetensors"}, record, only, inventory)


def write_safetensors(weights: Layer | Model, path: str | os.PathLike, *,
                      before_rename: Callable[[], None] | None = None) -> Path:
    """Write the PyTorch state dict of ``weights`` as safetensors (``{"format": "pt"}`` metadata), tensor by
    tensor: the gate blocks of a stacked tensor are written one after the other, never joined in memory."""
    chunks = torch_adapter.state_chunks(weights)
    # The module order is kept in the metadata (safetensors' own writer sorts tensors by name), and so is
    # what the keys cannot tell (an Embedding's lone weight, an nn.RNN's nonlinearity).
    metadata = {"format": "pt", ORDER_KEY: json.dumps(list(chunks)), KINDS_KEY: json.dumps(_kinds(weights)),
                MODEL_KEY: _record(weights)}
    return atomic_write(path, lambda tmp: st.write(tmp, chunks.items(), metadata), before_rename=before_rename)


def _kinds(weights: Layer | Model) -> dict[str, str]:
    layers = weights.layers if isinstance(weights, Model) else [weights]
    out = {}
    for layer in layers:
        prefix = layer.config.get("torch", {}).get("prefix", f"{layer.name}.") if isinstance(weights, Model) else ""
        if isinstance(layer, Embedding):
            out[prefix.rstrip(".")] = "embedding"
        elif isinstance(layer, Dense) and layer.bias is None:
            out[prefix.rstrip(".")] = "linear"
        elif isinstance(layer, RecurrentLayer) and layer.kind == "rnn":
            out[prefix.rstrip(".")] = f"rnn_{layer.activation}"
        elif layer.kind in ("conv1d", "layer_norm"):
            out[prefix.rstrip(".")] = layer.kind
    return out


def _recorded_kinds(metadata: Mapping[str, str]) -> dict[str, str]:
    try:
        kinds = _loads(metadata.get(KINDS_KEY, "{}"))
    except ValueError:
        return {}
    return {k: v for k, v in kinds.items() if isinstance(k, str) and v in KINDS} \
        if isinstance(kinds, dict) else {}


def _module_order(metadata: Mapping[str, str], keys: list[str]) -> list[str]:
    """The keys in the order they were written, when our metadata records it; else as stored."""
    try:
        order = _loads(metadata.get(ORDER_KEY, "null"))
    except ValueError:
        order = None
    return order if isinstance(order, list) and all(isinstance(k, str) for k in order) \
        and sorted(order) == sorted(keys) else list(keys)


def _model(path: Path, arrays: dict[str, np.ndarray], kinds, source, record: dict | None = None,
           only: Sequence[str] = (), inventory: bool = False) -> Model:
    if record is not None:
        kinds = {**_record_kinds(record), **(kinds or {})}
    try:
        model = torch_adapter.model_from_state_arrays(arrays, kinds=kinds, source=source, where=str(path), only=only,
                                                      inventory=inventory)
    except FormatError:
        raise
    except LSTMConvertError as exc:
        raise exc.prefixed(str(path)) from None
    if record is not None and only:  # the record of the selected layers; the model's input only if the first is
        specs = [spec for spec in record["layers"] if selects(only, _prefix(spec))]
        first = bool(specs) and specs[0] is record["layers"][0]
        record = {**record, "layers": specs, **({} if first else {"input_shape": None, "input_dtype": None})}
    return model if record is None else _with_record(path, model, record)


def _prefix(spec: Mapping[str, Any]) -> str:
    torch = spec.get("config", {}).get("torch", {}) if isinstance(spec.get("config"), dict) else {}
    prefix = torch.get("prefix", f"{spec.get('name')}.") if isinstance(torch, dict) else f"{spec.get('name')}."
    return prefix.rstrip(".") if isinstance(prefix, str) else ""


def _record_kinds(record: Mapping[str, Any]) -> dict[str, str]:
    kinds = {}
    for spec in record["layers"]:
        if spec.get("kind") == "embedding":
            kinds[_prefix(spec)] = "embedding"
        elif spec.get("kind") == "dense" and spec.get("bias") is False:
            kinds[_prefix(spec)] = "linear"
        elif spec.get("kind") == "rnn" and spec.get("activation") in ("tanh", "relu"):
            kinds[_prefix(spec)] = f"rnn_{spec['activation']}"
        elif spec.get("kind") in ("conv1d", "layer_norm"):
            kinds[_prefix(spec)] = spec["kind"]
    return kinds


def _with_record(path: Path, model: Model, record: Mapping[str, Any]) -> Model:
    """The state dict's layers with what the record says they compute (names, return_sequences, masks,
    activations, the model's input); FormatError if the record and the state dict disagree."""
    built = {layer.config.get("torch", {}).get("prefix", f"{layer.name}.").rstrip("."): layer for layer in model}
    layers = []
    try:
        for spec in record["layers"]:
            cls = LAYER_TYPES.get(spec.get("kind"))
            if cls is None:
                raise FormatError(f"unknown layer kind {spec.get('kind')!r}")
            if cls is Masking or (cls in AROUND and spec.get("arrays") == []):  # nothing in the state dict
                layers.append(cls.from_spec(spec, lambda name: None))
                continue
            layer = built.pop(_prefix(spec), None)
            if layer is None or layer.kind != spec["kind"]:
                raise FormatError(f"layer {spec.get('name')!r} is not in the state dict")
            counts = {key: getattr(layer, key) for key in ("num_layers", "directions") if hasattr(layer, key)}
            wrong = {key: spec.get(key) for key, value in counts.items() if spec.get(key) != value}
            if wrong:  # checked before from_spec loops over the record's counts
                raise FormatError(f"layer {spec.get('name')!r}: the record says "
                                  + ", ".join(f"{k} {v!r}" for k, v in wrong.items())
                                  + ", but the state dict holds " + ", ".join(f"{k} {counts[k]}" for k in wrong))
            tensors = dict(dataclasses.replace(layer, name=spec["name"]).tensors())
            layers.append(cls.from_spec(spec, tensors.__getitem__))
        if built:
            raise FormatError(f"the state dict's modules {sorted(built)} are not in it")
        shape = record.get("input_shape")
        recorded = record.get("source", {}) if isinstance(record.get("source"), dict) else {}
        source = {**model.source, **recorded, "file_format": model.source.get("file_format"),
                  "model_record": "lstm_convert"}
        return Model(tuple(layers), config=record.get("config", {}), source=source,
                     input_shape=tuple(shape) if isinstance(shape, list) else shape,
                     input_dtype=record.get("input_dtype"), batch_size=record.get("batch_size"))
    except (LSTMConvertError, KeyError, TypeError, AttributeError) as exc:
        detail = f"lacks {exc}" if isinstance(exc, KeyError) else str(exc)
        raise FormatError(f"{path}: the lstm_convert model record does not match the state dict ({detail})") from None
