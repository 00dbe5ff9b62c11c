"""Keras adapter: Keras layers and models <-> the canonical form.

Keras stores the layers this adapter knows as (``H`` = units)::

    LSTM       kernel (input, 4H), recurrent_kernel (H, 4H), bias (4H,)     blocks i, f, c, o
    GRU        kernel (input, 3H), recurrent_kernel (H, 3H), bias (2, 3H)   blocks z, r, h; with
               reset_after=True row 0 of the bias is input-side, row 1 recurrent-side; (3H,) without
    SimpleRNN  kernel (input, H), recurrent_kernel (H, H), bias (H,)
    Dense      kernel (in, out), bias (out,)
    Embedding  embeddings (input_dim, output_dim)
    Conv1D     kernel (kernel_size, in // groups, filters), bias (filters,)
    BatchNormalization  gamma, beta, moving_mean, moving_variance (features,)
    LayerNormalization  gamma, beta (features,)

``Activation``, ``Flatten``, ``GlobalAveragePooling1D`` and ``GlobalMaxPooling1D`` hold none.

Recurrent layers may also come as cells (``LSTMCell``, ``GRUCell``,
``SimpleRNNCell``), as a cell inside ``keras.layers.RNN``, or wrapped in
``Bidirectional`` (a forward and a backward layer). A single bias becomes the
canonical ``b_x`` with zeros in ``b_h``; writing sums the two canonical biases
(rounded once, from float64) where Keras keeps one. Dense kernels are
transposed into the canonical (out, in) weight.

The first half of this module is NumPy only and is shared with the file
readers (``keras_files``), which must not import Keras. The second half works
on live Keras objects through public API only, so any backend works.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._lazy import np

from .._optional import require
from ..activations import ACTIVATIONS
from ..canonical import (
    Activation,
    BatchNorm,
    Conv1D,
    Dense,
    Embedding,
    Flatten,
    Gate,
    Layer,
    LayerNorm,
    Masking,
    Model,
    Pooling,
    RecurrentLayer,
    with_settings,
)
from ..errors import ConfigError, ShapeError, UnsupportedError
from ..gates import join, join_bias, layout, split, split_bias
from . import refuse_cell_features

RECURRENT = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
CELLS = {"LSTMCell": "lstm", "GRUCell": "gru", "SimpleRNNCell": "rnn"}
_CLASSES = {kind: (layer, cell) for (layer, kind), (cell, _) in zip(RECURRENT.items(), CELLS.items())}
# Keras settings of recurrent layers that do not change what the model computes at inference, carried
# along in ``config["keras"]``; what they do change is in the canonical layer's own fields.
_RECURRENT_SETTINGS = ("unroll", "dropout", "recurrent_dropout")
# What a recurrent layer computes, as canonical fields: the Keras names are the same.
SEMANTICS = ("return_sequences", "return_state", "zero_output_for_mask", "stateful")
SETTINGS = {"Dense": (), "Embedding": (), "RNN": _RECURRENT_SETTINGS,
            **{c: _RECURRENT_SETTINGS for c in RECURRENT}, **{c: ("dropout", "recurrent_dropout") for c in CELLS}}
# Layers without weights that compute the identity at inference; files may contain them.
INFERENCE_IDENTITY = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "ActivityRegularization")
# The layers around recurrent ones, by class name: their variables (key -> the config flag that makes it,
# or None when always there), in the order Keras saves them.
AROUND = {"Conv1D": {"kernel": None, "bias": "use_bias"},
          "BatchNormalization": {"gamma": "scale", "beta": "center", "moving_mean": None, "moving_variance": None},
          "LayerNormalization": {"gamma": "scale", "beta": "center"},
          "Activation": {}, "Flatten": {}, "GlobalAveragePooling1D": {}, "GlobalMaxPooling1D": {}}
# Canonical kind -> Keras class, for writing.
_AROUND_CLASS = {"conv1d": "Conv1D", "batch_norm": "BatchNormalization", "layer_norm": "LayerNormalization",
                 "activation": "Activation", "flatten": "Flatten"}
SUPPORTED = ("LSTM", "GRU", "SimpleRNN", "LSTMCell", "GRUCell", "SimpleRNNCell", "RNN", "Bidirectional",
             "Dense", "TimeDistributed", "Embedding", "Masking", *AROUND)


def variables(class_name: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The variables of a Keras layer: key -> place in its ``.keras`` weights group.

    Keys are the variable names (``kernel``, ...), prefixed by ``forward/`` or
    ``backward/`` inside a Bidirectional.
    """
    if class_name == "TimeDistributed":
        inner_class, inner = _time_distributed(config)
        return {key: f"layer/{place}" for key, place in variables(inner_class, inner).items()}
    if class_name == "Dense":
        return {t: f"vars/{i}" for i, t in enumerate(("kernel", "bias")[: 2 if config.get("use_bias", True) else 1])}
    if class_name == "Masking":
        return {}
    if class_name in AROUND:
        present = [key for key, flag in AROUND[class_name].items() if flag is None or config.get(flag, True)]
        return {key: f"vars/{i}" for i, key in enumerate(present)}
    if class_name == "Embedding":
        return {"embeddings": "vars/0"}
    kind, inner, wrapper = _recurrent(class_name, config)
    names = layout("keras", kind).tensors[: 3 if inner.get("use_bias", True) else 2]
    if wrapper == "Bidirectional":
        return {f"{side}/{t}": f"{side}_layer/cell/vars/{i}" for side in ("forward", "backward")
                for i, t in enumerate(names)}
    where = "vars" if wrapper == "cell" else "cell/vars"
    return {t: f"{where}/{i}" for i, t in enumerate(names)}


def _time_distributed(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The Dense inside a ``TimeDistributed`` (named as the wrapper); UnsupportedError for any other layer."""
    inner = config.get("layer")
    inner_class = inner.get("class_name") if isinstance(inner, dict) else None
    if inner_class != "Dense" or not isinstance(inner.get("config"), dict):
        raise UnsupportedError(f"{config.get('name')}: TimeDistributed of {inner_class or 'an unknown layer'} is not "
                               "supported (a TimeDistributed(Dense) is)")
    return "Dense", {**inner["config"], "name": config.get("name")}


def _recurrent(class_name: str, config: Mapping[str, Any]) -> tuple[str, Mapping[str, Any], str | None]:
    """(kind, the configuration with units and activations, wrapper) of a recurrent Keras layer."""
    name = config.get("name", class_name)
    if class_name in RECURRENT:
        return RECURRENT[class_name], config, None
    if class_name in CELLS:
        return CELLS[class_name], config, "cell"
    if class_name in ("RNN", "Bidirectional"):
        inner = config.get("cell" if class_name == "RNN" else "layer")
        allowed = CELLS if class_name == "RNN" else RECURRENT
        inner_class = inner.get("class_name") if isinstance(inner, dict) else None
        if inner_class not in allowed or not isinstance(inner.get("config"), dict):
            raise UnsupportedError(f"{name}: {class_name} of {inner_class or 'an unknown layer'} is not supported "
                                   f"(supported inside {class_name}: {', '.join(allowed)})")
        return allowed[inner_class], inner["config"], class_name
    raise UnsupportedError(f"{name}: Keras layer {class_name} is not supported (supported: {', '.join(SUPPORTED)})")


def layer_from_config(class_name: str, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], *,
                      keras_version: str, source: Mapping[str, str], features: int | None = None,
                      steps: int | None = None, rank: int = 3) -> Layer:
    """A canonical layer from a Keras layer's config and its variables by key (NumPy only).

    ``features`` is the size of the layer's input where the variables cannot tell it (a Masking layer, an
    activation, a pooling), ``steps`` the length of its input sequence (a Flatten needs it), ``rank`` the number
    of its input's axes with the batch (3 for a sequence), which a normalisation's positive ``axis`` counts.
    """
    name = config["name"]
    if class_name == "TimeDistributed":  # a Dense on every step is what a Dense computes on a sequence
        class_name, config = _time_distributed(config)
    expected = variables(class_name, config)
    if set(tensors) != set(expected):
        raise ShapeError(f"{name}: expected Keras variables {list(expected)}, got {sorted(tensors)}")
    if config.get("time_major"):
        raise UnsupportedError(f"{name}: time_major=True (tf.keras 2 input of shape (time, batch, features)) is "
                               "not supported; save the model with time_major=False")
    settings = {"keras": {key: config[key] for key in SETTINGS.get(class_name, ()) if key in config}}
    if class_name == "Masking":
        if features is None:
            raise UnsupportedError(f"{name}: a Masking layer must be followed by a layer whose input size is known")
        return Masking(name=name, size=features, mask_value=float(config.get("mask_value", 0.0)), config=settings,
                       source=source)
    if class_name in AROUND:
        return _around(class_name, config, tensors, keras_version, settings, source, features, steps, rank)
    if class_name == "Dense":
        activation = _activation(name, "activation", config.get("activation", "linear"), keras_version)
        kernel = tensors["kernel"]
        if kernel.ndim != 2 or kernel.shape[1] != config["units"]:
            raise ShapeError(f"{name}.kernel: expected shape (in, {config['units']}), got {kernel.shape}")
        return Dense(name=name, weight=kernel.T, bias=tensors.get("bias"), activation=activation,
                     config=settings, source=source)
    if class_name == "Embedding":
        table = tensors["embeddings"]
        want = (config["input_dim"], config["output_dim"])
        if table.shape != want:
            raise ShapeError(f"{name}.embeddings: expected shape {want}, got {table.shape}")
        return Embedding(name=name, weight=table, mask_zero=bool(config.get("mask_zero", False)), config=settings,
                         source=source)
    kind, inner, wrapper = _recurrent(class_name, config)
    go_backwards = bool(config.get("go_backwards", False))
    merge_mode = "concat"
    semantics = {key: bool(config[key]) for key in SEMANTICS if key in config}
    if wrapper == "Bidirectional":
        settings["keras"] = {key: inner[key] for key in _RECURRENT_SETTINGS if key in inner}
        semantics = {key: bool(inner[key]) for key in SEMANTICS if key in inner}
        if inner.get("time_major"):
            raise UnsupportedError(f"{name}: time_major=True (tf.keras 2 input of shape (time, batch, features)) "
                                   "is not supported; save the model with time_major=False")
        merge_mode = config.get("merge_mode", "concat")
        if merge_mode is None:
            raise UnsupportedError(f"{name}: Bidirectional merge_mode=None returns the two directions as two "
                                   "outputs, which is not supported; use concat, sum, mul or ave")
        if inner.get("go_backwards"):
            raise UnsupportedError(f"{name}: a Bidirectional whose forward layer has go_backwards=True runs "
                                   "backwards twice; this is not supported")
        go_backwards = False
    elif wrapper == "RNN":
        settings["keras"]["wrapper"] = "RNN"
    activations = {"activation": _activation(name, "activation", inner.get("activation", "tanh"), keras_version)}
    if kind != "rnn":
        activations["recurrent_activation"] = _activation(name, "recurrent_activation",
                                                          inner.get("recurrent_activation", "sigmoid"), keras_version)
    lay = layout("keras", kind)
    hidden = int(inner["units"])
    reset_after = bool(inner.get("reset_after", True)) if kind == "gru" else True
    sides = ("forward", "backward") if wrapper == "Bidirectional" else ("",)
    gates = {}
    for side, direction in zip(sides, ("forward", "reverse")):
        prefix = f"{side}/" if side else ""
        label = f"{name}.{prefix}"
        blocks = {"W_x": split(lay, tensors[f"{prefix}kernel"], hidden, f"{label}kernel"),
                  "W_h": split(lay, tensors[f"{prefix}recurrent_kernel"], hidden, f"{label}recurrent_kernel")}
        if f"{prefix}bias" in tensors:
            blocks["b_x"], blocks["b_h"] = split_bias(lay, [tensors[f"{prefix}bias"]], hidden, f"{label}bias",
                                                      reset_after=reset_after)
        for g in lay.order:
            gates[(0, direction, g)] = Gate(**{role: b[g] for role, b in blocks.items()})
    return RecurrentLayer(
        kind=kind, input_size=int(tensors[f"{sides[0]}/kernel" if sides[0] else "kernel"].shape[0]),
        hidden_size=hidden, directions=len(sides), bias=bool(inner.get("use_bias", True)), gates=gates, name=name,
        reset_after=reset_after, go_backwards=go_backwards, cell=wrapper in ("cell", "RNN"), merge_mode=merge_mode,
        config=settings, source=source, **activations, **semantics)


def _one(config: Mapping[str, Any], key: str, default: Any) -> Any:
    """A Keras setting that is a 1-tuple for 1-D layers (``kernel_size``, ``strides``), as a single value."""
    value = config.get(key, default)
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value


def _around(class_name: str, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], keras_version: str,
            settings: dict, source: Mapping[str, str], features: int | None, steps: int | None,
            rank: int = 3) -> Layer:
    """A layer around the recurrent ones (see :data:`AROUND`)."""
    name = config["name"]

    def refuse(what: str) -> UnsupportedError:
        return UnsupportedError(f"{name}: {class_name} with {what} is not supported; keep it in Keras, or select the "
                                "layers around it with --only")

    if config.get("data_format", "channels_last") != "channels_last":
        raise refuse(f"data_format={config.get('data_format')!r} (only channels_last, the Keras default)")
    if class_name == "Conv1D":
        kernel = tensors["kernel"]
        size, stride, dilation = (_one(config, k, 1) for k in ("kernel_size", "strides", "dilation_rate"))
        if kernel.ndim != 3 or kernel.shape[0] != size or kernel.shape[2] != config.get("filters"):
            raise ShapeError(f"{name}.kernel: expected shape ({size}, in, {config.get('filters')}), got {kernel.shape}")
        if stride != 1 and dilation != 1:
            raise refuse(f"strides={stride} and dilation_rate={dilation} together (Keras refuses it too)")
        try:
            padding = Conv1D.padding_of(config.get("padding", "valid"), int(size), int(dilation), int(stride))
            return Conv1D(name=name, weight=np.transpose(kernel, (2, 1, 0)), bias=tensors.get("bias"),
                          stride=int(stride), dilation=int(dilation), groups=int(config.get("groups", 1)),
                          padding=padding, config=settings, source=source,
                          activation=_activation(name, "activation", config.get("activation", "linear"),
                                                 keras_version))
        except ConfigError as exc:
            raise refuse(str(exc).split(": ", 1)[-1]) from None
    if class_name in ("BatchNormalization", "LayerNormalization"):
        axis = config.get("axis", -1)
        if axis not in (-1, [-1], (-1,), rank - 1, [rank - 1], (rank - 1,)):  # tf.keras saves it positive
            raise refuse(f"axis={axis!r} (only the last axis, the features)")
        for flag in ("renorm", "rms_scaling"):
            if config.get(flag):
                raise refuse(f"{flag}=True")
        epsilon = float(config.get("epsilon", 1e-3))
        roles = {"scale": tensors.get("gamma"), "offset": tensors.get("beta")}
        if class_name == "LayerNormalization":
            size = next((a.shape[0] for a in roles.values() if a is not None and a.ndim == 1), features)
            if size is None:
                raise UnsupportedError(f"{name}: the size of a LayerNormalization without gamma and beta is not known")
            return LayerNorm(name=name, size=int(size), epsilon=epsilon, config=settings, source=source, **roles)
        return BatchNorm(name=name, mean=tensors["moving_mean"], variance=tensors["moving_variance"],
                         epsilon=epsilon, momentum=1.0 - float(config.get("momentum", 0.99)), config=settings,
                         source=source, **roles)
    if features is None:
        raise UnsupportedError(f"{name}: the size of the input of a {class_name} is not known (it must follow a "
                               "layer, or the model's input, whose size is)")
    if class_name == "Activation":
        return Activation(name=name, size=features, config=settings, source=source,
                          activation=_activation(name, "activation", config.get("activation"), keras_version))
    if config.get("keepdims"):
        raise refuse("keepdims=True")
    if class_name == "Flatten":
        if steps is None:
            raise UnsupportedError(f"{name}: a Flatten needs the number of steps, and the model's input length is "
                                   "not fixed")
        return Flatten(name=name, steps=steps, size=features, config=settings, source=source)
    mode = "average" if class_name == "GlobalAveragePooling1D" else "max"
    return Pooling(name=name, mode=mode, size=features, config=settings, source=source)


def chain(entries: list[tuple[str, Mapping[str, Any], Mapping[str, np.ndarray]]], shape: Sequence | None,
          build: Callable[..., Layer]) -> list[Layer]:
    """Build a model's layers from ``(class name, config, tensors)`` in order, with ``build(class name, config,
    tensors, features, steps, rank)``; ``shape`` is the model's input without the batch (None when not known).
    A layer's input size and length are the model's input's for the first, the layer before's output
    after it; a weightless layer whose input is not known that way takes the next layer's input size."""
    features = int(shape[-1]) if shape and len(shape) >= 2 and shape[-1] is not None else None
    steps = shape[0] if shape else None
    layers: list[Layer | None] = []
    deferred = []
    sequence = True
    for index, (class_name, config, tensors) in enumerate(entries):
        if features is None and not tensors and class_name not in ("Embedding",):
            layers.append(None)
            deferred.append(index)
            continue
        layer = build(class_name, config, tensors, features, steps, 3 if sequence else 2)
        layers.append(layer)
        features = layer.output_size
        if isinstance(layer, Conv1D) and steps is not None:
            steps = layer.output_length(steps)
        elif isinstance(layer, (Flatten, Pooling)) or (isinstance(layer, RecurrentLayer)
                                                        and not layer.return_sequences):
            steps, sequence = None, False
    following = None
    for index in range(len(entries) - 1, -1, -1):
        if layers[index] is None:
            class_name, config, tensors = entries[index]
            layers[index] = build(class_name, config, tensors, following, None, 3)
        following = getattr(layers[index], "input_size", None)
    return layers  # type: ignore[return-value]


def layer_tensors(layer: Layer) -> dict[str, np.ndarray]:
    """The Keras variables of a canonical single-layer layer, by key (NumPy only)."""
    check_representable(layer)
    layer = keras_form(layer)
    if isinstance(layer, Masking):
        return {}
    if isinstance(layer, Dense):
        out = {"kernel": np.ascontiguousarray(layer.weight.T)}
        if layer.bias is not None:
            out["bias"] = np.asarray(layer.bias)
        return out
    if isinstance(layer, Embedding):
        return {"embeddings": np.asarray(layer.weight)}
    if isinstance(layer, Conv1D):
        out = {"kernel": np.ascontiguousarray(np.transpose(layer.weight, (2, 1, 0)))}
        return out | ({"bias": np.asarray(layer.bias)} if layer.bias is not None else {})
    if isinstance(layer, (BatchNorm, LayerNorm)):
        out = {key: np.asarray(value) for key, value in (("gamma", layer.scale), ("beta", layer.offset))
               if value is not None}
        if isinstance(layer, BatchNorm):
            out |= {"moving_mean": np.asarray(layer.mean), "moving_variance": np.asarray(layer.variance)}
        return out
    if not isinstance(layer, RecurrentLayer):
        return {}
    if layer.num_layers != 1:
        raise UnsupportedError(f"{layer.name}: unstack() a stacked layer into Keras layers first")
    lay = layout("keras", layer.kind)
    out = {}
    for direction in layer.direction_names:
        prefix = "" if layer.directions == 1 else ("forward/" if direction == "forward" else "backward/")
        gates = {g: layer.gates[(0, direction, g)] for g in lay.order}
        out[prefix + "kernel"] = join(lay, {g: v.W_x for g, v in gates.items()})
        out[prefix + "recurrent_kernel"] = join(lay, {g: v.W_h for g, v in gates.items()})
        if not layer.bias:
            continue
        (out[prefix + "bias"],) = join_bias(lay, {g: v.b_x for g, v in gates.items()},
                                            {g: v.b_h for g, v in gates.items()}, reset_after=layer.reset_after)
    return out


def keras_form(layer: Layer) -> Layer:
    """``layer`` as Keras holds it. A reverse-only layer (ONNX ``direction='reverse'``) whose last step only
    is used is a Keras ``go_backwards=True`` layer: both read the sequence from its end, and the last step
    of the one is the final state of the other. (Its whole output sequence is not: Keras returns it in
    reading order, ONNX in time order.)"""
    if not isinstance(layer, RecurrentLayer) or not layer.backward or layer.return_sequences:
        return layer
    import dataclasses

    return dataclasses.replace(layer, backward=False, go_backwards=True,
                               gates={(i, "forward", g): v for (i, _, g), v in layer.gates.items()},
                               peepholes={(i, "forward", g): v for (i, _, g), v in layer.peepholes.items()})


def check_representable(layer: Layer) -> None:
    """Raise UnsupportedError unless Keras layers can compute ``layer`` exactly."""
    keep = "keep it in a safetensors archive"
    if isinstance(layer, RecurrentLayer) and layer.return_sequences and layer.cell_features() == [
            "a single reverse direction"]:
        raise UnsupportedError(f"{layer.name}: a reverse-only ONNX layer whose whole output sequence is used has no "
                               "Keras equivalent: go_backwards=True returns the sequence in reading order, ONNX in "
                               "time order (it is exact when only the last step is used: return_sequences=false); "
                               f"{keep}, or keep it in ONNX")
    _recorded(layer)
    layer = keras_form(layer)
    activations = [("activation", layer.activation)] if isinstance(layer, (Dense, Conv1D, Activation)) else []
    if isinstance(layer, Conv1D):
        _keras_padding(layer)
        if layer.stride != 1 and layer.dilation != 1:
            raise UnsupportedError(f"{layer.name}: a convolution with stride {layer.stride} and dilation "
                                   f"{layer.dilation} has no Keras Conv1D (it takes one or the other); {keep}")
    if isinstance(layer, RecurrentLayer):
        refuse_cell_features(layer, "Keras")
        if layer.proj_size:
            raise UnsupportedError(f"{layer.name}: an LSTM with proj_size={layer.proj_size} (weight_hr) has no Keras "
                                   f"equivalent; {keep}")
        activations = [("activation", layer.activation)]
        if layer.kind != "rnn":
            activations.append(("recurrent_activation", layer.recurrent_activation))
    for attr, value in activations:
        if value == "hard_sigmoid_keras2":
            raise UnsupportedError(f"{layer.name}: {attr} is Keras 2's hard_sigmoid (0.2x + 0.5), which Keras 3 "
                                   f"no longer has (its hard_sigmoid is x/6 + 0.5); {keep}")


def _keras_padding(layer: Conv1D) -> str:
    """Keras' name for the convolution's padding; UnsupportedError when Keras has none."""
    span = (layer.kernel_size - 1) * layer.dilation
    names = {(0, 0): "valid", (span, 0): "causal", (span // 2, span - span // 2): "same"}
    if layer.padding == "same":
        return "same"
    if layer.padding in names and (layer.stride == 1 or names[layer.padding] == "valid"):  # type: ignore[index]
        return names[layer.padding]  # type: ignore[index]
    raise UnsupportedError(f"{layer.name}: padding {layer.padding} (zeros before, after) with kernel size "
                           f"{layer.kernel_size}, dilation {layer.dilation} and stride {layer.stride} is none of "
                           "Keras' valid, same and causal; keep it in a safetensors archive or PyTorch")


def keras_activation(value: str) -> str:
    return "hard_sigmoid" if value.startswith("hard_sigmoid_") else value


def _activation(name: str, attr: str, value: Any, keras_version: str) -> str:
    if not isinstance(value, str):
        raise UnsupportedError(f"{name}: {attr} {value!r} is a custom function; only named activations can "
                               f"be converted ({sorted(ACTIVATIONS)})")
    if value == "hard_sigmoid":  # its definition changed with Keras 3
        return "hard_sigmoid_keras2" if keras_version.split(".")[0] in ("1", "2") else "hard_sigmoid_keras3"
    value = {"swish": "silu"}.get(value, value)
    if value not in ACTIVATIONS:
        raise UnsupportedError(f"{name}: {attr} {value!r} is not supported; supported: {sorted(ACTIVATIONS)}")
    return value


# -- live Keras objects ---------------------------------------------------------------------------


def read(obj: Any) -> Layer | Model:
    """Read a built Keras layer (see :data:`SUPPORTED`), or a model made of them."""
    keras = require("keras")
    source = {"framework": "keras", "framework_version": keras.__version__, "backend": keras.backend.backend()}
    if isinstance(obj, keras.Model):
        kept = [layer for layer in obj.layers if type(layer).__name__ != "InputLayer"]
        skipped = [f"{layer.name} ({type(layer).__name__})" for layer in kept
                   if type(layer).__name__ in INFERENCE_IDENTITY]
        kept = [layer for layer in kept if type(layer).__name__ not in INFERENCE_IDENTITY]
        shape = [None if d is None else int(d) for d in obj.inputs[0].shape] if obj.inputs else None
        by_name = {layer.name: layer for layer in kept}
        entries = [(layer.name, {}, _layer_has_weights(keras, layer)) for layer in kept]
        layers = chain(entries, shape[1:] if shape else None,
                       lambda name, _config, _tensors, features, steps, rank: _read_layer(
                           keras, by_name[name], source, features=features, steps=steps, rank=rank))
        config = {"keras": {"name": obj.name, **({"skipped": skipped} if skipped else {})}}
        return Model(tuple(layers), config=config, source=source,
                     input_shape=tuple(shape[1:]) if shape else None, batch_size=shape[0] if shape else None,
                     input_dtype=str(obj.inputs[0].dtype) if obj.inputs else None)
    return _read_layer(keras, obj, source)


def _class_name(keras, layer: Any) -> str:
    for name in SUPPORTED:  # subclasses before their bases: LSTM before RNN
        if isinstance(layer, getattr(keras.layers, name)):
            return name
    return type(layer).__name__


def _owners(layer: Any, class_name: str) -> dict[str, Any]:
    """The objects holding the variables, by key prefix."""
    if class_name == "Bidirectional":
        return {"forward/": layer.forward_layer.cell, "backward/": layer.backward_layer.cell}
    if class_name in CELLS or class_name in ("Dense", "Embedding", "Masking", *AROUND):
        return {"": layer}
    return {"": layer.cell}


def _layer_has_weights(keras, layer: Any) -> dict[str, bool]:
    """A stand-in for the tensors :func:`chain` asks about: empty when the layer holds no variables."""
    return {"weights": True} if layer.weights else {}


def _read_layer(keras, layer: Any, source: Mapping[str, str], features: int | None = None,
                steps: int | None = None, rank: int = 3) -> Layer:
    name = getattr(layer, "name", type(layer).__name__)
    class_name = _class_name(keras, layer)
    config = layer.get_config() if hasattr(layer, "get_config") else {"name": name}
    expected = variables(class_name, config)
    if not layer.built:
        raise ShapeError(f"{name}: the layer is not built; call it on an input or "
                         "build((None, None, features)) first")
    owners = _owners(layer, class_name)
    tensors = {}
    for key in expected:
        prefix, _, tensor = key.rpartition("/")
        owner = owners[prefix + "/" if prefix else ""]
        tensors[key] = np.array(keras.ops.convert_to_numpy(getattr(owner, tensor)), copy=True)
    return layer_from_config(class_name, config, tensors, keras_version=keras.__version__, source=source,
                             features=features, steps=steps, rank=rank)


def write(weights: Layer | Model, target: Any = None, *, settings: Mapping[str, Mapping[str, Any]] | None = None,
          **options: Any) -> Any:
    """Write a canonical layer as a new built Keras layer (or into ``target``); a model as ``keras.Sequential``.

    A stacked recurrent layer becomes a list of Keras layers, one per stacked
    layer. A new layer computes what the canonical layer says (``return_sequences``
    and the rest; a recurrent layer read from PyTorch returns full sequences, as
    PyTorch's modules do). For a single layer, keyword arguments are Keras
    arguments that override it; for a model, ``settings`` maps layer names to
    canonical settings (``{"lstm": {"return_sequences": False}}``), checked by
    :func:`lstm_convert.canonical.with_settings`.
    """
    keras = require("keras")
    if isinstance(weights, Model):
        if options:
            raise UnsupportedError(f"{', '.join(sorted(options))}: for a whole model, say which layer they are "
                                   "for: settings={'<layer name>': {...}}")
        return _write_model(keras, with_settings(weights, settings or {}))
    if settings:
        weights = with_settings(Model((weights,)), settings).layers[0]
    settings = options
    if isinstance(weights, RecurrentLayer) and weights.num_layers > 1:
        if target is not None:
            raise UnsupportedError(f"{weights.name}: a stacked layer becomes several Keras layers; "
                                   "write each of unstack() into its own target")
        return [write(part, **settings) for part in weights.unstack()]
    values = layer_tensors(weights)
    if target is None:
        target = new_layer(keras, weights, **settings)
        target.build(_input_shape(weights))
    else:
        _check_target(keras, weights, target)
    assign(keras, weights.name, target, values)
    return target


def new_layer(keras, weights: Layer, *, in_model: bool = False, **settings: Any) -> Any:
    """An unbuilt Keras layer configured like ``weights`` (single-layer); ``settings`` are Keras arguments
    that override it. Built by Keras from :func:`layer_spec`, the same description a ``.keras`` file
    written without Keras holds."""
    return keras.layers.deserialize(layer_spec(weights, in_model=in_model, **settings))


def _spec(class_name: str, **config: Any) -> dict[str, Any]:
    """A Keras layer as Keras serializes it: its class and the arguments it is built with (Keras' own
    defaults for the rest)."""
    return {"module": "keras.layers", "class_name": class_name, "config": config, "registered_name": None}


def layer_spec(weights: Layer, *, in_model: bool = False, **settings: Any) -> dict[str, Any]:
    """The serialized Keras layer (``{"module", "class_name", "config", "registered_name"}``) that computes
    ``weights`` (single-layer); ``settings`` are Keras arguments that override it."""
    recorded = _recorded(weights)
    if isinstance(weights, Masking):
        return _spec("Masking", mask_value=weights.mask_value, name=weights.name, **settings)
    if isinstance(weights, Dense):
        return _spec("Dense", units=weights.out_features, use_bias=weights.bias is not None, name=weights.name,
                     activation=keras_activation(weights.activation), dtype=weights.dtype, **recorded, **settings)
    if isinstance(weights, Embedding):
        return _spec("Embedding", input_dim=weights.num_embeddings, output_dim=weights.embedding_dim,
                     name=weights.name, dtype=weights.dtype,
                     **{"mask_zero": weights.mask_zero, **recorded, **settings})
    if not isinstance(weights, RecurrentLayer):
        check_representable(weights)
        return _around_spec(weights, settings)
    check_representable(weights)
    weights = keras_form(weights)
    layer_class, cell_class = _CLASSES[weights.kind]
    options: dict[str, Any] = {"use_bias": weights.bias, "dtype": weights.dtype,
                               "activation": keras_activation(weights.activation)}
    if weights.kind != "rnn":
        options["recurrent_activation"] = keras_activation(weights.recurrent_activation)
    if weights.kind == "gru":
        options["reset_after"] = weights.reset_after
    wrapper = recorded.pop("wrapper", None)
    semantics = {key: getattr(weights, key) for key in SEMANTICS}
    if weights.directions == 2:
        semantics.pop("zero_output_for_mask")  # Bidirectional sets it itself
    if weights.cell:
        cell_options = {k: v for k, v in recorded.items() if k in SETTINGS[cell_class]}
        if wrapper != "RNN" and not in_model:
            return _spec(cell_class, units=weights.hidden_size, name=weights.name, **options, **cell_options)
        cell = _spec(cell_class, units=weights.hidden_size, name=f"{weights.name}_cell", **options, **cell_options)
        layer_options = {**semantics, **{k: v for k, v in recorded.items() if k in _RECURRENT_SETTINGS
                                         and k not in cell_options}, **settings}
        return _spec("RNN", cell=cell, name=weights.name, dtype=weights.dtype, **layer_options)
    layer_options = {**semantics, **recorded, **settings}
    if weights.directions == 2:
        inner = _spec(layer_class, units=weights.hidden_size, name=f"{weights.name}_layer", **options,
                      **layer_options)
        return _spec("Bidirectional", layer=inner, merge_mode=weights.merge_mode, name=weights.name)
    return _spec(layer_class, units=weights.hidden_size, name=weights.name, go_backwards=weights.go_backwards,
                 **options, **layer_options)


_VALID = {"unroll": lambda v: isinstance(v, bool), "wrapper": lambda v: v == "RNN",
          "dropout": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
          "recurrent_dropout": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1}


def _recorded(weights: Layer) -> dict[str, Any]:
    """The Keras settings a layer carries (``config["keras"]``), each checked: one that a file holds and
    that is not a setting of this kind of layer, or has a value Keras would reject, is refused by name
    (UnsupportedError: the layer cannot be written to Keras as it stands)."""
    recorded = weights.config.get("keras", {})
    if not isinstance(recorded, Mapping):
        raise ConfigError(f"{weights.name}: config['keras'] must map Keras settings to values, got {recorded!r}")
    allowed = (*_RECURRENT_SETTINGS, "wrapper") if isinstance(weights, RecurrentLayer) else ()
    for key, value in recorded.items():
        if key not in allowed:
            expected = f"one of {', '.join(allowed)}" if allowed else "none for this kind of layer"
            raise UnsupportedError(f"{weights.name}: config['keras'] holds {key!r}, which is not a Keras setting "
                                   f"lstm_convert carries ({expected})")
        if not _VALID[key](value):
            raise UnsupportedError(f"{weights.name}: config['keras'][{key!r}] is {value!r}, which Keras does not "
                                   "take")
    return dict(recorded)


def _around_spec(weights: Layer, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The serialized Keras layer for one of the layers around the recurrent ones."""
    options: dict[str, Any] = {"name": weights.name, **settings}
    if weights.dtype is not None:
        options["dtype"] = weights.dtype
    if isinstance(weights, Conv1D):
        return _spec("Conv1D", filters=weights.out_channels, kernel_size=weights.kernel_size, strides=weights.stride,
                     padding=_keras_padding(weights), dilation_rate=weights.dilation, groups=weights.groups,
                     activation=keras_activation(weights.activation), use_bias=weights.bias is not None, **options)
    if isinstance(weights, BatchNorm):
        return _spec("BatchNormalization", epsilon=weights.epsilon, center=weights.offset is not None,
                     scale=weights.scale is not None,
                     momentum=0.99 if weights.momentum is None else 1.0 - weights.momentum, **options)
    if isinstance(weights, LayerNorm):
        return _spec("LayerNormalization", epsilon=weights.epsilon, center=weights.offset is not None,
                     scale=weights.scale is not None, **options)
    if isinstance(weights, Activation):
        return _spec("Activation", activation=keras_activation(weights.activation), **options)
    if isinstance(weights, Flatten):
        return _spec("Flatten", **options)
    return _spec("GlobalAveragePooling1D" if weights.mode == "average" else "GlobalMaxPooling1D", **options)


def assign(keras, name: str, target: Any, values: Mapping[str, np.ndarray]) -> None:
    """Set a built Keras layer's variables by key, checking every shape before changing any."""
    owners = _owners(target, _class_name(keras, target))
    variables_ = {}
    for key in values:
        prefix, _, tensor = key.rpartition("/")
        variables_[key] = getattr(owners[prefix + "/" if prefix else ""], tensor)
    for key, variable in variables_.items():
        if tuple(variable.shape) != values[key].shape:
            raise ShapeError(f"{name}.{key}: the target Keras layer {target.name!r} holds "
                             f"shape {tuple(variable.shape)}, expected {values[key].shape}")
    for key, variable in variables_.items():
        variable.assign(values[key].astype(variable.dtype))


def _input_shape(weights: Layer) -> tuple:
    if isinstance(weights, Embedding):
        return (None, None)
    if isinstance(weights, RecurrentLayer) and weights.cell and weights.config.get("keras", {}).get("wrapper") != "RNN":
        return (None, weights.input_size)
    return (None, None, weights.input_size)


def _check_target(keras, weights: Layer, target: Any) -> None:
    probe = new_layer(keras, weights)
    if type(target) is not type(probe):
        raise UnsupportedError(f"{weights.name}: cannot write into {type(target).__name__}, "
                               f"expected keras.layers.{type(probe).__name__}")
    if not target.built:
        target.build(_input_shape(weights))
    if isinstance(weights, RecurrentLayer):
        config = target.get_config()
        inner = _recurrent(_class_name(keras, target), config)[1]
        wanted = {"units": weights.hidden_size, "use_bias": weights.bias,
                  "activation": keras_activation(weights.activation)}
        if weights.kind != "rnn":
            wanted["recurrent_activation"] = keras_activation(weights.recurrent_activation)
        if weights.kind == "gru":
            wanted["reset_after"] = weights.reset_after
        for key, value in wanted.items():
            if inner.get(key) != value:
                raise ShapeError(f"{weights.name}: the target Keras layer {target.name!r} has "
                                 f"{key}={inner.get(key)!r}, expected {key}={value!r}")


def model_parts(model: Model) -> tuple[list[Layer], tuple, str, str]:
    """What a Keras ``Sequential`` of ``model`` is made of, checked: its single layers, the input's shape
    (without the batch) and dtype, and the model's name."""
    layers_ = expand(model)
    check_chain(model)
    check_model(model)
    recorded = model.config.get("keras", {})
    first = layers_[0]
    shape = model.input_shape or ((None,) if isinstance(first, Embedding) else (None, first.input_size))
    dtype = model.input_dtype or ("int32" if isinstance(first, Embedding) else first.dtype)
    return layers_, tuple(shape), dtype, recorded.get("name") or "sequential"


def _write_model(keras, model: Model) -> Any:
    layers_, shape, dtype, name = model_parts(model)
    targets = [new_layer(keras, layer, in_model=True) for layer in layers_]
    # Every name given, none left to Keras' per-process counters: the same model gives the same file.
    inputs = keras.Input(batch_shape=(model.batch_size, *shape), dtype=dtype, name="input")
    built = keras.Sequential([inputs, *targets], name=name)
    for layer, target in zip(layers_, targets):
        assign(keras, layer.name, target, layer_tensors(layer))
    return built


def check_model(model: Model) -> None:
    """Raise UnsupportedError unless a Keras Sequential computes what ``model`` computes."""
    model.check_chain()
    name = model.config.get("keras", {}).get("name") if isinstance(model.config.get("keras"), Mapping) else None
    if name is not None and not (isinstance(name, str) and name.isidentifier()):
        raise UnsupportedError(f"the model's Keras name {name!r} is not one Keras takes")
    layers_ = expand(model)
    for index, layer in enumerate(layers_):
        if isinstance(layer, RecurrentLayer) and layer.stateful and model.batch_size is None:
            raise UnsupportedError(f"{layer.name}: stateful=True needs the model's batch size, which is not known")
        if isinstance(layer, RecurrentLayer) and layer.return_state and index != len(layers_) - 1:
            raise UnsupportedError(f"{layer.name}: return_state=True gives several outputs, which the next layer "
                                   "of a sequential model cannot take")


def expand(model: Model) -> list[Layer]:
    """The model's layers with stacked recurrent layers split into one Keras layer each."""
    out: list[Layer] = []
    for layer in model.layers:
        out.extend(layer.unstack() if isinstance(layer, RecurrentLayer) else [layer])
    return out


def check_chain(model: Model) -> None:
    """Raise UnsupportedError unless Keras layers hold every layer and run one after the other, as a
    Keras Sequential does."""
    for layer in expand(model):
        check_representable(layer)
    model.check_chain()
