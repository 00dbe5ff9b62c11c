"""Writing a ``.keras`` file as data, without Keras: what ``model.save()`` writes, built from the same layer
descriptions the Keras writer builds its layers from (:func:`lstm_convert.adapters.keras.layer_spec`).

A Keras 3 file is a zip of ``metadata.json``, ``config.json`` (the serialized ``Sequential``: an
``InputLayer`` and each layer's class and the arguments it is built with, Keras' defaults for the rest) and
``model.weights.h5``, whose groups are named as Keras names them when it saves a model: ``layers/<the
layer's class in snake case>[_<n>]`` (numbered from 1 for the second of a class), each with a ``vars``
group (attribute ``name``, the layer's name) holding the variables as datasets ``0``, ``1``, ... in the
order the layer creates them; a recurrent layer's under ``cell/vars``, a ``Bidirectional`` layer's under
``forward_layer/cell/vars`` and ``backward_layer/cell/vars``. Keras builds the model from its input when
it loads the file, then assigns the variables by these paths.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

from .._atomic import open_output
from ..canonical import Model, RecurrentLayer
from . import keras as keras_adapter
from .keras_files import snake_case, unique

_FORMAT_VERSION = "3.0.0"  # the first Keras whose files are laid out so; Keras reads the config, not this
_DATE = (1980, 1, 1, 0, 0, 0)


def write(model: Model, path: Path) -> None:
    """Write ``model`` (which :func:`lstm_convert.adapters.keras.check_model` accepted) as a ``.keras`` file
    at ``path``; the same model gives the same bytes."""
    import h5py

    layers, shape, dtype, name = keras_adapter.model_parts(model)
    specs = [keras_adapter.layer_spec(layer, in_model=True) for layer in layers]
    inputs = {"module": "keras.layers", "class_name": "InputLayer",
              "config": {"batch_shape": [model.batch_size, *shape], "dtype": dtype, "name": "input"},
              "registered_name": None}
    config = {"module": "keras", "class_name": "Sequential",
              "config": {"name": name, "trainable": True, "layers": [inputs, *specs]},
              "registered_name": None, "build_config": {"input_shape": [model.batch_size, *shape]},
              "compile_config": None}
    # The weights go to a file beside the destination's temporary file, then into the zip in blocks: memory
    # stays a block, whatever the model's size.
    weights = path.with_name(path.name + ".weights.h5")
    try:
        with h5py.File(weights, "w") as store:  # (tracking creation order would record times)
            store.create_group("vars").attrs["name"] = name
            group = store.create_group("layers")
            used: dict[str, int] = {}
            for layer, spec in zip(layers, specs):
                _layer_vars(group.create_group(unique(snake_case(spec["class_name"]), used)), layer, spec)
        with open_output(path) as out, zipfile.ZipFile(out, "w") as archive:
            for member, text in (("metadata.json", json.dumps(_metadata())), ("config.json", json.dumps(config))):
                archive.writestr(zipfile.ZipInfo(member, date_time=_DATE), text)
            with open(weights, "rb") as data, archive.open(zipfile.ZipInfo("model.weights.h5", date_time=_DATE),
                                                          "w", force_zip64=True) as member:
                shutil.copyfileobj(data, member, 4 << 20)
    finally:
        weights.unlink(missing_ok=True)


def _metadata() -> dict[str, str]:
    """``keras_version``: the installed Keras's (looked up without importing it), else the first Keras 3;
    ``saved_by``: this tool, which wrote the file; no date, so that the same model gives the same bytes."""
    from importlib import metadata

    from .. import __version__

    try:
        version = metadata.version("keras")
    except metadata.PackageNotFoundError:
        version = _FORMAT_VERSION
    return {"keras_version": version, "date_saved": "1980-01-01@00:00:00", "saved_by": f"lstm_convert {__version__}"}


def _layer_vars(group: Any, layer: Any, spec: dict[str, Any]) -> None:
    """One layer's groups and variables, as Keras lays them out (see the module docstring)."""
    tensors = keras_adapter.layer_tensors(layer)
    group.create_group("vars").attrs["name"] = spec["config"]["name"]
    if not isinstance(layer, RecurrentLayer):
        for index, array in enumerate(tensors.values()):
            group["vars"].create_dataset(str(index), data=array, track_times=False)
        return
    if spec["class_name"] == "Bidirectional":
        inner = spec["config"]["layer"]["config"]["name"]
        for side in ("forward", "backward"):
            part = group.create_group(f"{side}_layer")
            part.create_group("vars").attrs["name"] = f"{side}_{inner}"
            _cell_vars(part, {k.partition("/")[2]: v for k, v in tensors.items() if k.startswith(f"{side}/")},
                       layer.kind)
        return
    _cell_vars(group, tensors, layer.kind)


def _cell_vars(group: Any, tensors: dict[str, Any], kind: str) -> None:
    cell = group.create_group("cell").create_group("vars")
    cell.attrs["name"] = {"lstm": "lstm_cell", "gru": "gru_cell", "rnn": "simple_rnn_cell"}[kind]
    for index, role in enumerate(("kernel", "recurrent_kernel", "bias")):
        if role in tensors:
            cell.create_dataset(str(index), data=tensors[role], track_times=False)
