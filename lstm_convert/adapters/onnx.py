"""ONNX adapter: canonical models <-> ONNX graphs of ``LSTM`` / ``GRU`` / ``RNN`` operators.

ONNX stores one recurrent operator per layer (``D`` = 2 when bidirectional)::

    W  [D, G*H, input]   LSTM blocks i, o, f, c; GRU z, r, h; RNN one block
    R  [D, G*H, H]
    B  [D, 2*G*H]        [Wb; Rb]: the input-side biases, then the recurrent-side ones
    P  [D, 3H]           LSTM peepholes i, o, f (optional)

with the attributes ``direction``, ``hidden_size``, ``activations``,
``clip``, ``input_forget`` (LSTM) and ``linear_before_reset`` (GRU: 1 is
PyTorch's and Keras' ``reset_after=True``).

Writing: a self-contained model (weights as initializers) that takes
batch-major input ``input`` of shape ``(batch, time, features)`` (integer
indices ``(batch, time)`` when it starts with an Embedding), with dynamic batch
and sequence length, and returns ``output`` with the source model's shape:
``(batch, time, size)``, or ``(batch, size)`` once a layer returns its last step
only (taken from ``Y_h``). Every layer's own output is also a graph output named
after the layer, and each recurrent layer's final states are outputs
``<layer>.h_n`` (and ``<layer>.c_n``). With ``initial_states=True`` the initial
states are inputs ``<layer>.h_0`` (and ``<layer>.c_0``), ``(directions, batch,
H)``. Dense is MatMul + Add, Embedding is Gather. Weights are float32, what
onnxruntime runs. Masks (a Masking layer, an Embedding with ``mask_zero``) are
computed in the graph and followed exactly as Keras does: each row's valid steps
are moved to the front, the operator runs with ``sequence_lens``, and the outputs
are gathered back (see :func:`_masked_recurrent`). What the layers compute is
recorded in the model's metadata, so that the graph reads back as written.

Reading: the recurrent operators, MatMul / Gemm (+ Add, + activation) and
Gather nodes whose weights are initializers or constants, 1-D Conv,
BatchNormalization, LayerNormalization, activations on their own and means or
maxima over time (the order of the data's axes is followed through 3-D
Transposes, so that each is read only where it acts on the axis it is said to:
a Conv on channels-first data, a LayerNormalization on the features), in graph order, as
written by ``torch.onnx.export`` (both exporters), Keras' ``model.export(...,
format="onnx")`` and this module. On the way to the model's output (its first
graph output), the data may only be moved between layers (Identity, Reshape,
Transpose, Squeeze, Unsqueeze); a Gather that picks the last step of a
one-direction layer (``fc(out[:, -1])``, ``fc(h_n[-1])``) is recognised by
following the operator's declared axes and read as ``return_sequences=False``.
Any other node that computes on the data, any node that carries weights outside
a layer, computed ``sequence_lens`` and initial states fed by the data are
refused, naming the nodes. The ONNX file is read as protobuf data; the reader is
:mod:`lstm_convert.adapters.onnx_read`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._lazy import np

from .._atomic import atomic_write, open_output
from .. import _onnx_proto as _proto
from .._optional import require
from ..canonical import (
    AROUND,
    Activation,
    BatchNorm,
    Conv1D,
    Dense,
    Embedding,
    Flatten,
    Layer,
    LayerNorm,
    Masking,
    Model,
    Pooling,
    RecurrentLayer,
)
from ..errors import FormatError, UnsupportedError
from ..gates import (
    activations,
    join,
    join_bias,
    join_peepholes,
    layout,
)

OPSET = 17
METADATA_KEY = "lstm_convert.layers"
MODEL_KEY = "lstm_convert.input"
# What a layer computes that the graph shows only in its plumbing, recorded for reading back.
_RECORDED = ("return_sequences", "go_backwards", "zero_output_for_mask", "merge_mode", "mask_zero", "mask_value",
             "size")
_OPS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
# Canonical activation -> ONNX recurrent activation (name, alpha, beta).
_TO_ONNX = {"sigmoid": ("Sigmoid", None, None), "tanh": ("Tanh", None, None), "relu": ("Relu", None, None),
            "softsign": ("Softsign", None, None), "softplus": ("Softplus", None, None),
            "elu": ("Elu", 1.0, None), "linear": ("Affine", 1.0, 0.0),
            "hard_sigmoid_keras2": ("HardSigmoid", 0.2, 0.5), "hard_sigmoid_keras3": ("HardSigmoid", 1 / 6, 0.5)}
# ONNX's defaults per operator: LSTM f, g, h; GRU f, g; RNN f.
_DEFAULT_ACTIVATIONS = {"lstm": ["Sigmoid", "Tanh", "Tanh"], "gru": ["Sigmoid", "Tanh"], "rnn": ["Tanh"]}
# Dense activations as ONNX nodes.
_DENSE_OPS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softsign": "Softsign", "softplus": "Softplus",
              "elu": "Elu", "softmax": "Softmax"}


# -- representability ---------------------------------------------------------------------------


def check_representable(layer: Layer) -> None:
    """Raise UnsupportedError unless an ONNX operator computes ``layer`` exactly (as onnxruntime runs it)."""
    if isinstance(layer, Masking):
        return
    if layer.dtype == "float64":
        raise UnsupportedError(f"{layer.name}: float64 weights; onnxruntime runs recurrent operators in float32 "
                               "only, so an ONNX model would round them. Keep it in a safetensors archive")
    if isinstance(layer, (Dense, Conv1D, Activation)):
        if layer.activation not in _DENSE_OPS and layer.activation not in ("linear", "silu") \
                and not layer.activation.startswith("hard_sigmoid"):
            raise UnsupportedError(f"{layer.name}: activation {layer.activation!r} has no ONNX operator here")
        return
    if isinstance(layer, (Embedding, *AROUND)):
        return
    keep = "Keep it in a safetensors archive"
    if layer.stateful:
        raise UnsupportedError(f"{layer.name}: stateful=True carries the final states of one call into the next, "
                               f"which an ONNX graph does not do. {keep}")
    if layer.return_state:
        raise UnsupportedError(f"{layer.name}: return_state=True (the final states as model outputs) is not written "
                               f"to ONNX. {keep}, or set return_state=false")
    if layer.layer_norm:
        raise UnsupportedError(f"{layer.name}: an LSTM that normalises its gates (layer norm, TFLite's) has no ONNX "
                               f"operator. {keep}")
    if layer.cell_clip is not None:
        raise UnsupportedError(f"{layer.name}: cell_clip={layer.cell_clip!r} clips the cell state, which an ONNX LSTM "
                               f"does not do (its clip bounds the gates' inputs). {keep}, or drop the clip with "
                               f"--set {layer.name}.cell_clip=none if the cell state never reaches it")
    if layer.proj_size:
        raise UnsupportedError(f"{layer.name}: an LSTM with proj_size={layer.proj_size} (weight_hr) has no ONNX "
                               f"equivalent: the ONNX LSTM has no projection. {keep}")
    for attr in ("activation", "recurrent_activation") if layer.kind != "rnn" else ("activation",):
        if getattr(layer, attr) not in _TO_ONNX:
            raise UnsupportedError(f"{layer.name}: {attr} {getattr(layer, attr)!r} is not an ONNX recurrent "
                                   f"activation. {keep}")


def check_model(model: Model) -> None:
    """Raise UnsupportedError unless the graph written here computes the whole model."""
    for layer in model.layers:
        for unit in layer.unstack() if isinstance(layer, RecurrentLayer) else [layer]:
            check_representable(unit)
            if isinstance(unit, RecurrentLayer) and unit.backward and model.masked:
                raise UnsupportedError(f"{unit.name}: an ONNX reverse-only layer behind a mask is not supported")
    model.check_chain()


# -- writing ------------------------------------------------------------------------------------------


def write(weights: Layer | Model, path: str | os.PathLike, *, initial_states: bool = False,
          before_rename: Callable[[], None] | None = None) -> Path:
    """Write ``weights`` as a self-contained ONNX model (see the module docstring)."""
    model = weights if isinstance(weights, Model) else Model((weights,), source=weights.source)
    head, graph, arrays = build(model, initial_states=initial_states)
    return atomic_write(path, lambda tmp: _stream(head, graph, arrays, tmp), before_rename=before_rename)


def _stream(head: bytes, graph: bytes, arrays: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Write the model (``head``: its fields but the graph; ``graph``: the graph's fields but the
    initializers) with ``arrays`` as its graph's initializers, each array's bytes written straight from it:
    the file is never held in memory whole.

    Protobuf lets a message's fields come in any order, so the model is its fields but the graph, then the
    graph (field 7) as its fields but the initializers, then each initializer (graph field 5): a TensorProto
    of its name, type and dims, then its ``raw_data`` (field 9) in little-endian order.
    """
    entries = []
    for name, array in arrays:
        head_bytes = _proto.tensor_head(name, _proto.np_dtype_to_tensor_dtype(array.dtype), array.shape)
        size = math.prod(array.shape) * array.dtype.itemsize
        body = len(head_bytes) + 1 + len(_varint(size)) + size
        entries.append((name, head_bytes, array, size, body))
    total = len(graph) + sum(1 + len(_varint(body)) + body for *_, body in entries)
    with open_output(path) as out:
        out.write(head)
        out.write(b"\x3a" + _varint(total))  # ModelProto.graph: field 7, length-delimited
        out.write(graph)
        for name, head_bytes, array, size, body in entries:
            out.write(b"\x2a" + _varint(body))  # GraphProto.initializer: field 5
            out.write(head_bytes)
            out.write(b"\x4a" + _varint(size))  # TensorProto.raw_data: field 9
            if size:  # a deferred array is made now, and dropped once written
                values = array.make() if isinstance(array, _Deferred) else array
                values = np.asarray(values, dtype=array.dtype.newbyteorder("<"), order="C")  # 0-D stays 0-D
                if values.shape != tuple(array.shape):
                    raise AssertionError(f"initializer {name}: made {values.shape}, declared {array.shape}")
                out.write(memoryview(values.reshape(-1)).cast("B"))
                del values


@dataclasses.dataclass(frozen=True)
class _Deferred:
    """An initializer made only when it is written: its shape and dtype now, ``make()`` its values then."""

    shape: tuple[int, ...]
    dtype: np.dtype
    make: Callable[[], np.ndarray]


_varint = _proto.varint


def build(model: Model, *, initial_states: bool = False) -> tuple[bytes, bytes, list[tuple[str, np.ndarray]]]:
    """The ONNX ModelProto of ``model``, encoded without the onnx package: its fields but the graph, the
    graph's fields but the initializers, and the initializers as ``(name, array)`` (see :func:`_stream`,
    which writes them into the file). Where onnx is installed, its checker checks the model."""
    helper, TensorProto = _proto, _proto.TensorProto

    check_model(model)
    units = [u for layer in model.layers for u in (layer.unstack() if isinstance(layer, RecurrentLayer) else [layer])]
    g = _Graph(helper)
    first = units[0]
    if isinstance(first, Embedding):
        g.inputs.append(helper.make_tensor_value_info("input", TensorProto.INT64, ["batch", "time"]))
    else:
        g.inputs.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "time", first.input_size]))
    x = "input"
    time_major = False
    steps = "time"  # the sequence length, named anew after each convolution
    sequence = True  # False once a layer returns its last step only: (batch, size) from there on
    mask = None  # (batch, time) bool, once a Masking layer or an Embedding with mask_zero made one
    for unit in units:
        if isinstance(unit, Embedding):
            x = g.node("Gather", [g.const(f"{unit.name}.weight", unit.weight), x], unit.name)  # (batch, time, E)
            if unit.mask_zero:
                zero = g.const(f"{unit.name}/padding", np.array(0, np.int64))
                mask = g.node("Not", [g.node("Equal", ["input", zero], f"{unit.name}/is_padding")], f"{unit.name}/mask")
        elif isinstance(unit, Masking):
            x, mask = _masking(g, unit, x)
        elif isinstance(unit, Dense):
            x = _dense(g, unit, x)
        elif isinstance(unit, AROUND):
            if time_major:
                x = g.node("Transpose", [x], f"{unit.name}/from_time_major", perm=[1, 0, 2])
                time_major = False
            x, mask = _around(g, unit, x, mask)
            if isinstance(unit, Conv1D):
                steps = f"time_{len(g.outputs)}"  # another length from here on
            elif isinstance(unit, (Flatten, Pooling)):
                sequence = False
        elif mask is not None:
            if time_major:
                x = g.node("Transpose", [x], f"{unit.name}/from_time_major", perm=[1, 0, 2])
                time_major = False
            x = _masked_recurrent(g, unit, x, mask, initial_states)
            if not unit.return_sequences:
                sequence, mask = False, None
        else:
            if not time_major:
                x = g.node("Transpose", [x], f"{unit.name}/to_time_major", perm=[1, 0, 2])
                time_major = True
            x = _recurrent(g, unit, x, initial_states)
            if not unit.return_sequences:
                sequence, time_major = False, False
        batch_major = g.node("Transpose", [x], f"{unit.name}/batch_major", perm=[1, 0, 2]) if time_major else x
        shape = ["batch", steps, unit.output_size] if sequence else ["batch", unit.output_size]
        g.outputs.append(helper.make_tensor_value_info(unit.name, TensorProto.FLOAT, shape))
        g.nodes.append(helper.make_node("Identity", [batch_major], [unit.name], name=f"{unit.name}/output"))
    g.nodes.append(helper.make_node("Identity", [units[-1].name], ["output"], name="output"))
    g.outputs.insert(0, helper.make_tensor_value_info("output", TensorProto.FLOAT, shape))
    graph = helper.make_graph(g.nodes, "lstm_convert", g.inputs, g.outputs)
    specs = [u.spec() if isinstance(u, AROUND) else
             {"name": u.name, "kind": u.kind, "config": dict(u.config), "source": dict(u.source),
              **{k: getattr(u, k) for k in _RECORDED if hasattr(u, k)}} for u in units]
    head = helper.model_head(8, "lstm_convert", [helper.make_opsetid("", OPSET)],
                             {METADATA_KEY: json.dumps(specs, sort_keys=True),
                              MODEL_KEY: json.dumps(model.input_spec(), sort_keys=True)})
    _check(head, graph, g.initializers)
    return head, graph, g.initializers


def _check(head: bytes, graph: bytes, initializers: list) -> None:
    """onnx's checker, where onnx is installed, on the model written, its weights as typed, shaped graph
    inputs (the checker needs no values)."""
    try:
        import onnx
    except ImportError:
        return
    checked = onnx.ModelProto.FromString(head + b"\x3a" + _varint(len(graph)) + graph)
    checked.graph.input.extend(onnx.helper.make_tensor_value_info(name, _proto.np_dtype_to_tensor_dtype(array.dtype),
                                                                  array.shape) for name, array in initializers)
    onnx.checker.check_model(checked)


class _Graph:
    """Nodes, initializers (``(name, array)``) and graph inputs / outputs being built."""

    def __init__(self, helper):
        self.helper = helper
        self.nodes, self.initializers, self.inputs, self.outputs = [], [], [], []

    def const(self, name: str, array: np.ndarray) -> str:
        array = np.asarray(array)
        array = array.astype(np.float32, copy=False) if array.dtype.kind == "f" or array.dtype.name == "bfloat16" \
            else array
        self.initializers.append((name, array))  # 0-D stays 0-D; written by _stream
        return name

    def deferred(self, name: str, shape: tuple[int, ...], make: Callable[[], np.ndarray]) -> str:
        """A float initializer made only when the file is written (the gates joined then, one at a time)."""
        self.initializers.append((name, _Deferred(tuple(shape), np.dtype(np.float32),
                                                  lambda: np.asarray(make()).astype(np.float32, copy=False))))
        return name

    def node(self, op: str, inputs: list[str], name: str, outputs: int = 1, **attrs: Any) -> Any:
        names = [f"{name}:{i}" for i in range(outputs)]
        self.nodes.append(self.helper.make_node(op, inputs, names, name=name, **attrs))
        return names[0] if outputs == 1 else names


def _masking(g: _Graph, unit: Masking, x: str) -> tuple[str, str]:
    """Keras' Masking: a step is masked when every feature equals the mask value; its features become 0."""
    from .._onnx_proto import TensorProto

    n = unit.name
    differs = g.node("Not", [g.node("Equal", [x, g.const(f"{n}/value", np.array(unit.mask_value, np.float32))],
                                    f"{n}/equal")], f"{n}/differs")
    anywhere = g.node("ReduceMax", [g.node("Cast", [differs], f"{n}/as_float", to=TensorProto.FLOAT)],
                      f"{n}/any", axes=[-1], keepdims=0)
    mask = g.node("Greater", [anywhere, g.const(f"{n}/zero", np.array(0, np.float32))], f"{n}/mask")
    keep = g.node("Unsqueeze", [g.node("Cast", [mask], f"{n}/keep", to=TensorProto.FLOAT),
                                g.const(f"{n}/feature_axis", np.array([-1], np.int64))], f"{n}/keep_features")
    return g.node("Mul", [x, keep], f"{n}/masked"), mask


def _masked_recurrent(g: _Graph, unit: RecurrentLayer, x: str, mask: str, initial_states: bool) -> str:
    """A recurrent layer behind a mask, batch-major in and out, exactly as Keras computes it.

    Each row's valid steps are moved to the front in order (a permutation of the time axis) and the
    operator runs with ``sequence_lens`` = their count; every output step is then gathered from the
    last valid step so far (zeros before the first, or at masked steps with ``zero_output_for_mask``
    and for a Bidirectional layer returning sequences). Masks in the middle of a row are exact too.
    """
    from .._onnx_proto import TensorProto

    n = unit.name
    constants = {"one": np.array(1, np.int64), "zero": np.array(0, np.int64), "time": np.array(1, np.int64),
                 "fzero": np.array(0, np.float32)}

    class _Lazy(dict):  # each constant written once, when first used
        def __missing__(self, key: str) -> str:
            self[key] = g.const(f"{n}/{key}", constants[key])
            return self[key]

    c = _Lazy()

    def unsqueeze(value: str, axis: int, label: str) -> str:
        return g.node("Unsqueeze", [value, g.const(f"{n}/{label}_axes", np.array([axis], np.int64))], f"{n}/{label}")

    if unit.go_backwards:  # read from the end: input and mask reversed in time, outputs in the order computed
        big = np.iinfo(np.int64).max
        bounds = [g.const(f"{n}/rev_{what}", np.array([value], np.int64))
                  for what, value in (("starts", -1), ("ends", -big), ("axes", 1), ("steps", -1))]
        x = g.node("Slice", [x, *bounds], f"{n}/reverse_input")
        mask = g.node("Slice", [mask, *bounds], f"{n}/reverse_mask")
    valid = g.node("Cast", [mask], f"{n}/valid", to=TensorProto.INT64)
    done = g.node("CumSum", [valid, c["time"]], f"{n}/done")  # valid steps so far
    counts = g.node("ReduceSum", [valid, g.const(f"{n}/sum_axes", np.array([1], np.int64))], f"{n}/counts", keepdims=0)
    skipped = g.node("CumSum", [g.node("Sub", [c["one"], valid], f"{n}/invalid"), c["time"]], f"{n}/skipped")
    after = g.node("Sub", [g.node("Add", [unsqueeze(counts, 1, "counts_column"), skipped], f"{n}/after_valid"),
                           c["one"]], f"{n}/masked_place")
    order = g.node("Where", [mask, g.node("Sub", [done, c["one"]], f"{n}/valid_place"), after], f"{n}/order")
    places = g.node("Expand", [unsqueeze(order, 2, "order_column"), g.node("Shape", [x], f"{n}/input_shape")],
                    f"{n}/places")
    packed = g.node("ScatterElements", [x, places, x], f"{n}/pack", axis=1)
    packed = g.node("Transpose", [packed], f"{n}/to_time_major", perm=[1, 0, 2])
    lengths = g.node("Cast", [counts], f"{n}/lengths", to=TensorProto.INT32)
    y, y_h = _operator(g, unit, packed, initial_states, lengths, "bidirectional" if unit.directions == 2 else "forward")
    parts = []
    if unit.return_sequences:
        # (batch, time, D, H); the operator may give fewer steps than the input has (the longest row's)
        y = g.node("Transpose", [y], f"{n}/batch_major_all", perm=[2, 0, 1, 3])
        shape = g.node("Concat", [g.node("Shape", [mask], f"{n}/mask_shape"),
                                  g.const(f"{n}/units", np.array([unit.state_size], np.int64))],
                       f"{n}/steps_shape", axis=0)
        order = g.node("Where", [mask, order, c["zero"]], f"{n}/valid_order")  # masked steps are not looked up
        for d in range(unit.directions):
            ys = g.node("Gather", [y, g.const(f"{n}/direction{d}", np.array(d, np.int64))], f"{n}/direction{d}_y",
                        axis=2)
            if d == 0:  # the last valid output so far
                seen = g.node("Max", [g.node("Sub", [done, c["one"]], f"{n}/last_seen"), c["zero"]], f"{n}/seen")
                out = g.node("GatherElements", [ys, g.node("Expand", [unsqueeze(seen, 2, "seen_column"), shape],
                                                           f"{n}/seen_places")], f"{n}/forward_steps", axis=1)
                started = unsqueeze(g.node("Greater", [done, c["zero"]], f"{n}/started_any"), 2, "started")
                out = g.node("Where", [started, out, c["fzero"]], f"{n}/forward_started")
                zeros = unit.zero_output_for_mask
            else:  # the reverse direction's output at each valid step, zeros at masked ones
                out = g.node("GatherElements", [ys, g.node("Expand", [unsqueeze(order, 2, "order_places"), shape],
                                                           f"{n}/reverse_places")], f"{n}/reverse_steps", axis=1)
                zeros = True
            if zeros:
                out = g.node("Where", [unsqueeze(mask, 2, f"mask{d}"), out, c["fzero"]], f"{n}/masked_zero{d}")
            parts.append(out)
    else:
        for d in range(unit.directions):
            parts.append(g.node("Gather", [y_h, g.const(f"{n}/last{d}", np.array(d, np.int64))], f"{n}/last{d}",
                                axis=0))
        if unit.directions == 1 and unit.zero_output_for_mask:  # a masked last step gives zeros
            last_mask = g.node("Gather", [mask, g.const(f"{n}/final_step", np.array(-1, np.int64))], f"{n}/last_mask",
                               axis=1)
            parts[0] = g.node("Where", [unsqueeze(last_mask, 1, "last_mask_column"), parts[0], c["fzero"]],
                              f"{n}/last_zero")
    if len(parts) == 1:
        return parts[0]
    if unit.merge_mode == "concat":
        return g.node("Concat", parts, f"{n}/merge", axis=-1)
    if unit.merge_mode == "ave":
        total = g.node("Add", parts, f"{n}/merge_sum")
        return g.node("Mul", [total, g.const(f"{n}/half", np.array(0.5, np.float32))], f"{n}/merge")
    return g.node({"sum": "Add", "mul": "Mul"}[unit.merge_mode], parts, f"{n}/merge")


def _dense(g: _Graph, unit: Dense, x: str) -> str:
    y = g.node("MatMul", [x, g.const(f"{unit.name}.kernel", unit.weight.T)], f"{unit.name}/MatMul")
    if unit.bias is not None:
        y = g.node("Add", [y, g.const(f"{unit.name}.bias", unit.bias)], f"{unit.name}/Add")
    return _activation(g, unit, y)


def _around(g: _Graph, unit: Layer, x: str, mask: str | None) -> tuple[str, str | None]:
    """One of the layers around the recurrent ones on batch-major ``x``: the result, and the mask it passes
    on (see :func:`lstm_convert.reference.around`). Initializers are the canonical arrays by their names
    (``<layer>.weight``, ...); nodes are named ``<layer>/...``."""
    name = unit.name
    arrays = {attr: g.const(label, array) for label, array in unit.tensors() for attr in [label.rpartition(".")[2]]}
    if isinstance(unit, Activation):
        return _activation(g, unit, x), mask
    if isinstance(unit, BatchNorm):
        eps = g.const(f"{name}/epsilon", np.array(unit.epsilon, np.float32))
        std = g.node("Sqrt", [g.node("Add", [arrays["variance"], eps], f"{name}/Add")], f"{name}/Sqrt")
        y = g.node("Div", [g.node("Sub", [x, arrays["mean"]], f"{name}/Sub"), std], f"{name}/Div")
        if "scale" in arrays:
            y = g.node("Mul", [y, arrays["scale"]], f"{name}/Scale")
        if "offset" in arrays:
            y = g.node("Add", [y, arrays["offset"]], f"{name}/Offset")
        return y, mask
    if isinstance(unit, LayerNorm):
        scale = arrays.get("scale") or g.const(f"{name}/ones", np.ones(unit.size, np.float32))
        inputs = [x, scale] + ([arrays["offset"]] if "offset" in arrays else [])
        return g.node("LayerNormalization", inputs, f"{name}/LayerNormalization", axis=-1,
                      epsilon=unit.epsilon), mask
    if isinstance(unit, Flatten):
        shape = g.const(f"{name}/shape", np.array([0, -1], np.int64))
        return g.node("Reshape", [x, shape], f"{name}/Reshape"), None
    if isinstance(unit, Pooling):
        if unit.mode == "max":
            return g.node("ReduceMax", [x], f"{name}/ReduceMax", axes=[1], keepdims=0), None
        if mask is None:
            return g.node("ReduceMean", [x], f"{name}/ReduceMean", axes=[1], keepdims=0), None
        from .._onnx_proto import TensorProto

        weights = g.node("Unsqueeze", [g.node("Cast", [mask], f"{name}/Cast", to=TensorProto.FLOAT),
                                       g.const(f"{name}/last", np.array([2], np.int64))], f"{name}/Unsqueeze")
        axis = g.const(f"{name}/time", np.array([1], np.int64))
        total = g.node("ReduceSum", [g.node("Mul", [x, weights], f"{name}/Mul"), axis], f"{name}/ReduceSum",
                       keepdims=0)
        count = g.node("ReduceSum", [weights, axis], f"{name}/Count", keepdims=0)
        return g.node("Div", [total, count], f"{name}/Div"), None
    conv: Conv1D = unit  # type: ignore[assignment]
    options: dict[str, Any] = {"strides": [conv.stride], "dilations": [conv.dilation], "group": conv.groups,
                               "kernel_shape": [conv.kernel_size]}
    if conv.padding == "same":
        options["auto_pad"] = "SAME_UPPER"  # the odd zero at the end, as Keras pads
    else:
        options["pads"] = list(conv.padding)
    channels_first = g.node("Transpose", [x], f"{name}/channels_first", perm=[0, 2, 1])
    inputs = [channels_first, arrays["weight"]] + ([arrays["bias"]] if "bias" in arrays else [])
    y = g.node("Conv", inputs, f"{name}/Conv", **options)
    y = g.node("Transpose", [y], f"{name}/channels_last", perm=[0, 2, 1])
    return _activation(g, conv, y), None


def _activation(g: _Graph, unit: Dense | Conv1D | Activation, y: str) -> str:
    """``unit.activation`` applied to ``y``, as nodes named after the unit."""
    act = unit.activation
    if act == "silu":
        return g.node("Mul", [y, g.node("Sigmoid", [y], f"{unit.name}/Sigmoid")], f"{unit.name}/silu")
    if act.startswith("hard_sigmoid"):
        _, alpha, beta = _TO_ONNX[act]
        return g.node("HardSigmoid", [y], f"{unit.name}/HardSigmoid", alpha=alpha, beta=beta)
    if act in _DENSE_OPS:
        extra = {"axis": -1} if act == "softmax" else {}
        return g.node(_DENSE_OPS[act], [y], f"{unit.name}/{_DENSE_OPS[act]}", **extra)
    return y


def _recurrent(g: _Graph, unit: RecurrentLayer, x: str, initial_states: bool) -> str:
    """A recurrent layer on time-major ``x``; its output time-major, or ``(batch, size)`` for the last step."""
    direction = "bidirectional" if unit.directions == 2 else ("reverse" if unit.go_backwards or unit.backward
                                                               else "forward")
    y, y_h = _operator(g, unit, x, initial_states, "", direction)
    return _outputs(g, unit, y, y_h)


def _operator(g: _Graph, unit: RecurrentLayer, x: str, initial_states: bool, lengths: str,
              direction: str) -> tuple[str, str]:
    """The LSTM / GRU / RNN node on time-major ``x``, its final states as graph outputs; ``(Y, Y_h)``."""
    from .._onnx_proto import TensorProto

    lay = layout("onnx", unit.kind)
    directions = unit.direction_names
    size = len(lay.order) * unit.hidden_size

    def stacked(role: str) -> Callable[[], np.ndarray]:
        return lambda: np.stack([join(lay, {n: getattr(unit.gates[(0, d, n)], role) for n in lay.order})
                                 for d in directions])

    inputs = [x, g.deferred(f"{unit.name}.W", (len(directions), size, unit.input_size), stacked("W_x")),
              g.deferred(f"{unit.name}.R", (len(directions), size, unit.hidden_size), stacked("W_h"))]
    if unit.bias:
        b = np.stack([join_bias(lay, *({n: getattr(unit.gates[(0, d, n)], role) for n in lay.order}
                                       for role in ("b_x", "b_h")))[0] for d in directions])
        inputs.append(g.const(f"{unit.name}.B", b))
    else:
        inputs.append("")
    inputs.append(lengths)  # sequence_lens
    states = ["h", "c"] if unit.kind == "lstm" else ["h"]
    for s in states:
        if initial_states:
            g.inputs.append(g.helper.make_tensor_value_info(f"{unit.name}.{s}_0", TensorProto.FLOAT,
                                                            [unit.directions, "batch", unit.hidden_size]))
        inputs.append(f"{unit.name}.{s}_0" if initial_states else "")
    if unit.peepholes:
        inputs.append(g.const(f"{unit.name}.P", np.stack([join_peepholes(
            lay, {gate: unit.peepholes[(0, d, gate)] for gate in lay.peepholes}) for d in directions])))
    while inputs[-1] == "":
        inputs.pop()
    names = [_TO_ONNX[name] for name in activations(lay, unit)]
    attrs: dict[str, Any] = {"hidden_size": unit.hidden_size, "direction": direction}
    if unit.clip is not None:
        attrs["clip"] = float(unit.clip)
    if unit.input_forget:
        attrs["input_forget"] = 1
    if [n for n, _, _ in names] != _DEFAULT_ACTIVATIONS[unit.kind] or any(a is not None for _, a, _ in names):
        attrs["activations"] = [n for n, _, _ in names] * unit.directions
        alphas = [a for _, a, _ in names if a is not None]
        betas = [b for _, _, b in names if b is not None]
        if alphas:
            attrs["activation_alpha"] = alphas * unit.directions
        if betas:
            attrs["activation_beta"] = betas * unit.directions
    if unit.kind == "gru":
        attrs["linear_before_reset"] = int(unit.reset_after)
    op = _OPS[unit.kind]
    outs = [f"{unit.name}/Y"] + [f"{unit.name}.{s}_n" for s in states]
    g.nodes.append(g.helper.make_node(op, inputs, outs, name=f"{unit.name}/{op}", **attrs))
    for s in states:
        g.outputs.append(g.helper.make_tensor_value_info(f"{unit.name}.{s}_n", TensorProto.FLOAT,
                                                         [unit.directions, "batch", unit.hidden_size]))
    return outs[0], outs[1]


def _outputs(g: _Graph, unit: RecurrentLayer, y: str, y_h: str) -> str:
    """The layer's output from the operator's ``Y`` (time, D, batch, H) or, for the last step, ``Y_h``."""
    if not unit.return_sequences:  # the last step computed in each direction: the final h, (D, batch, H)
        if unit.directions == 1:
            return g.node("Squeeze", [y_h, g.const(f"{unit.name}/last_axes", np.array([0], np.int64))],
                          f"{unit.name}/last")
        if unit.merge_mode == "concat":
            y_h = g.node("Transpose", [y_h], f"{unit.name}/last_batch_major", perm=[1, 0, 2])
            return g.node("Reshape", [y_h, g.const(f"{unit.name}/last_shape", np.array([0, -1], np.int64))],
                          f"{unit.name}/last")
        return _merge(g, unit, y_h, axis=0)
    if unit.directions == 1:
        y = g.node("Squeeze", [y, g.const(f"{unit.name}/axes", np.array([1], np.int64))], f"{unit.name}/Squeeze")
        if unit.go_backwards:  # Keras returns the outputs in the order it computed them: time reversed
            big = np.iinfo(np.int64).max
            y = g.node("Slice", [y, g.const(f"{unit.name}/starts", np.array([-1], np.int64)),
                                 g.const(f"{unit.name}/ends", np.array([-big], np.int64)),
                                 g.const(f"{unit.name}/slice_axes", np.array([0], np.int64)),
                                 g.const(f"{unit.name}/steps", np.array([-1], np.int64))], f"{unit.name}/Reverse")
        return y
    if unit.merge_mode == "concat":
        y = g.node("Transpose", [y], f"{unit.name}/Transpose", perm=[0, 2, 1, 3])
        return g.node("Reshape", [y, g.const(f"{unit.name}/shape", np.array([0, 0, -1], np.int64))],
                      f"{unit.name}/Reshape")
    return _merge(g, unit, y, axis=1)


def _merge(g: _Graph, unit: RecurrentLayer, y: str, axis: int) -> str:
    """The two directions on ``axis`` summed, multiplied or averaged."""
    op = {"sum": "ReduceSum", "ave": "ReduceMean", "mul": "ReduceProd"}[unit.merge_mode]
    if op == "ReduceSum":
        return g.node(op, [y, g.const(f"{unit.name}/merge_axes", np.array([axis], np.int64))],
                      f"{unit.name}/merge", keepdims=0)
    return g.node(op, [y], f"{unit.name}/merge", axes=[axis], keepdims=0)



def run(path: str | os.PathLike, x: np.ndarray, states: Mapping[str, tuple] | None = None) -> dict[str, Any]:
    """Run an ONNX file with onnxruntime; every graph output by name."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's notes on graph clean-up are not the user's concern
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {}
    for i, meta in enumerate(session.get_inputs()):
        if i == 0:
            feeds[meta.name] = x if x.dtype.kind in "iu" else x.astype(np.float32)
            continue
        layer, _, state = meta.name.rpartition(".")
        if states is None or layer not in states:
            raise FormatError(f"{path}: input {meta.name} needs a value")
        feeds[meta.name] = np.asarray(states[layer][0 if state == "h_0" else 1], np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))
