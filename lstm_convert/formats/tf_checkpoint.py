"""TensorFlow checkpoints: ``PREFIX.index`` and ``PREFIX.data-00000-of-00001``, as TensorFlow 1's
``tf.compat.v1.train.Saver`` writes them, read by the project's own reader of the tensor-bundle format
(:mod:`lstm_convert._tf_bundle`, no TensorFlow) and recognised by variable names
(:mod:`lstm_convert.adapters.tf_checkpoint`). A checkpoint is named by its prefix or by its ``.index``
file; read, not written.
"""

from __future__ import annotations

import glob
import struct
from pathlib import Path

from . import Format, ReadOptions, parsing


def _recognise(path: Path, head: bytes) -> bool:
    """A file ending in the table's magic number, with a data shard beside it (named after the file without
    its suffix: ``model.index`` and ``model.data-00000-of-00001``)."""
    from .._tf_bundle import _MAGIC

    if not _companions(path):
        return False
    with open(path, "rb") as handle:
        if handle.seek(0, 2) < 48:
            return False
        handle.seek(-8, 2)
        return struct.unpack("<Q", handle.read(8))[0] == _MAGIC


def _companions(path: Path) -> list[Path]:
    prefix = path.with_suffix("")
    return sorted(prefix.parent.glob(f"{glob.escape(prefix.name)}.data-[0-9][0-9][0-9][0-9][0-9]-of-[0-9]*"))


def locate(path: Path) -> Path | None:
    """The ``.index`` file a checkpoint named by its prefix stands for (``model.ckpt-100`` for
    ``model.ckpt-100.index``), or None."""
    index = path.with_name(path.name + ".index")
    if not path.exists() and index.is_file():
        return index
    return None


def _read(path: Path, options: ReadOptions):
    from .._lazy import np
    from .._tf_bundle import Bundle
    from ..adapters.tf_checkpoint import read
    from ..formats import selects

    with parsing(path, "TensorFlow checkpoint", ()):  # the bundle reader raises the library's own errors
        bundle = Bundle(path)

        def fetch(name: str):
            var = bundle.variables[name]
            if options.header_only or (options.only and not selects(options.only, name)):
                from .._tf_bundle import _numpy_dtype

                dtype = _numpy_dtype(var.dtype) if var.dtype in ("float16", "bfloat16", "float32", "float64") \
                    else np.dtype("float32")
                return np.broadcast_to(np.zeros((), dtype), var.shape)
            return bundle.array(name)

        source = {"framework": "tensorflow", "file_format": "tf_checkpoint"}
        return read(list(bundle.variables), fetch, lambda name: bundle.variables[name].shape, str(path),
                    only=options.only, inventory=options.inventory, forget_bias=options.forget_bias, source=source)


def _notes(model) -> list[str]:
    from ..adapters.tf_checkpoint import notes

    return notes(model)


FORMAT = Format(
    name="tf_checkpoint", title="TensorFlow checkpoint", suffixes=(".index",),
    holds="a TensorFlow 1 checkpoint (`tf.compat.v1.train.Saver`: `PREFIX.index` + `PREFIX.data-*`, named by its "
          "prefix or its `.index`): LSTMCell, BasicLSTMCell, LSTMBlockCell, GRUCell, BasicRNNCell, cuDNN-compatible "
          "cells, MultiRNNCell, bidirectional and dense scopes, recognised by variable names and read with the "
          "project's own tensor-bundle reader (no TensorFlow)",
    recognise=_recognise, read=_read, locate=locate, companions=_companions,
    read_notes=_notes, runtime="the float64 reference (TensorFlow is not needed)",
)
