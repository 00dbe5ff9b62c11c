"""TFLite ``.tflite`` files (:mod:`lstm_convert.adapters.tflite`): fused recurrent operators, Dense layers as
``FULLY_CONNECTED``, an Embedding as ``GATHER``; read and written as FlatBuffers without TensorFlow, run in the
LiteRT interpreter. Their recurrent states are variable tensors that start at zero and carry over from one
invocation to the next; the models take no initial states."""

from __future__ import annotations

from pathlib import Path

from . import Format, LayerVerdict, ReadOptions, Run, judged, parsing


def _recognise(path: Path, head: bytes) -> bool:
    from ..adapters.tflite import header_ok

    return header_ok(head)


def _data(path: Path):
    import mmap

    with open(path, "rb") as handle:
        try:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file
            return b""


def _read(path: Path, options: ReadOptions):
    from ..adapters import tflite

    with parsing(path, "TFLite file", (OSError, ValueError)):
        return tflite.read(_data(path), str(path), only=options.only)


def _write(model, path: Path, before_rename) -> None:
    from .._atomic import atomic_write
    from ..adapters import tflite

    data = tflite.write_bytes(model)

    def save(tmp: Path) -> None:
        with open(tmp, "r+b") as handle:
            handle.write(data)

    atomic_write(path, save, before_rename=before_rename)


def check_layer(layer, module: bool) -> LayerVerdict:
    from ..adapters.tflite import check_layer as check

    notes = [f"dtype {layer.dtype} is written as float32, exactly"] if layer.dtype in ("float16", "bfloat16") else []
    return judged(check, layer, notes)


def check_model(model, module: bool) -> None:
    from ..adapters.tflite import check_model as check

    check(model)


def _notes(model, module: bool) -> list[str]:
    from ..canonical import RecurrentLayer

    out = []
    recurrent = [layer for layer in model.layers if isinstance(layer, RecurrentLayer)]
    if recurrent:
        batch = model.batch_size or 1
        out.append(f"the .tflite file takes batches of {batch} (its recurrent states are tensors of that batch); "
                   "its states carry over between invocations, so call reset_all_variables() before each new "
                   "sequence")
    if any(isinstance(layer, RecurrentLayer) and layer.bias and layer.kind != "gru" for layer in recurrent):
        out.append("TFLite keeps one bias per gate: b_x + b_h are summed (the function stays; the bits change)")
    if any(isinstance(layer, RecurrentLayer) and layer.num_layers > 1 for layer in recurrent):
        out.append("stacked layers are written as one operator per layer, read back as separate layers")
    return out


def _run(path: Path, model, calls: list) -> Run | None:
    import numpy as np

    from ..adapters import tflite

    if tflite._interpreter() is None:
        return Run(None, "", ("neither ai-edge-litert nor tensorflow is installed to run it",))
    if model.config.get("selected"):
        return Run(None, "", ("its selected operators are not the model the interpreter runs",))
    return Run(np.asarray(tflite.run(path.read_bytes(), calls[0])["output"]), tflite.runner())


def _run_layers(path: Path, model, x, states: dict) -> list | str | None:
    """Through LiteRT: each layer's output tensor and, after the run, its state tensors (the final states)."""
    import numpy as np

    from ..adapters import tflite
    from ..canonical import DIRECTIONS, RecurrentLayer

    if tflite._interpreter() is None or model.config.get("selected"):
        return None
    result = tflite.run(path.read_bytes(), x)
    tensors = result["tensors"]
    out = []
    for i, layer in enumerate(model.layers):
        last = i == len(model.layers) - 1
        finals = None
        if isinstance(layer, RecurrentLayer):
            units = layer.unstack()
            value = tensors.get(units[-1].name)
            parts = []
            for name in layer.state_names:
                found = [tensors.get(f"{unit.name}.{d}.{name}") for unit in units for d in DIRECTIONS[:layer.directions]]
                parts.append(None if any(f is None for f in found) else np.stack(found))
            finals = tuple(parts) if all(p is not None for p in parts) else None
        else:
            value = tensors.get(layer.name)
        if last:
            value = result["output"]
        out.append((value, finals))
    return out


def _input_dims(path: Path) -> list:
    from ..adapters.tflite import input_dims

    return input_dims(_data(path), str(path))


FORMAT = Format(
    name="tflite", title="TFLite file", suffixes=(".tflite",),
    holds="UNIDIRECTIONAL / BIDIRECTIONAL_SEQUENCE_LSTM and _RNN operators and LSTM (one step), "
          "FULLY_CONNECTED as Dense, GATHER as Embedding, and the REVERSE_V2 / STRIDED_SLICE / CONCATENATION "
          "patterns of TensorFlow's converter; float32 weights, read and written as FlatBuffers without TensorFlow",
    recognise=_recognise, read=_read, write=_write, check_layer=check_layer, check_model=check_model,
    notes=_notes, run=_run, run_layers=_run_layers, input_dims=_input_dims, initial_states=False,
    runtime="the LiteRT interpreter, where installed",
)
