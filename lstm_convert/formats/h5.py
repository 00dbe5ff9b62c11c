"""Legacy Keras ``.h5`` model files (tf.keras 2, Keras 3's legacy writer): read with h5py alone, run
through tf_keras where it is installed."""

from __future__ import annotations

from pathlib import Path

from . import Format, ReadOptions, Run, parsing
from .keras import PARSER_ERRORS

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _recognise(path: Path, head: bytes) -> bool:
    return head.startswith(HDF5_SIGNATURE)


def _read(path: Path, options: ReadOptions):
    from ..adapters.keras_files import read_h5

    with parsing(path, "legacy Keras .h5 file", PARSER_ERRORS):
        return read_h5(path, only=options.only, inventory=options.inventory, config=options.config)


def _run(path: Path, model, calls: list) -> Run:
    from .keras import run

    if model.source.get("weights_only"):
        return _run_weights(path, model, calls)
    if any("layout" in layer.source for layer in model.layers):  # weights in a legacy layout
        return _run_legacy(path, model, calls)
    return run(path, model, calls, keras3=False)  # Keras 3 cannot load a tf.keras 2 file; tf_keras can


def _run_legacy(path: Path, model, calls: list) -> Run:
    """A file with CuDNN or Keras 1 layers, computed by tf_keras: a CuDNN layer runs only on a GPU and
    tf_keras reads no Keras 1 configuration, so the model is built from the configuration as today's Keras
    writes it and tf_keras' own legacy loader converts the file's weights into it (``load_weights``)."""
    import importlib.util

    if importlib.util.find_spec("tf_keras") is None:
        return Run(None, "", ("tf_keras, which converts its weights, is not installed",))
    import json

    import h5py
    import numpy as np
    import tf_keras

    from ..adapters import keras_legacy
    from ..adapters.keras_files import _text
    from .keras import _first_line, _part

    with h5py.File(path, "r") as store:
        config = json.loads(_text(store.attrs["model_config"]))
        version = _text(store.attrs.get("keras_version", "1"))
    config, _, _ = keras_legacy.modern_config(config, version)
    try:
        built = tf_keras.models.model_from_json(json.dumps(config))
        built.load_weights(path)
        loaded = _part(tf_keras, built, model)
        output = np.concatenate([np.asarray(loaded(x)) for x in calls])
    except Exception as exc:  # noqa: BLE001 - tf_keras raises many types for weights it cannot convert
        return Run(None, "", (f"tf_keras cannot convert its weights ({_first_line(exc)})",))
    return Run(output, "tf_keras (its legacy loader converting the weights)")


FORMAT = Format(
    name="h5", title="legacy Keras model", suffixes=(".h5", ".hdf5"), layouts="keras",
    holds="a Keras 1, Keras 2 or tf.keras 2 model file (CuDNN layers too), or Keras 3's legacy format; a "
          "weights-only file (`save_weights`) with its architecture (`--config`): read with h5py (no Keras)",
    recognise=_recognise, read=_read, run=_run, runs_stateful=True, architecture=True,
    runtime="tf_keras' `load_model`, where installed",
)


def _run_weights(path: Path, model, calls: list) -> Run:
    """A weights-only file, computed by the Keras its architecture came from: the model built from the
    architecture file the reader was given, and the weights loaded into it by that Keras' ``load_weights``."""
    import importlib.util

    named = model.source.get("architecture")
    if named is None:
        return Run(None, "", ("its architecture was given as an object, not a file, so no Keras loads it",))
    keras3 = model.source.get("framework_version", "").startswith("3")
    name = "keras" if keras3 else "tf_keras"
    if importlib.util.find_spec(name) is None:
        return Run(None, "", (f"{name}, which loads it, is not installed",))
    import importlib

    import numpy as np

    from .keras import _first_line, _part

    keras = importlib.import_module(name)
    try:
        if named.endswith(".keras"):
            built = keras.saving.load_model(named, compile=False) if keras3 else keras.models.load_model(named)
        else:
            with open(named, encoding="utf-8") as file:
                built = keras.models.model_from_json(file.read())
        built.load_weights(path)
        loaded = _part(keras, built, model)
        output = np.concatenate([np.asarray(loaded(x)) for x in calls])
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for files it cannot load
        return Run(None, "", (f"{name} cannot load it with its architecture ({_first_line(exc)})",))
    return Run(output, f"{name} (load_weights into {named})")
