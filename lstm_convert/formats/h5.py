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
        return read_h5(path, only=options.only, inventory=options.inventory)


def _run(path: Path, model, calls: list) -> Run:
    from .keras import run

    return run(path, model, calls, keras3=False)  # Keras 3 cannot load a tf.keras 2 file; tf_keras can


FORMAT = Format(
    name="h5", title="legacy Keras model", suffixes=(".h5", ".hdf5"), layouts="keras",
    holds="a tf.keras 2.x (or Keras 3 legacy-format) model file: read with h5py (no Keras)",
    recognise=_recognise, read=_read, run=_run, runs_stateful=True,
    runtime="tf_keras' `load_model`, where installed",
)
