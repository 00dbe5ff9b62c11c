"""Reading ONNX models into canonical ones: the recurrent operators, MatMul / Gemm (+ Add, + activation) and
Gather nodes whose weights are initializers or constants, 1-D Conv, BatchNormalization, LayerNormalization,
activations on their own and means or maxima over time, as :mod:`lstm_convert.adapters.onnx` describes. The
file is decoded by :mod:`lstm_convert._onnx_decode`, without the ``onnx`` package.

Kept apart from the writer, which every reader's representability check imports, so that a change here
touches only what reads ONNX (the long fuzz run counts its chunks by the files a test imported).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import _onnx_decode as _wire
from .._json import loads as _loads
from ..canonical import (
    AROUND,
    DIRECTIONS,
    LAYER_TYPES,
    MERGE_MODES,
    Activation,
    BatchNorm,
    Conv1D,
    Dense,
    Embedding,
    Gate,
    Layer,
    LayerNorm,
    Masking,
    Model,
    Pooling,
    RecurrentLayer,
)
from ..errors import ConfigError, FormatError, ShapeError, UnsupportedError
from ..formats import check_selection, selects
from ..gates import activation_attributes, layout, split, split_bias, split_peepholes
from .._lazy import np
from .onnx import METADATA_KEY, MODEL_KEY, _DEFAULT_ACTIVATIONS, _DENSE_OPS, _OPS, _RECORDED, _TO_ONNX

_KINDS = {v: k for k, v in _OPS.items()}
# What to do when the graph as a whole cannot be read: take its recurrent operators alone.
_SELECT = {"remedy": "select the recurrent operators with only=[...]",
           "hint": "select the recurrent operators with --only PATTERN (lstm-convert inspect lists them)"}
_FLOAT_TYPES = (1, 10, 11, 16)  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
# Element types read from external data: FLOAT, UINT8, INT8, INT16, INT32, INT64, BOOL, FLOAT16, DOUBLE.
_EXTERNAL_TYPES = (1, 2, 3, 5, 6, 7, 9, 10, 11)
# Nodes whose result is a shape, a size or a truth value, not data.
_SHAPE_RESULTS = {"Shape", "Size", "Less", "Greater", "Equal", "Not", "And", "Or"}
# What may be done to the model's data between layers without changing what the model computes: moving
# axes and adding or removing unit ones. Anything else on the data (selecting steps, arithmetic, an
# activation that is not a Dense layer's) belongs to no layer read here, and the graph is refused.
_DATA_PLUMBING = {"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Dropout", "Shape", "Size"}
# Nodes that only move or reshape data between the layers.
_LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Shape", "Gather", "Concat", "Cast",
               "Constant", "ConstantOfShape", "Identity", "Expand", "Flatten", "Split", "Less", "And", "Where",
               "Equal", "Not", "Greater", "Range", "Tile", "Size", "Max", "Min", "Sub", "Div", "ReverseSequence",
               "ReduceSum", "ReduceMean", "ReduceProd", "Mul", "Add", "Dropout"}


# -- reading ------------------------------------------------------------------------------------------


def _load(path: Path) -> Any:
    """The file's ModelProto, decoded here (:mod:`lstm_convert._onnx_decode`), so reading needs no ``onnx``."""
    try:
        return _wire.load(path)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except _wire.DecodeError as exc:
        raise FormatError(f"{path}: not a readable ONNX model ({exc})") from None


def read(path: str | os.PathLike, *, only: Sequence[str] = (), inventory: bool = False) -> Model:
    """Read the recurrent, Dense and Embedding layers of an ONNX model, in graph order.

    ``only`` (shell-style patterns on node or output names) reads just the operators they select, each as
    the layer it is (a recurrent operator returns its whole output sequence), which must follow one another
    through data plumbing alone; nothing else in the graph is checked. With ``inventory`` (``inspect``), a
    graph that cannot be read whole is read as its layer operators, and the nodes that carry other weights
    are listed in ``model.config["unconverted"]``.
    """
    path = Path(path)
    proto = _load(path)
    graph = proto.graph
    _load_external_data(path, proto)
    values: dict[str, np.ndarray] = {}
    every = _all_nodes(graph)  # with the nodes of If / Loop / Scan bodies, each after the node that holds it
    bare = next((node for node in every if not node.output), None)
    if bare is not None:  # every ONNX operator has an output, which the reader names a node by
        raise FormatError(f"{path}: node {bare.name or bare.op_type!r} ({bare.op_type}) has no outputs; the file "
                          "is damaged")
    for sub in _all_graphs(graph):
        for tensor in sub.initializer:
            if tensor.name in values:
                raise FormatError(f"{path}: initializer {tensor.name} appears twice")
            try:
                values[tensor.name] = _wire.to_array(tensor)
            except (TypeError, ValueError) as exc:  # an undefined element type, data that does not fit the dims
                raise FormatError(f"{path}: initializer {tensor.name!r} cannot be read ({exc})") from None
    for node in every:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            try:
                values[node.output[0]] = _wire.to_array(node.attribute[0].t)
            except (TypeError, ValueError) as exc:
                raise FormatError(f"{path}: constant {node.name or node.output[0]!r} cannot be read ({exc})") from None
    folded = _fold_constants(path, every, values)
    consumers: dict[str, list[Any]] = {}
    for node in every:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    meta = {p.key: p.value for p in proto.metadata_props}
    names = _recorded(meta)
    graph_outputs = {o.name for o in graph.output}
    producer = f"{proto.producer_name} {proto.producer_version}".strip()
    source = {"framework": "onnx", "file_format": "onnx", "producer": producer}
    # What this module's writer puts around a layer (merging directions, say) is named after the layer.
    ours = {spec["name"] for spec in names} if proto.producer_name == "lstm_convert" else set()

    # Tensors computed from the model's data (not weights, not shapes): a node that is not part of a layer
    # and computes on them would change the output, and is refused.
    data = {i.name for i in graph.input if i.type.tensor_type.elem_type in _FLOAT_TYPES and i.name not in values}
    for node in graph.node:
        from_data = any(i in data for i in node.input)
        if node.op_type in _KINDS or (from_data and node.op_type not in _SHAPE_RESULTS):
            data.update(node.output)
    # What the model's output (the first graph output) is computed from; other outputs (final states,
    # say) are not part of the function that is converted.
    producers = {o: node for node in graph.node for o in node.output}
    needed: set[str] = set()
    pending = [graph.output[0].name] if graph.output else []
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        if name in producers:
            pending.extend(i for i in producers[name].input if i)

    if only or inventory:
        try:
            if not only:
                return _read_whole(path, proto, graph, values, consumers, meta, names, graph_outputs, source, ours,
                                   data, needed, folded)
        except UnsupportedError as exc:
            refusal = exc
        else:
            refusal = None
        layers, unconverted = _read_selected(path, every, values, consumers, only or ("*",), source, folded,
                                             chain=bool(only))
        if not layers and refusal is not None:
            raise refusal
        if refusal is not None:
            unconverted = [{"name": "(the graph)", "type": "graph", "why": refusal.message, "tensors": {}},
                           *unconverted]
        try:
            return Model(tuple(layers), source=source, config={"unconverted": unconverted} if inventory else {})
        except (ConfigError, ShapeError) as exc:
            raise FormatError(f"{path}: {exc}") from None
    return _read_whole(path, proto, graph, values, consumers, meta, names, graph_outputs, source, ours, data, needed,
                       folded)


def _read_whole(path: Path, proto: Any, graph: Any, values: dict, consumers: dict, meta: dict, names: list,
                graph_outputs: set, source: dict, ours: set, data: set, needed: set, folded: set[str]) -> Model:
    """The whole graph as one chain of layers (see :func:`read`)."""
    layers: list[Layer] = []
    unaccounted: list[str] = []
    counters: dict[str, int] = {}
    taken: set[str] = set()  # nodes folded into a Dense layer

    def name_for(kind: str) -> tuple[str, dict, dict]:
        index = len(layers)
        if index < len(names):
            spec = names[index]
            return spec["name"], spec.get("config", {}), spec.get("source", {})
        count = counters.get(kind, 0)
        counters[kind] = count + 1
        return (kind if count == 0 else f"{kind}_{count}"), {}, {}

    selections, last_step = _step_selections(graph, values)
    producers = {o: node for node in graph.node for o in node.output}
    # The order of the axes of the model's data at this point of the chain, followed through 3-D Transposes
    # (exporters write convolutions between two of them: channels first), and whether it is still a sequence.
    layout: dict[str, Any] = {"axes": _BATCH_MAJOR, "sequence": True}

    around_kinds = {cls.kind for cls in AROUND}

    def recorded_masking() -> None:
        """A Masking layer has no node of its own, and the nodes of the layers around recurrent ones are this
        module's own plumbing: the record of a graph written here places them, with their initializers."""
        while ours and len(layers) < len(names) and names[len(layers)].get("kind") in ("masking", *around_kinds):
            spec = names[len(layers)]

            def fetch(label: str) -> np.ndarray:
                if label not in values:
                    raise FormatError(f"{path}: initializer {label} of the recorded layer is missing")
                return values[label]

            try:
                if spec["kind"] == "masking":
                    layers.append(Masking(name=spec["name"], size=spec["size"], mask_value=spec["mask_value"]))
                else:
                    layers.append(LAYER_TYPES[spec["kind"]].from_spec({**spec, "source": {**source, **spec.get(
                        "source", {})}}, fetch))
            except (KeyError, TypeError, ConfigError, ShapeError) as exc:
                raise FormatError(f"{path}: the recorded {spec.get('kind')} layer {spec.get('name')!r} is malformed "
                                  f"({exc})") from None

    for node in graph.node:
        if (node.name in taken and node.name) or (node.output and all(o in folded for o in node.output)):
            continue
        if _own_plumbing(node, ours) or (node.name and node.name in selections):
            continue
        recorded_masking()
        if _layer_node(node, values) in (*_OPS, "dense") and not any(o in needed for o in node.output):
            raise UnsupportedError(f"{path}: node {node.name or node.op_type} ({node.op_type}) is a layer off the "
                                   "way to the model's output (its first graph output); a model with several "
                                   "branches cannot be read as one chain of layers")
        if node.op_type in _KINDS:
            index = len(layers)
            if len(node.input) > 4 and node.input[4] and not ours:
                raise UnsupportedError(f"{path}: node {node.name or node.op_type} takes sequence_lens computed in "
                                       "the graph (a mask), which is not read; export it without sequence lengths")
            for slot, what in ((5, "initial h"), (6, "initial c")):
                if len(node.input) > slot and node.input[slot] in data:
                    raise UnsupportedError(f"{path}: node {node.name or node.op_type} takes its {what} from the "
                                           "model's data (another layer's state, say), which a chain of layers "
                                           "cannot express")
            name, config, src = name_for(_KINDS[node.op_type])
            layer = _read_recurrent(path, node, values, name, config, {**source, **src})
            recorded = names[index] if index < len(names) else None
            if recorded is not None:
                semantics = {k: recorded[k] for k in _RECORDED if isinstance(recorded.get(k), bool)
                             or (k == "merge_mode" and recorded.get(k) in MERGE_MODES and layer.directions == 2)}
                if semantics.get("go_backwards") and layer.backward:  # our writer's reversed input, not ONNX's
                    semantics["backward"] = False
                    semantics["gates"] = {(i, "forward", g): v for (i, _, g), v in layer.gates.items()}
                    semantics["peepholes"] = {(i, "forward", g): v for (i, _, g), v in layer.peepholes.items()}
                layer = dataclasses.replace(layer, **semantics)
            elif node.name in last_step or (not consumers.get(node.output[0]) and node.output[0] not in graph_outputs
                                            and len(node.output) > 1 and consumers.get(node.output[1])):
                layer = dataclasses.replace(layer, return_sequences=False)  # only the last step is used
            layers.append(layer)
            # its output, once its direction axis is folded away: time-major, or batch-major with layout=1
            layout["axes"] = _BATCH_MAJOR if _attrs(node).get("layout", 0) else ("time", "batch", "features")
            layout["sequence"] = layer.return_sequences
        elif node.op_type in ("MatMul", "Gemm") and _weight(node, values) is not None:
            name, config, src = name_for("dense")
            layers.append(_read_dense(path, node, values, consumers, taken, name, config, {**source, **src}))
        elif node.op_type == "Gather" and node.input[0] in values and values[node.input[0]].ndim == 2 \
                and values[node.input[0]].dtype.kind == "f":
            index = len(layers)
            name, config, src = name_for("embedding")
            mask_zero = bool(ours) and index < len(names) and names[index].get("mask_zero") is True
            layers.append(Embedding(name=name, weight=values[node.input[0]], config=config, source={**source, **src},
                                    mask_zero=mask_zero))
        elif node.op_type == "Transpose" and sorted(_attrs(node).get("perm", [])) == [0, 1, 2] \
                and any(i in data for i in node.input) and any(o in needed for o in node.output):
            layout["axes"] = tuple(layout["axes"][i] for i in _attrs(node)["perm"])
        elif node.op_type in _AROUND_OPS and any(i in data for i in node.input[:1]) \
                and any(o in needed for o in node.output) and _follows_layer(node, producers, taken, graph):
            layer = _read_around(path, node, values, layout, layers, graph, name_for, source)
            layers.append(layer)
        elif node.op_type == "If":
            raise UnsupportedError(f"{path}: node {node.name or 'If'} is an If: the graph chooses between branches "
                                   "at run time, which one chain of layers cannot express", **_SELECT)
        elif node.op_type in ("Loop", "Scan"):
            raise UnsupportedError(f"{path}: node {node.name or node.op_type} is a {node.op_type}: a recurrent layer "
                                   "exported as a loop rather than an LSTM, GRU or RNN operator cannot be read",
                                   **_SELECT)
        elif _carries_weights(node, values):
            raise UnsupportedError(f"{path}: node {node.name or node.op_type} ({node.op_type}) carries weights that "
                                   "are not part of a layer lstm_convert reads", **_SELECT)
        elif node.op_type not in _LAYOUT_OPS and node.op_type not in _DENSE_OPS.values():
            raise UnsupportedError(f"{path}: node {node.name or node.op_type} ({node.op_type}) is not a layer "
                                   "lstm_convert knows, nor layout between layers", **_SELECT)
        elif node.op_type not in _DATA_PLUMBING and any(i in data for i in node.input) \
                and any(o in needed for o in node.output):
            unaccounted.append(f"{node.name or node.op_type} ({node.op_type})")
    recorded_masking()
    if unaccounted:
        raise UnsupportedError(f"{path}: nodes {', '.join(unaccounted[:8])}"
                               + (f" and {len(unaccounted) - 8} more" if len(unaccounted) > 8 else "")
                               + " compute on the model's data outside any layer lstm_convert reads (a cell written "
                               "out as separate operators, or steps picked from a sequence in a way not recognised); "
                               "the graph cannot be read without changing what it computes",
                               **_SELECT)
    if not layers:
        raise FormatError(f"{path}: holds no LSTM, GRU, RNN, Dense or Embedding layer")
    seen: dict[int, str] = {}
    for layer in layers:  # an exporter that unrolls a recurrent layer into per-step MatMuls reuses its weights
        for _, array in layer.tensors():
            key = id(array.base if array.base is not None else array)
            if key in seen and seen[key] != layer.name:
                raise UnsupportedError(f"{path}: layers {seen[key]} and {layer.name} share weights: the graph "
                                       "computes a recurrent layer step by step (unrolled) rather than with an "
                                       "LSTM, GRU or RNN operator, which cannot be read")
            seen[key] = layer.name
    try:
        recorded_input = _loads(meta.get(MODEL_KEY, "{}"))
    except ValueError:
        recorded_input = {}
    shape = recorded_input.get("input_shape") if isinstance(recorded_input, dict) else None
    try:
        return Model(tuple(layers), source=source,
                     input_shape=tuple(shape) if isinstance(shape, list) else None,
                     input_dtype=recorded_input.get("input_dtype") if isinstance(recorded_input, dict) else None)
    except (ConfigError, ShapeError) as exc:
        raise FormatError(f"{path}: {exc}") from None


# What build() writes around a layer to move, mask, select and merge its data, named "<layer>/...".
_OWN_OPS = {"Transpose", "Squeeze", "Unsqueeze", "Reshape", "Slice", "ReduceSum", "ReduceMean", "ReduceProd",
            "Conv", "LayerNormalization", "Sqrt", "Div", "Relu", "Sigmoid", "Tanh", "Softsign", "Softplus", "Elu",
            "Softmax", "HardSigmoid",
            "ReduceMax", "Equal", "Not", "Cast", "Greater", "Mul", "Add", "Sub", "CumSum", "Where", "Expand", "Shape",
            "ScatterElements", "Gather", "GatherElements", "Max", "Concat", "Identity"}


def _layer_node(node: Any, values: Mapping[str, np.ndarray]) -> str | None:
    """The kind of layer an operator is on its own (``lstm``, ``dense``, ``embedding``, ...), or None."""
    if node.op_type in _KINDS:
        return _KINDS[node.op_type]
    if node.op_type in ("MatMul", "Gemm") and _weight(node, values) is not None:
        return "dense"
    if node.op_type == "Gather" and node.input and node.input[0] in values and values[node.input[0]].ndim == 2 \
            and values[node.input[0]].dtype.kind == "f":
        return "embedding"
    return None


def _read_selected(path: Path, nodes: list[Any], values: Mapping[str, np.ndarray], consumers: Mapping[str, list],
                   only: Sequence[str], source: Mapping[str, str], folded: set[str] = frozenset(), *,
                   chain: bool = True) -> tuple[list[Layer], list[dict]]:
    """The layer operators that ``only`` selects (by node or output name, in If / Loop bodies too), each read
    as the layer it is, and the nodes that carry weights but are no layer. With ``chain``, each selected
    operator must take the previous one's output through data plumbing (Identity, Transpose, Reshape,
    Squeeze, Unsqueeze) alone. Initial states and sequence lengths that the graph feeds an operator are
    what a call of the layer takes, as in every framework: the layer is its weights and equations."""
    producers = {o: node for node in nodes for o in node.output}
    candidates = [node for node in nodes if _layer_node(node, values)]
    labels = [x for node in candidates for x in _labels(node) if x]
    if not candidates:
        return [], []
    check_selection(str(path), only, labels)
    taken: set[str] = set()
    layers: list[Layer] = []
    used: set[str] = set()
    previous = None
    for node in candidates:
        if not any(selects(only, x) for x in _labels(node) if x):
            continue
        label = f"{path}: node {node.name or node.op_type}"
        if previous is not None and chain:
            upstream = _upstream(producers, node.input[0] if node.op_type != "Gather" else node.input[1], taken, values)
            if upstream is not previous:
                raise UnsupportedError(f"{label} does not take the output of the selected node before it "
                                       f"({previous.name or previous.op_type}) through data plumbing alone; select "
                                       "one run of layer operators")
        name = _unique_name(_labels(node)[-1] or node.op_type, used)
        kind = _layer_node(node, values)
        if kind in _OPS:
            layers.append(_read_recurrent(path, node, values, name, {}, source))
        elif kind == "dense":
            layers.append(_read_dense(path, node, values, consumers, taken, name, {}, source))
        else:
            layers.append(Embedding(name=name, weight=values[node.input[0]], source=source))
        previous = node
    unconverted = []
    for node in nodes:
        if _layer_node(node, values) or node.name in taken or not _carries_weights(node, values) \
                or (node.output and all(o in folded for o in node.output)):
            continue
        unconverted.append({"name": node.name or node.output[0], "type": node.op_type,
                            "why": "not a layer lstm_convert converts",
                            "tensors": {i: list(values[i].shape) for i in node.input if i in values}})
    if not layers:
        raise FormatError(f"{path}: the selection holds no LSTM, GRU, RNN, Dense or Embedding operator")
    return layers, unconverted


def _labels(node: Any) -> list[str]:
    """What selects an operator: its node name, its output names, and the layer name made of its node name
    (``/decoder/rnn/LSTM`` becomes ``decoder.rnn.LSTM``), which ``inspect`` shows."""
    return [node.name, *node.output, (node.name or node.output[0]).strip("/").replace("/", ".")]


def _upstream(producers: Mapping[str, Any], name: str, taken: set[str], values: Mapping[str, np.ndarray]) -> Any:
    """The layer operator whose output ``name`` is, through data plumbing and the nodes folded into a Dense
    (its Add and activation); another node that computes, or None for a graph input."""
    node = producers.get(name)
    while node is not None and not _layer_node(node, values) and node.input \
            and (node.op_type in _DATA_PLUMBING or (node.name and node.name in taken)):
        node = producers.get(node.input[0])
    return node


def _unique_name(name: str, used: set[str]) -> str:
    candidate, k = name, 1
    while candidate in used:
        candidate, k = f"{name}_{k}", k + 1
    used.add(candidate)
    return candidate


def _own_plumbing(node: Any, ours: set[str]) -> bool:
    """Whether ``node`` is one that :func:`build` writes around a layer of a graph written here."""
    return bool(ours) and node.name.rpartition("/")[0] in ours and node.op_type in _OWN_OPS


def _recorded(meta: Mapping[str, str]) -> list[dict]:
    try:
        specs = _loads(meta.get(METADATA_KEY, "[]"))
    except ValueError:
        return []
    specs = [s for s in specs if isinstance(s, dict) and isinstance(s.get("name"), str)] \
        if isinstance(specs, list) else []
    for spec in specs:  # what a layer computes is in its record: a damaged one is refused, never half-used
        config, source = spec.get("config", {}), spec.get("source", {})
        if not isinstance(config, dict) or not isinstance(source, dict) or not all(
                isinstance(config[k], dict) for k in ("keras", "torch", "onnx") if k in config):
            raise FormatError(f"the lstm_convert record of layer {spec['name']!r} (metadata {METADATA_KEY}) is "
                              "malformed: its config and source must be objects")
    return specs


def _attrs(node: Any) -> dict[str, Any]:
    """A node's attributes by name; those this module reads must have the type the ONNX operators give them
    (a file may say anything: ``perm`` as a float, ``hidden_size`` as text), else FormatError naming both."""
    values = {a.name: _wire.attribute_value(a) for a in node.attribute}
    values = {name: value for name, value in values.items() if value is not None}  # None: an attribute of no type
    for name, value in values.items():
        check = _ATTRIBUTE_TYPES.get(name)
        if check is not None and not check[0](value):
            raise FormatError(f"node {node.name or node.op_type} ({node.op_type}): attribute {name} is {value!r:.60}, "
                              f"expected {check[1]}")
    return values


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_ints(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int for v in value)


def _is_float(value: Any) -> bool:
    return type(value) in (int, float)


_ATTRIBUTE_TYPES = {
    **{name: (_is_int, "an integer") for name in ("axis", "hidden_size", "layout", "linear_before_reset", "input_forget",
                                                  "transA", "transB", "to", "keepdims", "group", "batch_dims")},
    **{name: (_is_ints, "a list of integers") for name in ("perm", "axes", "pads", "strides", "dilations",
                                                           "kernel_shape")},
    **{name: (_is_float, "a number") for name in ("clip", "alpha", "beta", "epsilon", "momentum")},
    "direction": (lambda v: isinstance(v, bytes), "a string"),
    "activations": (lambda v: isinstance(v, list) and all(isinstance(x, bytes) for x in v), "a list of strings"),
    "activation_alpha": (lambda v: isinstance(v, list) and all(_is_float(x) for x in v), "a list of numbers"),
    "activation_beta": (lambda v: isinstance(v, list) and all(_is_float(x) for x in v), "a list of numbers"),
}


def _read_recurrent(path: Path, node: Any, values: Mapping[str, np.ndarray], name: str,
                    config: Mapping[str, Any], source: Mapping[str, str]) -> RecurrentLayer:
    kind = _KINDS[node.op_type]
    attrs = _attrs(node)
    label = f"{path}: node {node.name or node.op_type}"
    inputs = list(node.input) + [""] * 8

    def weight(index: int, what: str) -> np.ndarray | None:
        key = inputs[index]
        if not key:
            return None
        if key not in values:
            raise UnsupportedError(f"{label}: its {what} ({key}) is computed in the graph, not an initializer")
        return values[key]

    w, r, b = weight(1, "W"), weight(2, "R"), weight(3, "B")
    if w is None or r is None:
        raise FormatError(f"{label}: an ONNX {node.op_type} takes W and R as its second and third inputs; this one "
                          "lacks " + " and ".join(n for n, a in (("W", w), ("R", r)) if a is None))
    peep = weight(7, "P") if kind == "lstm" else None
    if attrs.get("layout", 0) not in (0, 1):
        raise UnsupportedError(f"{label}: layout={attrs.get('layout')} is not an ONNX layout (0 or 1)")
    # layout=1 (batch-major X, Y, Y_h) moves the data's axes, not the weights': they are read the same.
    direction = attrs.get("direction", b"forward")
    direction = direction.decode("utf-8", "replace") if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise FormatError(f"{label}: direction {direction!r} is not forward, reverse or bidirectional")
    directions = 2 if direction == "bidirectional" else 1
    hidden = attrs.get("hidden_size", r.shape[-1] if r.ndim else 0)
    if type(hidden) is not int or hidden < 1:
        raise FormatError(f"{label}: hidden_size {hidden!r} is not a positive integer")
    lay = layout("onnx", kind)
    size = len(lay.order) * hidden
    want = {"W": (directions, size, None), "R": (directions, size, hidden), "B": (directions, None)}
    for what, array in (("W", w), ("R", r), ("B", b)):
        if array is None:
            continue
        shape = want[what]
        if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
            raise ShapeError(f"{label}: {what} has shape {array.shape}, expected {shape} (None: any)")
    acts = attrs.get("activations")
    activation, recurrent = _activations(label, kind, acts, attrs, directions)
    if peep is not None and (peep.ndim != 2 or peep.shape[0] != directions):
        raise ShapeError(f"{label}: P has shape {peep.shape}, expected {(directions, 3 * hidden)}")
    names = ("reverse",) if direction == "reverse" else DIRECTIONS[:directions]
    gates, peepholes = {}, {}
    for d, canonical in enumerate(names):
        if peep is not None:
            for gate, vector in split_peepholes(lay, peep[d], hidden, f"{label} P").items():
                peepholes[(0, canonical, gate)] = vector
        blocks = {"W_x": split(lay, w[d], hidden, f"{label} W"), "W_h": split(lay, r[d], hidden, f"{label} R")}
        if b is not None:
            blocks["b_x"], blocks["b_h"] = split_bias(lay, [b[d]], hidden, f"{label} B")
        for gate in lay.order:
            gates[(0, canonical, gate)] = Gate(**{role: v[gate] for role, v in blocks.items()})
    clip = attrs.get("clip")
    return RecurrentLayer(kind=kind, input_size=int(w.shape[2]), hidden_size=hidden, directions=directions,
                          bias=b is not None, gates=gates, name=name, activation=activation,
                          recurrent_activation=recurrent, reset_after=bool(attrs.get("linear_before_reset", 0))
                          if kind == "gru" else True, backward=direction == "reverse", peepholes=peepholes,
                          clip=float(clip) if clip is not None else None,
                          input_forget=bool(attrs.get("input_forget", 0)), config=config, source=source)


def _activations(label: str, kind: str, acts: Any, attrs: Mapping[str, Any], directions: int) -> tuple[str, str]:
    names = [a.decode() if isinstance(a, bytes) else a for a in (acts or [])] or _DEFAULT_ACTIVATIONS[kind]
    per = len(_DEFAULT_ACTIVATIONS[kind])
    if len(names) not in (per, per * directions) or (len(names) == per * 2 and names[:per] != names[per:]):
        raise UnsupportedError(f"{label}: activations {names} differ between directions or have an unexpected count")
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    canonical = []
    for onnx_name in names[:per]:
        match = [k for k, (n, a, b) in _TO_ONNX.items() if n == onnx_name]
        if onnx_name == "HardSigmoid":
            alpha = alphas.pop(0) if alphas else 0.2
            beta = betas.pop(0) if betas else 0.5
            match = [k for k in ("hard_sigmoid_keras2", "hard_sigmoid_keras3")
                     if np.isclose(_TO_ONNX[k][1], alpha) and np.isclose(_TO_ONNX[k][2], beta)]
        elif onnx_name in ("Affine", "Elu"):
            alpha = alphas.pop(0) if alphas else 1.0
            beta = betas.pop(0) if (betas and onnx_name == "Affine") else 0.0
            if alpha != 1.0 or beta != 0.0:
                match = []
        if not match:
            raise UnsupportedError(f"{label}: activation {onnx_name} with these parameters is not supported")
        canonical.append(match[0])
    try:
        named = activation_attributes(layout("onnx", kind), canonical)
    except UnsupportedError as exc:  # an LSTM whose cell-input and output activations differ
        raise UnsupportedError(f"{label}: {exc}") from None
    return named["activation"], named.get("recurrent_activation", "sigmoid")


def _weight(node: Any, values: Mapping[str, np.ndarray]) -> np.ndarray | None:
    if len(node.input) > 1 and node.input[1] in values:
        array = values[node.input[1]]
        if array.ndim == 2 and array.dtype.kind == "f":
            return array
    return None


# Operators read as the layers around recurrent ones, from graphs written elsewhere.
_AROUND_OPS = {"Conv", "BatchNormalization", "LayerNormalization", "ReduceMean", "ReduceMax", "GlobalAveragePool",
               "GlobalMaxPool", *_DENSE_OPS.values()}


def _read_around(path: Path, node: Any, values: Mapping[str, np.ndarray], layout: dict, layers: list, graph: Any,
                 name_for: Callable, source: Mapping[str, str]) -> Layer:
    """A Conv (channels-first, 1-D), BatchNormalization (over the channels), LayerNormalization (over the last
    axis), an activation on its own, or a mean or maximum over time, as the layer it is; UnsupportedError naming
    the node for what the canonical layers do not compute (another axis, padding by SAME_LOWER, ...)."""
    op, attrs = node.op_type, _attrs(node)
    label = f"{path}: node {node.name or op} ({op})"
    axes = layout["axes"] if layout["sequence"] else ("batch", "features")
    channels_first = axes == ("batch", "features", "time")
    size = layers[-1].output_size if layers else _input_features(graph)

    def const(index: int, what: str) -> np.ndarray | None:
        if len(node.input) <= index or not node.input[index]:
            return None
        if node.input[index] not in values:
            raise _refusal(f"{label}: its {what} is computed from the model's data, not a weight")
        return values[node.input[index]]

    def named(kind: str) -> dict:
        name, config, src = name_for(kind)
        return {"name": name, "config": config, "source": {**source, **src}}

    try:
        if op in _DENSE_OPS.values():
            if size is None:
                raise _refusal(f"{label}: an activation whose input size is not known")
            if op == "Softmax" and attrs.get("axis", -1) % len(axes) != axes.index("features"):
                raise _refusal(f"{label}: a softmax over another axis than the features")
            if op == "Elu" and attrs.get("alpha", 1.0) != 1.0:
                raise _refusal(f"{label}: Elu with alpha={attrs['alpha']} (only 1)")
            activation = {v: k for k, v in _DENSE_OPS.items()}[op]
            return Activation(activation=activation, size=size, **named("activation"))
        if op == "Conv":
            weight = const(1, "weight")
            if weight is None or weight.ndim != 3:
                raise _refusal(f"{label}: only 1-D convolutions (a 3-D weight) are read (Keras' own ONNX export "
                               "writes a Conv1D as a 2-D convolution)")
            if not channels_first:
                raise _refusal(f"{label}: a convolution over data that is not channels-first (batch, "
                                       "channels, time) between two Transpose(perm=[0, 2, 1]) nodes")
            stride, dilation = attrs.get("strides", [1])[0], attrs.get("dilations", [1])[0]
            auto = attrs.get("auto_pad", b"NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else auto
            if auto == "SAME_UPPER":
                padding = Conv1D.padding_of("same", int(weight.shape[2]), dilation, stride)
            elif auto == "VALID":
                padding = (0, 0)
            elif auto == "NOTSET":
                pads = attrs.get("pads", [0, 0])
                padding = (int(pads[0]), int(pads[1]))
            else:
                raise _refusal(f"{label}: auto_pad={auto} (the odd zero before the sequence) is not read")
            return Conv1D(weight=weight, bias=const(2, "bias"), stride=int(stride), dilation=int(dilation),
                          groups=int(attrs.get("group", 1)), padding=padding, **named("conv1d"))
        if op == "BatchNormalization":
            if axes[1] != "features":
                raise _refusal(f"{label}: normalises axis 1, which here is the {axes[1]}, not the features")
            if attrs.get("training_mode", 0):
                raise _refusal(f"{label}: training_mode=1 (the batch's own statistics)")
            return BatchNorm(scale=const(1, "scale"), offset=const(2, "bias"), mean=const(3, "mean"),
                             variance=const(4, "variance"), epsilon=float(attrs.get("epsilon", 1e-5)),
                             momentum=1.0 - float(attrs.get("momentum", 0.9)), **named("batch_norm"))
        if op == "LayerNormalization":
            if axes[-1] != "features" or attrs.get("axis", -1) % len(axes) != len(axes) - 1:
                raise _refusal(f"{label}: normalises another axis than the features")
            scale = const(1, "scale")
            if scale is None or scale.ndim != 1:
                raise _refusal(f"{label}: its scale is not a vector of the features")
            return LayerNorm(size=int(scale.shape[0]), scale=scale, offset=const(2, "bias"),
                             epsilon=float(attrs.get("epsilon", 1e-5)), **named("layer_norm"))
        # a mean or a maximum over time
        reduced = attrs.get("axes")
        if reduced is None and len(node.input) > 1:
            reduced = const(1, "axes")
        reduced = [int(a) % len(axes) for a in np.atleast_1d(reduced)] if reduced is not None else None
        if op.startswith("Global"):  # (batch, C, 1): the Flatten or Squeeze after it is plumbing
            ok = channels_first
        else:
            ok = layout["sequence"] and reduced == [axes.index("time")] and attrs.get("keepdims", 1) == 0 \
                and axes[0] == "batch"
        if not ok or size is None:
            raise _refusal(f"{label}: reduces another axis than the time, or keeps it (keepdims)")
        layout["sequence"], layout["axes"] = False, _BATCH_MAJOR
        mode = "max" if "Max" in op else "average"
        return Pooling(mode=mode, size=size, **named("pooling"))
    except (ConfigError, ShapeError) as exc:
        raise FormatError(f"{label}: {exc}") from None


def _follows_layer(node: Any, producers: Mapping[str, Any], taken: set[str], graph: Any) -> bool:
    """Whether ``node`` takes, through data plumbing only, the output of a layer operator or the graph's input:
    the chain's data, not a piece of a layer written out as separate operators (an exported cell's gates)."""
    name = node.input[0]
    inputs = {i.name for i in graph.input}
    while name in producers and producers[name].op_type in _DATA_PLUMBING:
        name = producers[name].input[0]
    if name in inputs:
        return True
    before = producers.get(name)
    return before is not None and (before.op_type in (*_KINDS, *_AROUND_OPS, "MatMul", "Gemm", "Gather")
                                   or before.name in taken)


def _refusal(message: str) -> UnsupportedError:
    """A refusal of part of a graph, with the way forward: select the recurrent operators."""
    return UnsupportedError(message, **_SELECT)


def _input_features(graph: Any) -> int | None:
    """The feature size of the graph's first input (batch, time, features), where its shape says it."""
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph.input[0].type.tensor_type.shape.dim] \
        if graph.input else []
    return dims[2] if len(dims) == 3 else None


_BATCH_MAJOR = ("batch", "time", "features")


def _read_dense(path: Path, node: Any, values: Mapping[str, np.ndarray], consumers: Mapping[str, list],
                taken: set[str], name: str, config: Mapping[str, Any], source: Mapping[str, str]) -> Dense:
    attrs = _attrs(node)
    kernel = _weight(node, values)
    if node.op_type == "Gemm":
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise UnsupportedError(f"{path}: node {node.name}: Gemm with transA, alpha or beta is not supported")
        weight = kernel if attrs.get("transB", 0) else kernel.T
        bias = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    else:
        weight, bias = kernel.T, None
    out = node.output[0]

    def next_node(output: str) -> Any:
        """The single node that uses ``output``, looking through reshapes (Keras' Tensordot adds them)."""
        following = consumers.get(output, [])
        while len(following) == 1 and following[0].op_type in ("Reshape", "Identity"):
            output = following[0].output[0]
            following = consumers.get(output, [])
        return following[0] if len(following) == 1 else None

    add = next_node(out)
    if bias is None and add is not None and add.op_type == "Add":
        other = [i for i in add.input if i in values]
        if other and values[other[0]].shape == (weight.shape[0],):
            bias = values[other[0]]
            taken.add(add.name)
            out = add.output[0]
    activation = "linear"
    ops = {v: k for k, v in _DENSE_OPS.items()}
    act = next_node(out)
    following = consumers.get(out, [])
    pair = sorted(following, key=lambda n: n.op_type)
    if len(pair) == 2 and [n.op_type for n in pair] == ["Mul", "Sigmoid"] \
            and sorted(pair[0].input) == sorted([out, pair[1].output[0]]):  # x * sigmoid(x), as written here
        activation = "silu"
        taken.update(n.name for n in pair)
    elif act is not None and act.op_type in ops:
        activation = ops[act.op_type]
        taken.add(act.name)
    return Dense(name=name, weight=weight, bias=bias, activation=activation, config=config, source=source)


# Nodes that exporters put between an initializer and the operator that uses it (to split, join, reorder or
# retype weights); with constant inputs only, they are computed when the file is read.
_CONSTANT_OPS = {"Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Slice", "Gather"}


def _load_external_data(path: Path, proto: Any) -> None:
    """Fill the tensors whose values the model keeps in other files, reading only regular files inside the
    model's own folder (no absolute or ``..`` location, no symlink leading out of it), each span within its
    file and exactly as long as the tensor."""
    tensors = []
    for sub in _all_graphs(proto.graph):
        tensors += list(sub.initializer)
        for node in sub.node:
            for attr in node.attribute:
                if attr.type == _wire.TENSOR:
                    tensors.append(attr.t)
                tensors += list(attr.tensors)
    folder = path.resolve().parent
    for tensor in tensors:
        if tensor.data_location != _wire.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"{path}: initializer {tensor.name!r} keeps its values in {location!r}"
        if not location or os.path.isabs(location) or ".." in Path(location).parts or "\0" in location:
            raise FormatError(f"{where}: refused (external data must be a file beside the model, named without "
                              "an absolute path or '..')")
        target = (path.parent / location)
        real = target.resolve()
        if real.parent != folder and folder not in real.parents:
            raise FormatError(f"{where}, which leads out of the model's folder (a symlink to {real}): refused")
        if not real.is_file():
            raise FormatError(f"{where}, which is not a file beside the model")
        try:
            offset, length = int(info.get("offset", 0)), int(info["length"]) if "length" in info else None
        except ValueError:
            raise FormatError(f"{where} with an offset or length that is not a number") from None
        dtype = _wire.np_dtype(tensor.data_type) if tensor.data_type in _EXTERNAL_TYPES else None
        if dtype is None or any(d < 0 for d in tensor.dims):
            raise FormatError(f"{where} as data type {tensor.data_type}, which lstm_convert does not read from "
                              "external data")
        expected = int(np.prod(tensor.dims, dtype=np.int64)) * dtype.itemsize
        size = real.stat().st_size
        if length is None:
            length = expected
        if length != expected or offset < 0 or offset + length > size:
            raise FormatError(f"{where}: {length} bytes at offset {offset} in a file of {size}, expected "
                              f"{expected} bytes for shape {tuple(tensor.dims)}")
        with open(real, "rb") as handle:
            handle.seek(offset)
            tensor.set("raw_data", handle.read(length))
        del tensor.external_data[:]
        tensor.set("data_location", _wire.DEFAULT)


def _all_graphs(graph: Any) -> list[Any]:
    """The graph and every graph in its nodes' attributes (If branches, Loop and Scan bodies), depth first."""
    out = [graph]
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == _wire.GRAPH else list(attr.graphs)
            for sub in subs:
                out += _all_graphs(sub)
    return out


def _all_nodes(graph: Any) -> list[Any]:
    """Every node, those of a node's subgraphs right after it, in order."""
    out = []
    for node in graph.node:
        out.append(node)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == _wire.GRAPH else list(attr.graphs)):
                out += _all_nodes(sub)
    return out


def _fold_constants(path: Path, nodes: list[Any], values: dict[str, np.ndarray]) -> set[str]:
    """Compute, in graph order, every node of :data:`_CONSTANT_OPS` whose inputs are all constants, adding its
    output to ``values``; the names of the outputs computed so."""
    folded: set[str] = set()
    for node in nodes:
        inputs = [i for i in node.input if i]
        if node.op_type not in _CONSTANT_OPS or not inputs or not node.input[0] or not all(i in values for i in inputs) \
                or len(node.output) != 1 or node.output[0] in values:
            continue
        attrs = _attrs(node)
        args = [values[i] if i else None for i in node.input]
        try:
            out = _constant_op(node.op_type, args, attrs)
        except (ValueError, IndexError, TypeError, KeyError, ZeroDivisionError) as exc:  # inconsistent shapes, axes
            raise FormatError(f"{path}: node {node.name or node.op_type} ({node.op_type}) cannot be computed from "
                              f"its constant inputs ({exc})") from None
        values[node.output[0]] = out
        folded.add(node.output[0])
    return folded


def _constant_op(op: str, args: list, attrs: Mapping[str, Any]) -> np.ndarray:
    """One ONNX operator on NumPy constants (the subset of :data:`_CONSTANT_OPS`, as the operators define it)."""
    x = args[0]
    if op == "Identity":
        return x
    if op == "Cast":
        return x.astype(_wire.np_dtype(int(attrs["to"])))
    if op == "Transpose":
        return np.transpose(x, attrs.get("perm", list(range(x.ndim))[::-1]))
    if op == "Reshape":
        shape = [int(d) for d in args[1]]
        if not attrs.get("allowzero", 0):
            shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return x.reshape(shape)
    if op in ("Squeeze", "Unsqueeze"):
        axes = args[1] if len(args) > 1 and args[1] is not None else attrs.get("axes")
        if op == "Squeeze":
            return np.squeeze(x, axis=None if axes is None else tuple(int(a) % x.ndim for a in np.atleast_1d(axes)))
        rank = x.ndim + len(np.atleast_1d(axes))
        out = x
        for axis in sorted(int(a) % rank for a in np.atleast_1d(axes)):
            out = np.expand_dims(out, axis)
        return out
    if op == "Concat":
        return np.concatenate(args, axis=int(attrs["axis"]))
    if op == "Gather":
        return np.take(x, args[1], axis=int(attrs.get("axis", 0)))
    # Slice: starts, ends, axes, steps as inputs (opset 10 on) or attributes (before)
    starts = args[1] if len(args) > 1 else attrs["starts"]
    ends = args[2] if len(args) > 2 else attrs["ends"]
    axes = args[3] if len(args) > 3 and args[3] is not None else attrs.get("axes", range(len(starts)))
    steps = args[4] if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[int(axis) % x.ndim] = slice(int(start), int(end), int(step))
    return x[tuple(index)]


def _carries_weights(node: Any, values: Mapping[str, np.ndarray]) -> bool:
    """Whether a float tensor other than a scalar or zeros (an exporter's initial states) feeds ``node``."""
    return any(i in values and values[i].dtype.kind == "f" and values[i].size > 1 and np.any(values[i])
               for i in node.input)


def _step_selections(graph: Any, values: Mapping[str, np.ndarray]) -> tuple[set[str], set[str]]:
    """Where a one-direction recurrent node's output is cut down to its last step, as exporters write
    ``fc(out[:, -1])`` and ``fc(h_n[-1])``: the Gather nodes that do it, and the recurrent nodes whose
    last step alone is used.

    Axes are followed by name from the operator's ``Y`` (time, direction, batch, hidden) and ``Y_h``
    (direction, batch, hidden) through Transpose, Squeeze, Reshape and Identity, so that a Gather is
    recognised only where the declared layout says it picks the last time step (or the one direction).
    """
    labels: dict[str, tuple[str, tuple[str, ...]]] = {}
    chosen: set[str] = set()
    last: set[str] = set()
    for node in graph.node:
        attrs = _attrs(node)
        if node.op_type in _KINDS:
            direction = attrs.get("direction", b"forward")
            if (direction.decode() if isinstance(direction, bytes) else direction) == "bidirectional":
                continue
            batch_major = attrs.get("layout", 0) == 1  # Y (B, T, D, H) and Y_h (B, D, H)
            labels[node.output[0]] = (node.name, ("B", "T", "D", "H") if batch_major else ("T", "D", "B", "H"))
            if len(node.output) > 1 and node.output[1]:
                labels[node.output[1]] = (node.name, ("B", "D", "H") if batch_major else ("D", "B", "H"))
            continue
        if not node.input or node.input[0] not in labels or not node.output:
            continue
        owner, axes = labels[node.input[0]]
        if node.op_type == "Identity":
            pass
        elif node.op_type == "Transpose":
            perm = attrs.get("perm", list(range(len(axes) - 1, -1, -1)))
            if sorted(perm) != list(range(len(axes))):
                continue
            axes = tuple(axes[p] for p in perm)
        elif node.op_type == "Squeeze":
            cut = values.get(node.input[1]) if len(node.input) > 1 else attrs.get("axes")
            cut = np.asarray(cut) if cut is not None else np.zeros(0, np.int64)
            cut = [int(a) % len(axes) for a in cut.reshape(-1)] if cut.ndim <= 1 and cut.dtype.kind in "iu" else []
            if not cut or any(axes[a] != "D" for a in cut):
                continue
            axes = tuple(a for k, a in enumerate(axes) if k not in cut)
        elif node.op_type == "Reshape":  # (..., D, H) -> (..., D*H): with one direction, H
            shape = values.get(node.input[1]) if len(node.input) > 1 else None
            if shape is None or shape.ndim != 1 or len(shape) != len(axes) - 1 or axes[-2:] != ("D", "H"):
                continue
            axes = axes[:-2] + ("H",)
        elif node.op_type == "Gather":
            index = values.get(node.input[1]) if len(node.input) > 1 else None
            axis = attrs.get("axis", 0)
            if type(axis) is not int:
                continue
            axis %= len(axes)
            if index is None or index.ndim != 0 or index.dtype.kind not in "iu" or axes[axis] not in ("T", "D") or \
                    (axes[axis] == "T" and int(index) != -1) or (axes[axis] == "D" and int(index) not in (0, -1)):
                continue
            chosen.add(node.name)
            if axes[axis] == "T":
                last.add(owner)
            axes = tuple(a for k, a in enumerate(axes) if k != axis)
        else:
            continue
        labels[node.output[0]] = (owner, axes)
    return chosen, last


# -- running ------------------------------------------------------------------------------------------


def input_dims(path: str | os.PathLike) -> list[int | None]:
    """The dimensions of the model's first input: an int where the graph fixes it, else None."""
    proto = _load(Path(path))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]

