"""ONNX graphs of ``LSTM`` / ``GRU`` / ``RNN`` operators with Dense, Embedding and masks around them
(:mod:`lstm_convert.adapters.onnx`), run with onnxruntime. ONNX models take no initial states, and
onnxruntime runs recurrent operators in float32."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import Format, LayerVerdict, ReadOptions, Run, judged, parsing

if TYPE_CHECKING:
    import numpy as np

# A ModelProto starts with field 1 (ir_version, a small varint), then another field's tag.
_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x52, 0x5A, 0x62, 0x6A, 0x72, 0x7A}


def _recognise(path: Path, head: bytes) -> bool:
    return len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x40 and head[2] in _NEXT_TAGS


def _read(path: Path, options: ReadOptions):
    from ..adapters import onnx_read
    from ..errors import FormatError

    try:
        with parsing(path, "ONNX file", (OSError, ValueError, RecursionError)):
            return onnx_read.read(path, only=options.only, inventory=options.inventory)
    except FormatError as exc:  # a node's own error (an attribute of the wrong type) names the file too
        raise exc.prefixed(str(path)) from None


def _write(model, path: Path, before_rename) -> None:
    from ..adapters import onnx

    onnx.write(model, path, before_rename=before_rename)


def check_layer(layer, module: bool) -> LayerVerdict:
    from ..adapters.onnx import check_representable

    notes = [f"dtype {layer.dtype} is written as float32, exactly"] if layer.dtype in ("float16", "bfloat16") else []
    return judged(check_representable, layer, notes)


def check_model(model, module: bool) -> None:
    from ..adapters.onnx import check_model as check_onnx_model

    check_onnx_model(model)


def _run(path: Path, model, calls: list) -> Run | None:
    import numpy as np

    from ..adapters.onnx import run

    if model.config.get("selected"):  # a selection of the graph's operators is not a graph onnxruntime runs
        return Run(None, "", ("its selected operators are not a graph that onnxruntime runs",))
    outputs = run(path, calls[0])
    return Run(np.asarray(outputs.get("output", next(iter(outputs.values())))), "onnxruntime")


def _run_layers(path: Path, model, x: np.ndarray, states: dict) -> list | None:
    """Through onnxruntime: each layer's output where the graph shows it (files written here show all)."""
    from ..adapters.onnx import run
    from ..canonical import RecurrentLayer

    if model.config.get("selected"):
        return None
    outputs = run(path, x)
    first = next(iter(outputs.values()))
    out = []
    for i, layer in enumerate(model.layers):
        last = i == len(model.layers) - 1
        value = outputs.get(layer.name, outputs.get("output", first) if last else None)
        finals = None
        if isinstance(layer, RecurrentLayer) and f"{layer.name}.h_n" in outputs:
            finals = tuple(outputs[f"{layer.name}.{n}_n"] for n in layer.state_names)
        out.append((value, finals))
    return out


def _input_dims(path: Path) -> list:
    from ..adapters.onnx_read import input_dims

    return input_dims(path)


FORMAT = Format(
    name="onnx", title="ONNX model", suffixes=(".onnx",), layouts="onnx",
    holds="LSTM / GRU / RNN operators, MatMul or Gemm (+ Add, + activation) as Dense, Gather as Embedding, 1-D Conv, "
          "BatchNormalization, LayerNormalization, activations, pooling over time, masks; "
          "read and written as protobuf data without the onnx package, the weights inside the file",
    recognise=_recognise, read=_read, write=_write, check_layer=check_layer, check_model=check_model,
    run=_run, run_layers=_run_layers, input_dims=_input_dims, initial_states=False, runtime="onnxruntime",
)
