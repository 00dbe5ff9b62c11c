"""Keras files: ``.keras`` (Keras 3) read and written without Keras (writing: :mod:`.keras_data`);
legacy ``.h5`` read.

``.keras`` is a zip of ``config.json``, ``metadata.json`` and ``model.weights.h5``.
Inside the h5 file a layer's group is named after its class in snake case
plus a counter in layer order (``layers/lstm``, ``layers/lstm_1``), not after
the layer's name; its variables are positional (``layers/lstm/cell/vars/0..2``
are kernel, recurrent_kernel, bias). The groups are mapped to the layers of
``config.json`` in order, every shape is checked, and from Keras 3.6 on the
real layer name, stored as the ``name`` attribute of the ``vars`` group, must
agree.

A legacy ``.h5`` (tf.keras 2, or Keras 3's legacy writer) holds the
``model_config`` attribute (JSON) and ``model_weights/<layer>`` groups whose
``weight_names`` attribute lists datasets such as
``lstm/lstm_cell/kernel:0``. Attribute values may be ``str`` or ``bytes``.

Only a single chain of layers is read (a Sequential model, or a functional
model whose every layer takes the previous one's output).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import _hdf5, _zip
from .._atomic import atomic_write
from .._json import loads as _loads
from .._optional import require
from ..canonical import Model
from ..errors import FormatError, LSTMConvertError, UnsupportedError
from ..formats import check_selection, selects, unconverted_error
from . import keras as keras_adapter
from . import keras_legacy

_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")
_SKIPPED = ("InputLayer",) + keras_adapter.INFERENCE_IDENTITY


def read_keras(path: str | os.PathLike, *, only: Sequence[str] = (), inventory: bool = False) -> Model:
    """Read a Keras 3 ``.keras`` file into a :class:`Model`, without importing Keras: the layers that the
    shell-style patterns ``only`` select (all without), refusing all at once what the tool does not convert
    unless ``inventory`` lists it in ``model.config["unconverted"]``."""
    h5py = require("h5py")
    path = Path(path)
    try:
        with _zip.Zip(path, ".keras file") as archive:  # every member checked against the file first
            names = set(archive.names)
            missing = [m for m in _MEMBERS if m not in names]
            if missing:
                raise FormatError(f"{path}: not a .keras file: the zip lacks {missing}")
            for name in _MEMBERS:
                _check_member(path, archive.getinfo(name))
            config = _json(path, "config.json", archive.read("config.json"))
            metadata = _json(path, "metadata.json", archive.read("metadata.json"))
            member = archive.getinfo("model.weights.h5")
            if member.compress_type == zipfile.ZIP_STORED:  # as Keras writes it: read in place, no copy
                weights = _Window(path, member)
            else:
                weights = io.BytesIO(archive.read("model.weights.h5"))
    except (zipfile.BadZipFile, OSError) as exc:
        raise FormatError(f"{path}: not a readable .keras file ({exc})") from None
    version = str(metadata.get("keras_version", "3"))
    source = {"framework": "keras", "framework_version": version, "file_format": "keras"}
    # The walk opens its own view of the weights (in the child that runs it), so that this one is untouched.
    fresh = (lambda: _Window(path, member)) if isinstance(weights, _Window) else (lambda: io.BytesIO(weights.getvalue()))
    _hdf5.vet(path, "model.weights.h5", lambda: h5py.File(fresh(), "r"), member.file_size)
    try:
        store = h5py.File(weights, "r")
    except OSError as exc:
        raise FormatError(f"{path}: model.weights.h5 is not a readable HDF5 file ({exc})") from None
    with store, weights:
        return _read_positional(path, store, config, version, source, only, inventory,
                                weights if isinstance(weights, _Window) else None)


def _read_positional(path: Path, store: Any, config: Mapping[str, Any], version: str, source: Mapping[str, str],
                     only: Sequence[str], inventory: bool, window: _Window | None = None) -> Model:
    """The model of Keras 3 weights (``layers/<snake case class>/vars/<index>``) and their configuration."""
    entries, unknown = [], []
    used: dict[str, int] = {}
    for class_name, layer_config, inbound in _chain(path, config, strict=not only):
        group_name = unique(snake_case(class_name), used)
        if class_name in _SKIPPED:
            entries.append((class_name, layer_config, None, inbound))
            continue
        if not selects(only, layer_config["name"]):
            entries.append((class_name, layer_config, _UNSELECTED, inbound))
            continue
        group = store.get(f"layers/{group_name}")
        places = _variables(class_name, layer_config, unknown, lambda: _shapes(group))
        if places is None:
            continue
        if group is None and places:
            raise FormatError(f"{path}: layer {layer_config.get('name')!r} ({class_name}) has no weights "
                              f"group layers/{group_name}")
        tensors = _positional(path, group, layer_config, places, window) if group is not None else {}
        entries.append((class_name, layer_config, tensors, inbound))
    return _model(path, _selected(path, entries, only, unknown, inventory), config, version, source, unknown,
                  first=_first_selected(entries))


def _model(path: Path, entries: list, config: Mapping[str, Any], version: str, source: Mapping[str, str],
           unknown: list | None = None, first: bool = True) -> Model:
    """The model of a file's layers, ``(class name, config, tensors or None when skipped)`` in order; the
    model's input is the file's when ``first`` (the selection starts at the first layer)."""
    shape, dtype = _input(config) if first else (None, None)
    kept = [(class_name, layer_config, tensors) for class_name, layer_config, tensors in entries if tensors is not None]
    layers = keras_adapter.chain(kept, shape[1:] if shape else None,
                                 lambda class_name, layer_config, tensors, features, steps, rank: _layer(
                                     path, class_name, layer_config, tensors, version, source, features, steps, rank))
    skipped = [f"{c.get('name')} ({n})" for n, c, t in entries if t is None and n != "InputLayer"]
    settings = {"name": config.get("config", {}).get("name")}
    if skipped:
        settings["skipped"] = skipped
    try:
        return Model(tuple(layers), config={"keras": settings, **({"unconverted": unknown} if unknown else {})},
                     source=source,
                     input_shape=tuple(shape[1:]) if shape else None, batch_size=shape[0] if shape else None,
                     input_dtype=dtype)
    except LSTMConvertError as exc:
        raise FormatError(f"{path}: {exc}") from None


def read_h5(path: str | os.PathLike, *, only: Sequence[str] = (), inventory: bool = False,
            config: Any = None) -> Model:
    """Read a legacy Keras ``.h5`` model file (Keras 1, Keras 2, tf.keras 2, or Keras 3's legacy writer);
    ``only`` and ``inventory`` as :func:`read_keras` takes them.

    A weights-only file (``model.save_weights``: tf.keras 2's ``.h5``, Keras 3's ``.weights.h5``) holds no
    architecture: ``config`` gives it, as a ``.keras`` or ``.json`` file (``model.to_json()``), a model
    configuration (a dict), or a Keras model. Layers are matched to the file's by name, never by position."""
    h5py = require("h5py")
    path = Path(path)
    _hdf5.vet(path, "", lambda: h5py.File(path, "r"), path.stat().st_size)
    try:
        store = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from None
    with store:
        full = "model_config" in store.attrs and "model_weights" in store
        keras3 = not full and "layer_names" not in store.attrs and isinstance(store.get("layers"), h5py.Group)
        if not full and "layer_names" not in store.attrs and not keras3:
            raise FormatError(f"{path}: not a Keras model or weights file (no model_config attribute and "
                              "model_weights group, no layer_names attribute, no layers group)")
        if full and config is not None:
            raise FormatError(f"{path}: holds its own model configuration; an architecture (--config) is given "
                              "only for a weights-only file")
        if full:
            architecture = _json(path, "model_config", _text(store.attrs["model_config"]))
            version = _text(store.attrs.get("keras_version", "1"))
            source = {"framework": "keras", "framework_version": version, "file_format": "h5"}
        else:
            if config is None:
                raise FormatError(f"{path}: a weights-only Keras file (model.save_weights) holds no model "
                                  "configuration", remedy="pass config= with the model, its .keras or its .json",
                                  hint="give the architecture with --config MODEL.keras or MODEL.json")
            architecture, version, named = architecture_of(config)
            # Keras 2 and tf.keras read a file without keras_version as Keras 1's; so does this reader.
            version = version or _text(store.attrs.get("keras_version", "3" if keras3 else "1"))
            source = {"framework": "keras", "framework_version": version, "file_format": "h5",
                      "weights_only": "true", **({"architecture": named} if named else {})}
            if keras3:
                return _read_positional(path, store, architecture, version, source, only, inventory)
        group = store["model_weights"] if full else store
        return _read_legacy(path, _H5Layers(path, group), architecture, version, source, only, inventory)


class _H5Layers:
    """A legacy HDF5 file's weights: one group per layer name (listed in ``layer_names``), each listing its
    ``weight_names``."""

    def __init__(self, path: Path, group: Any) -> None:
        self.path, self.group = path, group
        self.names = [_text(n) for n in group.attrs.get("layer_names", [])]

    def holds(self, name: str) -> bool:
        return name in self.names and name in self.group

    def missing(self, name: str) -> str:
        return f"no weights group {self.group.name.rstrip('/')}/{name}"

    def shapes(self, name: str) -> dict[str, list[int]]:
        return _shapes(self.group.get(name))

    def tensors(self, name: str, recipe: Any) -> dict[str, np.ndarray]:
        return _weights(self.path, self.group[name], name, recipe)


class NamedLayers:
    """The weights of a Keras model by layer name, from variable names (``enc/lstm_cell/kernel``,
    ``bidirectional/forward_gru/gru_cell/bias``): ``variables`` maps a layer's name to ``{variable name:
    (shape, fetch)}``, ``fetch()`` giving the value."""

    def __init__(self, path: Path, variables: Mapping[str, Mapping[str, tuple]]) -> None:
        self.path, self.variables = path, variables
        self.names = list(variables)

    def holds(self, name: str) -> bool:
        return name in self.variables

    def missing(self, name: str) -> str:
        return f"no variables named {name}/..."

    def shapes(self, name: str) -> dict[str, list[int]]:
        return {var: list(shape) for var, (shape, _) in self.variables.get(name, {}).items()}

    def tensors(self, name: str, recipe: Any) -> dict[str, np.ndarray]:
        tensors = {}
        for var, (_, fetch) in self.variables[name].items():
            role = keras_legacy.key(recipe, var)
            if role in tensors:
                raise FormatError(f"{self.path}: layer {name!r} has two variables for its {role!r}")
            tensors[role] = fetch()
        return tensors


def read_named(path: Path, layers: NamedLayers, config: Any, source: Mapping[str, str], only: Sequence[str] = (),
               inventory: bool = False) -> Model:
    """A Keras model from its architecture (``config``, as :func:`architecture_of` takes it) and its weights by
    layer name (a TensorFlow checkpoint of a Keras model)."""
    architecture, version, named = architecture_of(config)
    if version is None and "hard_sigmoid" in json.dumps(architecture):
        raise FormatError(f"{named or 'the architecture'}: does not say which Keras wrote it, and its hard_sigmoid "
                          "is 0.2x + 0.5 in Keras 1 and 2 but x/6 + 0.5 in Keras 3; give the .keras file, or the "
                          "model.to_json() that records keras_version")
    source = {**source, "framework_version": version or "unknown", **({"architecture": named} if named else {})}
    return _read_legacy(path, layers, architecture, version or "3", source, only, inventory)


def _read_legacy(path: Path, weights: Any, config: Mapping[str, Any], version: str, source: Mapping[str, str],
                 only: Sequence[str], inventory: bool) -> Model:
    """The model of legacy weights (:class:`_H5Layers`, :class:`NamedLayers`) and their configuration."""
    try:
        config, recipes, refused = keras_legacy.modern_config(config, version)
    except LSTMConvertError as exc:
        raise FormatError(f"{path}: {exc}") from None
    saved = weights.names
    entries, unknown = [], []
    for class_name, layer_config, inbound in _chain(path, config, strict=not only):
        name = layer_config["name"]
        if name in refused:
            unknown.append({"name": name, "type": class_name, "why": refused[name],
                            "tensors": weights.shapes(name)})
            continue
        if class_name in _SKIPPED:
            entries.append((class_name, layer_config, None, inbound))
            continue
        if not selects(only, name):
            entries.append((class_name, layer_config, _UNSELECTED, inbound))
            continue
        places = _variables(class_name, layer_config, unknown, lambda: weights.shapes(name))
        if places is None:
            continue
        if not places:
            entries.append((class_name, layer_config, {}, inbound))
            continue
        if not weights.holds(name):
            held = ", ".join(saved[:8]) + (", ..." if len(saved) > 8 else "")
            raise FormatError(f"{path}: layer {name!r} ({class_name}) has {weights.missing(name)}; the file holds "
                              f"weights of layers {held or 'none'}")
        recipe = recipes.get(name)
        tensors = weights.tensors(name, recipe)
        if recipe is not None:
            tensors = _legacy(path, recipe, tensors, name, layer_config)
        expected = keras_adapter.variables(class_name, layer_config)
        if set(tensors) != set(expected):
            raise FormatError(f"{path}: layer {name!r} ({class_name}) holds weights {sorted(tensors)}, "
                              f"expected {list(expected)}")
        entries.append((class_name, layer_config, tensors, inbound))
    return _model(path, _selected(path, entries, only, unknown, inventory), config, version, source, unknown,
                  first=_first_selected(entries))


def architecture_of(config: Any) -> tuple[dict[str, Any], str | None, str | None]:
    """``(model configuration, the Keras version that wrote it or None, the file it came from or None)`` of
    an architecture given for a weights-only file: a ``.keras`` file, a ``.json`` file of
    ``model.to_json()``, a configuration dict, or a Keras model (anything with ``to_json()``)."""
    if isinstance(config, (str, os.PathLike)):
        where = Path(config)
        if not where.is_file():
            raise FormatError(f"{where}: no such file (the model configuration)" if not where.exists() else
                              f"{where}: not a regular file (the model configuration)")
        with open(where, "rb") as file:
            head = file.read(4)
        if head.startswith(b"PK"):
            try:
                with _zip.Zip(where, ".keras file") as archive:
                    if "config.json" not in archive.names:
                        raise FormatError(f"{where}: not a .keras file: the zip lacks config.json")
                    _check_member(where, archive.getinfo("config.json"))
                    value = _json(where, "config.json", archive.read("config.json"))
                    metadata = (_json(where, "metadata.json", archive.read("metadata.json"))
                                if "metadata.json" in archive.names else {})
            except (zipfile.BadZipFile, OSError) as exc:
                raise FormatError(f"{where}: not a readable .keras file ({exc})") from None
            version = metadata.get("keras_version")
        else:
            if where.stat().st_size > _MAX_JSON:
                raise FormatError(f"{where}: {where.stat().st_size} bytes, more than any model configuration "
                                  f"({_MAX_JSON} at most)")
            value = _json(where, "the model configuration", where.read_bytes())
            version = value.get("keras_version")
        named = str(where)
    elif isinstance(config, Mapping):
        value, version, named = dict(config), config.get("keras_version"), None
    elif callable(getattr(config, "to_json", None)):
        value = _json(Path(type(config).__name__), "to_json()", config.to_json())
        version, named = value.get("keras_version"), None
    else:
        raise FormatError(f"the architecture must be a .keras or .json file, a model configuration or a Keras model, "
                          f"not {type(config).__name__}")
    if version is None and "registered_name" in value and "module" in value:  # Keras 3's serialization
        version = "3"
    if not isinstance(value.get("config"), (dict, list)) or not isinstance(value.get("class_name"), str):
        raise FormatError(f"{named or 'the architecture'}: not a Keras model configuration (no class_name and "
                          "config)")
    return value, (str(version) if isinstance(version, (str, int, float)) else None), named


def _weights(path: Path, group: Any, name: str, recipe: Any) -> dict[str, np.ndarray]:
    """A legacy file's weights of one layer, by key (:func:`keras_legacy.key`), in the order listed."""
    import h5py

    tensors = {}
    for weight_name in (_text(w) for w in group.attrs.get("weight_names", [])):
        role = keras_legacy.key(recipe, weight_name)
        if role in tensors:
            raise FormatError(f"{path}: layer {name!r} lists weight {role!r} twice")
        dataset = group.get(weight_name)
        if not isinstance(dataset, h5py.Dataset):
            raise FormatError(f"{path}: weight {weight_name} of layer {name!r} is listed but missing")
        tensors[role] = _array(path, dataset, f"{name}/{weight_name}")
    return tensors


def _legacy(path: Path, recipe: Any, tensors: dict[str, np.ndarray], name: str, config: Mapping[str, Any]):
    """A legacy layer's weights in today's layout (:mod:`.keras_legacy`)."""
    inner = config.get("layer") if isinstance(config.get("layer"), dict) else None
    units = (inner.get("config", {}) if inner else config).get("units")
    try:
        return keras_legacy.tensors(recipe, tensors, name, units)
    except LSTMConvertError as exc:
        raise FormatError(f"{path}: {exc}") from None


def write_keras(model: Model, path: str | os.PathLike, *, before_rename: Callable[[], None] | None = None) -> Path:
    """Write ``model`` as a ``.keras`` file that ``keras.saving.load_model`` loads, as data (no Keras needed:
    :mod:`lstm_convert.adapters.keras_data`)."""
    from . import keras_data

    keras_adapter.model_parts(model)  # checked before the temporary file exists
    return atomic_write(path, lambda tmp: keras_data.write(model, tmp), suffix=".keras", before_rename=before_rename)


# -- helpers --------------------------------------------------------------------------------------

_MAX_JSON = 64 << 20  # config.json, metadata.json


def _check_member(path: Path, member: zipfile.ZipInfo) -> None:
    if member.filename.endswith(".json") and member.file_size > _MAX_JSON:
        raise FormatError(f"{path}: {member.filename} claims {member.file_size} bytes, more than any model "
                          f"configuration ({_MAX_JSON} at most)")


class _Window(io.RawIOBase):
    """A read-only, seekable view of one uncompressed zip member, so that h5py reads it in place."""

    def __init__(self, path: Path, member: zipfile.ZipInfo):
        super().__init__()
        self._file = open(path, "rb")
        self._file.seek(member.header_offset)
        local = self._file.read(30)
        if local[:4] != b"PK\x03\x04":
            self._file.close()
            raise zipfile.BadZipFile(f"no local header for {member.filename}")
        name_length, extra_length = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        self._start = member.header_offset + 30 + name_length + extra_length
        self._size = member.file_size
        self._pos = 0
        self._map: np.memmap | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        self._file.seek(self._start + self._pos)
        read = self._file.readinto(memoryview(buffer)[:count])
        self._pos += read
        return read

    @property
    def size(self) -> int:
        return self._size

    def view(self, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """A read-only array of the member's bytes at ``offset``, in the mapped zip file."""
        if self._map is None:
            self._map = np.memmap(self._file.name, dtype=np.uint8, mode="r")
        count = int(np.prod(shape))
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=self._start + offset).reshape(shape)

    def close(self) -> None:
        self._file.close()
        super().close()


def _layer(path: Path, class_name: str, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
           version: str, source: Mapping[str, str], features: int | None, steps: int | None = None, rank: int = 3):
    try:
        layer = keras_adapter.layer_from_config(class_name, config, tensors, keras_version=version, source=source,
                                                features=features, steps=steps, rank=rank)
        return keras_legacy.finish(layer, tensors) if isinstance(tensors, keras_legacy.Tensors) else layer
    except UnsupportedError as exc:
        raise UnsupportedError(f"{path}: {exc}") from None
    except LSTMConvertError as exc:
        raise FormatError(f"{path}: {exc}") from None


def _positional(path: Path, group: Any, config: Mapping[str, Any], places: Mapping[str, str],
                window: _Window | None = None) -> dict[str, np.ndarray]:
    """The variables of one layer's group, by key; every variables folder must hold exactly what is expected."""
    name = config.get("name")
    outer = group.get("vars")
    if outer is not None and "name" in outer.attrs and _text(outer.attrs["name"]) != name:
        raise FormatError(f"{path}: weights group {group.name} belongs to layer {_text(outer.attrs['name'])!r}, "
                          f"but config.json puts {name!r} there")
    folders: dict[str, list[str]] = {}
    for place in places.values():
        folder, _, index = place.rpartition("/")
        folders.setdefault(folder, []).append(index)
    for folder, indices in folders.items():
        holder = group.get(folder)
        held = sorted(holder.keys()) if holder is not None else []
        if held != sorted(indices):
            raise FormatError(f"{path}: layer {name!r} has variables {held} in {group.name}/{folder}, "
                              f"expected {sorted(indices)}")
    return {key: _array(path, group[place], f"{group.name}/{place}", window) for key, place in places.items()}


def _array(path: Path, dataset: Any, label: str, window: _Window | None = None) -> np.ndarray:
    if dataset.dtype.kind != "f" and dataset.dtype.name != "bfloat16":
        raise FormatError(f"{path}: {label} has dtype {dataset.dtype}, expected floating-point weights")
    if window is not None and dataset.chunks is None and dataset.compression is None and dataset.size:
        offset = dataset.id.get_offset()  # contiguous storage: view its bytes in the mapped .keras file
        if offset is not None and offset + dataset.nbytes <= window.size:
            return window.view(offset, dataset.dtype, dataset.shape)
    return dataset[()]


def _chain(path: Path, config: Mapping[str, Any], strict: bool = True) -> Iterator[tuple[str, dict[str, Any], list]]:
    """The layers of a Sequential or single-chain functional model, in order, each with the layers it takes
    its input from. Without ``strict`` a functional model may be any graph (a selection of it is checked)."""
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        raise FormatError(f"{path}: the model configuration has no list of layers")
    previous = None
    for entry in layers:
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise FormatError(f"{path}: a layer entry of the model configuration is malformed")
        class_name = entry.get("class_name")
        layer_config = dict(entry["config"])
        layer_config.setdefault("name", entry.get("name", class_name))
        inbound = [previous] if previous is not None else []
        if config.get("class_name") != "Sequential" and class_name != "InputLayer":
            inbound = _inbound(entry.get("inbound_nodes"))
            if strict and inbound != [previous]:
                raise UnsupportedError(f"{path}: layer {layer_config['name']!r} takes {inbound or 'no'} input(s), "
                                       f"not just the previous layer {previous!r}; only a single chain of layers "
                                       "is supported")
        previous = layer_config["name"]
        yield class_name, layer_config, inbound


_UNSELECTED = "unselected"  # an entry's tensors when ``only`` does not select the layer


def _variables(class_name: str, config: Mapping[str, Any], unknown: list, shapes) -> dict[str, str] | None:
    """The variables of a layer the tool converts; None (and an entry in ``unknown``) for one it does not."""
    try:
        return keras_adapter.variables(class_name, config)
    except UnsupportedError as exc:  # a wrapper of what is not converted says so; another layer is not converted
        why = str(exc).split(": ", 1)[-1] if class_name in keras_adapter.SUPPORTED else \
            "not a layer lstm_convert converts"
        unknown.append({"name": config.get("name"), "type": class_name, "why": why, "tensors": shapes()})
        return None


def _shapes(group: Any) -> dict[str, list[int]]:
    """The shapes of the datasets under an HDF5 group, by path below it."""
    import h5py

    found: dict[str, list[int]] = {}

    def visit(name: str, item: Any) -> None:  # returns None: visititems stops at the first other value
        if isinstance(item, h5py.Dataset):
            found[name] = list(item.shape)

    if isinstance(group, h5py.Group):
        group.visititems(visit)
    return found


def _first_selected(entries: list) -> bool:
    """Whether the first layer after the input is selected, so that the model's input is the file's."""
    real = [e for e in entries if e[0] != "InputLayer"]
    return bool(real) and real[0][2] is not _UNSELECTED


def _selected(path: Path, entries: list, only: Sequence[str], unknown: list, inventory: bool) -> list:
    """The entries ``(class name, config, tensors)`` of the selected layers, which must follow one another
    and must not take a mask from a layer that is not selected; what the tool does not convert is refused
    (all of it, in one message) unless ``inventory``."""
    real = [e for e in entries if e[2] is not _UNSELECTED and e[0] != "InputLayer"]
    if only:
        check_selection(str(path), only, [e[1]["name"] for e in entries if e[0] != "InputLayer"]
                        + [u["name"] for u in unknown])
    if unknown and not (inventory and any(e[2] is not None for e in real)):
        raise unconverted_error(str(path), unknown, "Keras")
    chosen, last, gap, masker, previous = [], None, None, None, None
    for class_name, config, tensors, inbound in entries:
        name = config["name"]
        if class_name == "InputLayer":
            continue
        if tensors is _UNSELECTED:
            if last is not None:
                gap = gap or name
            elif class_name == "Masking" or (class_name == "Embedding" and config.get("mask_zero")):
                masker = name
            continue
        if only and tensors is None and last is None:
            continue  # an identity layer before the selection: not part of it
        if only and tensors is not None:
            if last is not None and (gap is not None or inbound != [previous]):
                raise UnsupportedError(f"{path}: the selected layers {last!r} and {name!r} do not follow one another"
                                       + (f" ({gap!r} lies between them)" if gap else f" ({name!r} takes {inbound})")
                                       + "; select one run of layers, each taking the previous one's output")
            if last is None and masker is not None:
                raise UnsupportedError(f"{path}: {name!r} takes the mask that {masker!r} makes, which is not selected",
                                       remedy=f"select {masker!r} too", hint=f"select {masker!r} too (--only)")
            last = name
        chosen.append((class_name, config, tensors))
        previous = name
    return chosen


def _inbound(nodes: Any) -> list[str]:
    """Names of the layers feeding a functional layer (Keras 3 and Keras 2 configs)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            history = value.get("keras_history")
            if isinstance(history, list) and history and isinstance(history[0], str):
                found.append(history[0])
                return
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
                found.append(value[0])  # Keras 2: [layer name, node index, tensor index, kwargs]
                return
            for item in value:
                walk(item)

    walk(nodes)
    return found


def _input(config: Mapping[str, Any]) -> tuple[list | None, str | None]:
    """The model's input shape, batch first (``batch_shape``, or Keras 2's ``batch_input_shape`` of the first
    layer), and its dtype, when the configuration records them."""
    layers = config.get("config", {}).get("layers", [])
    first = layers[0].get("config", {}) if layers and isinstance(layers[0], dict) else {}
    shape = first.get("batch_shape") or first.get("batch_input_shape")
    dtype = first.get("dtype")
    valid = isinstance(shape, list) and len(shape) >= 2 and all(d is None or isinstance(d, int) for d in shape)
    return (shape if valid else None), (dtype if isinstance(dtype, str) else None)


def _json(path: Path, what: str, raw: bytes | str) -> dict[str, Any]:
    try:
        value = _loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise FormatError(f"{path}: {what} must be a JSON object")
    return value


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def snake_case(name: str) -> str:
    """Keras' group name for a class: ``LSTM`` -> ``lstm``, ``SimpleRNN`` -> ``simple_rnn``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def unique(name: str, used: dict[str, int]) -> str:
    """Keras' name for the next object called ``name`` in one container: ``name``, then ``name_1``, ..."""
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name
