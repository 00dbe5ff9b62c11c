"""TensorFlow checkpoints: ``PREFIX.index`` and ``PREFIX.data-00000-of-00001``, as TensorFlow 1's
``tf.compat.v1.train.Saver`` writes them, read by the project's own reader of the tensor-bundle format
(:mod:`lstm_convert._tf_bundle`, no TensorFlow) and recognised by variable names
(:mod:`lstm_convert.adapters.tf_checkpoint`); and TensorFlow 2's object checkpoints of Keras models (a
SavedModel's ``variables/`` too), whose object graph names the variables and whose architecture comes from
``--config`` or a tf_keras SavedModel's ``keras_metadata.pb``. A checkpoint is named by its prefix or by its
``.index`` file, a SavedModel by its folder; read, not written.
"""

from __future__ import annotations

import glob
import struct
from pathlib import Path

from ..errors import FormatError
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
    """The ``.index`` file that a checkpoint named otherwise stands for: its prefix (``model.ckpt-100`` for
    ``model.ckpt-100.index``), a SavedModel folder (``variables/variables.index``), or a folder whose
    ``checkpoint`` file (TensorFlow's record of the latest) names one; None otherwise."""
    if path.is_dir():
        saved = path / "variables" / "variables.index"
        if saved.is_file():
            return saved
        state = path / "checkpoint"
        if state.is_file() and state.stat().st_size < 1 << 20:
            import re

            found = re.search(r'^model_checkpoint_path: "([^"\n]+)"', state.read_text("utf-8", "replace"), re.M)
            if found:
                index = path / f"{found.group(1)}.index"
                if index.is_file() and index.resolve().parent == path.resolve():
                    return index
        return None
    index = path.with_name(path.name + ".index")
    if not path.exists() and index.is_file():
        return index
    return None


def _read(path: Path, options: ReadOptions):
    from .._lazy import np
    from .._tf_bundle import OBJECT_GRAPH, Bundle, _numpy_dtype
    with parsing(path, "TensorFlow checkpoint", ()):  # the bundle reader raises the library's own errors
        bundle = Bundle(path)

        def fetch(name: str):  # the readers fetch only what they convert: values are read here, or not at all
            var = bundle.variables[name]
            if options.header_only:
                dtype = _numpy_dtype(var.dtype) if var.dtype in ("float16", "bfloat16", "float32", "float64") \
                    else np.dtype("float32")
                return np.broadcast_to(np.zeros((), dtype), var.shape)
            return bundle.array(name)

        if OBJECT_GRAPH in bundle.variables:
            from .._tf_bundle import object_graph

            saved = [(s.key, s.full_name) for s in object_graph(bundle)
                     if not s.slot and not s.key.startswith(_TRAINING)]
            return _keras(path, bundle, fetch, options, saved)
        names = list(bundle.variables)
        keras_named = [n for n in names if n.rpartition("/")[2] == "recurrent_kernel"]
        if keras_named or options.config is not None:  # a Keras model saved by tf.compat.v1.train.Saver
            present = set(names)
            saved = [(n, n) for n in names if n.rpartition("/")[0] not in present  # not an optimizer's slot
                     and n.split("/")[0] not in _TF1_TRAINING]
            return _keras(path, bundle, fetch, options, saved, skipped=len(names) - len(saved))
        from ..adapters.tf_checkpoint import read

        source = {"framework": "tensorflow", "file_format": "tf_checkpoint"}
        return read(list(bundle.variables), fetch, lambda name: bundle.variables[name].shape, str(path),
                    only=options.only, inventory=options.inventory, forget_bias=options.forget_bias, source=source)


# Training state in a TensorFlow 2 checkpoint: the optimizer and the checkpoint's own counter; in a TensorFlow 1
# checkpoint of Keras layers, the step counter and what Keras' training graph and its optimizers add.
_TRAINING = ("optimizer/", "save_counter/")
_TF1_TRAINING = ("global_step", "training", "beta1_power", "beta2_power")


def _keras(path: Path, bundle, fetch, options: ReadOptions, saved: list[tuple[str, str]], skipped: int = 0):
    """A checkpoint of a Keras model: TensorFlow 2's (``tf.train.Checkpoint``, ``save_weights`` in TensorFlow's
    format, a SavedModel's ``variables/``), whose object graph names every variable, or TensorFlow 1's Saver of
    Keras layers, whose keys are those names; ``saved`` pairs each checkpoint key with its variable's name
    (``enc/lstm_cell/kernel``). The architecture (``--config``) says what the layers are."""
    from ..adapters.keras_files import NamedLayers, architecture_of, read_named

    scopes = sorted({full_name.rpartition("/")[0] for _, full_name in saved})
    config, named = options.config, None
    if config is None:
        config = _saved_model_architecture(path)
        named = "keras_metadata.pb" if config is not None else None
    if config is None:
        shown = ", ".join(scopes[:8]) + (" ..." if len(scopes) > 8 else "")
        raise FormatError(f"{path}: a TensorFlow checkpoint of a Keras model holds its weights ({shown}), not what "
                          "its layers are", remedy="pass config= with the model, its .keras or its .json",
                          hint="give the architecture with --config MODEL.keras or MODEL.json")
    if options.forget_bias is not None:
        raise FormatError(f"{path}: forget_bias is what a TensorFlow 1 LSTM cell adds; a Keras LSTM stores its whole "
                          "bias")
    architecture, _, _ = architecture_of(config)
    inner = architecture.get("config")
    layers = inner.get("layers", []) if isinstance(inner, dict) else inner
    names = {entry["config"]["name"] for entry in layers or [] if isinstance(entry, dict)
             and isinstance(entry.get("config"), dict) and isinstance(entry["config"].get("name"), str)}
    by_layer: dict[str, dict[str, tuple]] = {}
    for key, full_name in saved:
        layer = next((part for part in full_name.split("/") if part in names), None)
        if layer is None:
            shown = full_name if key == full_name else f"{full_name} ({key})"
            raise FormatError(f"{path}: variable {shown} belongs to no layer of the architecture "
                              f"({', '.join(sorted(names)) or 'none'})")
        var = bundle.variables.get(key)
        if var is None:
            raise FormatError(f"{path}: the object graph lists {key}, which the checkpoint does not hold")
        by_layer.setdefault(layer, {})[full_name] = (var.shape, lambda key=key: fetch(key))
    source = {"framework": "keras", "file_format": "tf_checkpoint"}
    source.update({"architecture": f"the SavedModel's {named}"} if named else {"weights_only": "true"})
    if skipped:
        source["skipped"] = f"{skipped} variables of training state (optimizer slots, step counters)"
    return read_named(path, NamedLayers(path, by_layer), config, source, options.only, options.inventory)


# tf_keras' SavedModel (``model.save(folder)`` in TensorFlow 2.5 and later) keeps each layer's configuration in
# keras_metadata.pb, a SavedMetadata message: nodes (SavedObject: node_id 2, node_path 3, identifier 4, the
# metadata as JSON 5), the model itself at node_path "root".
_MAX_METADATA = 64 << 20


def _saved_model_architecture(index: Path) -> dict | None:
    """The model configuration a tf_keras SavedModel stores beside ``variables/variables.index``, or None (a
    bare checkpoint, or a SavedModel that Keras 3 or ``tf.saved_model.save`` wrote, which keeps none)."""
    from .. import _onnx_decode as pb
    from ..adapters.keras_files import _json

    if index.name != "variables.index" or index.parent.name != "variables":
        return None
    metadata = index.parent.parent / "keras_metadata.pb"
    if not metadata.is_file() or metadata.is_symlink():
        return None
    if metadata.stat().st_size > _MAX_METADATA:
        raise FormatError(f"{metadata}: {metadata.stat().st_size} bytes, more than any model's metadata "
                          f"({_MAX_METADATA} at most)")

    class SavedObject(pb.Message):
        FIELDS = pb._fields((2, "node_id", "i32"), (3, "node_path", "str"), (4, "identifier", "str"),
                            (5, "metadata", "str"))

    class SavedMetadata(pb.Message):
        FIELDS = pb._fields((1, "nodes", SavedObject, "r"))

    data = metadata.read_bytes()
    try:
        nodes = pb._decode(SavedMetadata, data, [(0, len(data))], 0).nodes
    except pb.DecodeError as exc:
        raise FormatError(f"{metadata}: not a SavedModel's Keras metadata ({exc})") from None
    root = [node for node in nodes if node.node_path == "root"]
    if len(root) != 1:
        raise FormatError(f"{metadata}: lists {len(root)} root objects, expected one (the model)")
    value = _json(metadata, "the model's metadata", root[0].metadata)
    if value.get("class_name") in (None, "") or "config" not in value:
        raise FormatError(f"{metadata}: its root object ({root[0].identifier or 'unnamed'}) is not a Keras model")
    return value


def _notes(model) -> list[str]:
    from ..adapters.tf_checkpoint import notes

    if model.source.get("framework") == "tensorflow":
        return notes(model)
    return [f"skipped {model.source['skipped']}"] if "skipped" in model.source else []


FORMAT = Format(
    name="tf_checkpoint", title="TensorFlow checkpoint", suffixes=(".index",),
    holds="a TensorFlow 1 checkpoint (`tf.compat.v1.train.Saver`: `PREFIX.index` + `PREFIX.data-*`, named by its "
          "prefix or its `.index`): LSTMCell, BasicLSTMCell, LSTMBlockCell, GRUCell, BasicRNNCell, cuDNN-compatible "
          "cells, MultiRNNCell, bidirectional and dense scopes, recognised by variable names and read with the "
          "project's own tensor-bundle reader (no TensorFlow); a TensorFlow 2 checkpoint or SavedModel of a Keras "
          "model, its layers from `--config` or from a tf_keras SavedModel's own `keras_metadata.pb`",
    recognise=_recognise, read=_read, locate=locate, companions=_companions, architecture=True,
    read_notes=_notes, runtime="the float64 reference (TensorFlow is not needed)",
)
