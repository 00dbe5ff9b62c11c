"""Keras adapter: Keras layers and models <-> the canonical form.

Keras stores the layers this adapter knows as (``H`` = units)::

    LSTM       kernel (input, 4H), recurrent_kernel (H, 4H), bias (4H,)  column blocks i, f, c, o
    Dense      kernel (in, out), bias (out,)
    Embedding  embeddings (input_dim, output_dim)

An LSTM's single bias becomes the canonical ``b_x`` with zeros in ``b_h``;
writing sums the two canonical biases (rounded once, from float64). Dense
kernels are transposed into the canonical (out, in) weight.

The first half of this module is NumPy only and is shared with the file
readers (``keras_files``), which must not import Keras. The second half works
on live Keras objects through public API only, so any backend works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._optional import require
from ..activations import ACTIVATIONS
from ..canonical import Dense, Embedding, Gate, Layer, Model, RecurrentLayer
from ..errors import ShapeError, UnsupportedError
from ..gates import join, layout, split

# Settings of each Keras layer that are not weights and that we carry along.
SETTINGS = {
    "LSTM": ("return_sequences", "return_state", "stateful", "unroll", "dropout", "recurrent_dropout"),
    "Dense": (),
    "Embedding": ("mask_zero",),
}
# Layers without weights that compute the identity at inference; files may contain them.
INFERENCE_IDENTITY = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "ActivityRegularization")


def tensor_names(class_name: str, config: Mapping[str, Any]) -> tuple[str, ...]:
    """The variables of a Keras layer, in the order Keras creates them."""
    if class_name == "LSTM":
        return layout("keras", "lstm").tensors[: 3 if config.get("use_bias", True) else 2]
    if class_name == "Dense":
        return ("kernel", "bias") if config.get("use_bias", True) else ("kernel",)
    if class_name == "Embedding":
        return ("embeddings",)
    raise UnsupportedError(f"{config.get('name', class_name)}: Keras layer {class_name} is not supported "
                           "(supported: LSTM, Dense, Embedding)")


def layer_from_config(class_name: str, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], *,
                      keras_version: str, source: Mapping[str, str]) -> Layer:
    """A canonical layer from a Keras layer's config and its variables by name (NumPy only)."""
    name = config["name"]
    expected = tensor_names(class_name, config)
    if set(tensors) != set(expected):
        raise ShapeError(f"{name}: expected Keras variables {list(expected)}, got {sorted(tensors)}")
    settings = {"keras": {key: config[key] for key in SETTINGS[class_name] if key in config}}
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
        return Embedding(name=name, weight=table, config=settings, source=source)
    if config.get("go_backwards"):
        raise UnsupportedError(f"{name}: go_backwards=True is not supported yet")
    activations = {attr: _activation(name, attr, config[attr], keras_version)
                   for attr in ("activation", "recurrent_activation")}
    lay = layout("keras", "lstm")
    hidden = int(config["units"])
    blocks = {role: split(lay, tensors[tensor], hidden, f"{name}.{tensor}")
              for role, tensor in zip(("W_x", "W_h", "b_x"), expected)}
    if "bias" in tensors:
        blocks["b_h"] = split(lay, np.zeros_like(tensors["bias"]), hidden, f"{name}.bias")
    gates = {(0, "forward", g): Gate(**{role: b[g] for role, b in blocks.items()}) for g in lay.order}
    return RecurrentLayer(
        kind="lstm", input_size=int(tensors["kernel"].shape[0]), hidden_size=hidden,
        bias="bias" in tensors, gates=gates, name=name, config=settings, source=source, **activations)


def layer_tensors(layer: Layer) -> dict[str, np.ndarray]:
    """The Keras variables of a canonical layer, by name (NumPy only)."""
    check_representable(layer)
    if isinstance(layer, Dense):
        out = {"kernel": np.ascontiguousarray(layer.weight.T)}
        if layer.bias is not None:
            out["bias"] = np.asarray(layer.bias)
        return out
    if isinstance(layer, Embedding):
        return {"embeddings": np.asarray(layer.weight)}
    lay = layout("keras", layer.kind)
    gates = {g: layer.gates[(0, "forward", g)] for g in lay.order}
    out = {"kernel": join(lay, {g: v.W_x for g, v in gates.items()}),
           "recurrent_kernel": join(lay, {g: v.W_h for g, v in gates.items()})}
    if layer.bias:
        out["bias"] = join(lay, {g: (v.b_x.astype(np.float64) + v.b_h.astype(np.float64)).astype(v.b_x.dtype)
                                 for g, v in gates.items()})
    return out


def check_representable(layer: Layer) -> None:
    """Raise UnsupportedError unless a Keras layer can compute ``layer`` exactly."""
    activations = [("activation", layer.activation)] if isinstance(layer, Dense) else []
    if isinstance(layer, RecurrentLayer):
        if layer.num_layers != 1 or layer.directions != 1:
            raise UnsupportedError(
                f"{layer.name}: {layer.num_layers} stacked layer(s) and {layer.directions} direction(s) need "
                "several Keras layers or Bidirectional, which is not supported yet; "
                "keep it in a safetensors archive")
        activations = [("activation", layer.activation), ("recurrent_activation", layer.recurrent_activation)]
    for attr, value in activations:
        if value == "hard_sigmoid_keras2":
            raise UnsupportedError(
                f"{layer.name}: {attr} is Keras 2's hard_sigmoid (0.2x + 0.5), which Keras 3 no longer has; "
                "keep it in a safetensors archive")


def keras_activation(value: str) -> str:
    return "hard_sigmoid" if value.startswith("hard_sigmoid_") else value


def _activation(name: str, attr: str, value: Any, keras_version: str) -> str:
    if not isinstance(value, str):
        raise UnsupportedError(f"{name}: {attr} {value!r} is a custom function; only named activations can "
                               f"be converted ({sorted(ACTIVATIONS)})")
    if value == "hard_sigmoid":  # its definition changed with Keras 3
        return "hard_sigmoid_keras2" if keras_version.startswith(("1.", "2.")) else "hard_sigmoid_keras3"
    value = {"swish": "silu"}.get(value, value)
    if value not in ACTIVATIONS:
        raise UnsupportedError(f"{name}: {attr} {value!r} is not supported; supported: {sorted(ACTIVATIONS)}")
    return value


# -- live Keras objects ---------------------------------------------------------------------------


def read(obj: Any) -> Layer | Model:
    """Read a built Keras LSTM, Dense or Embedding layer, or a model made of them."""
    keras = require("keras")
    source = {"framework": "keras", "framework_version": keras.__version__, "backend": keras.backend.backend()}
    if isinstance(obj, keras.Model):
        layers = [_read_layer(keras, layer, source) for layer in obj.layers
                  if type(layer).__name__ not in ("InputLayer",) + INFERENCE_IDENTITY]
        shape = [None if d is None else int(d) for d in obj.inputs[0].shape[1:]] if obj.inputs else None
        config = {"keras": {"name": obj.name, "input_shape": shape,
                            "input_dtype": str(obj.inputs[0].dtype) if obj.inputs else None}}
        return Model(tuple(layers), config=config, source=source)
    return _read_layer(keras, obj, source)


def _read_layer(keras, layer: Any, source: Mapping[str, str]) -> Layer:
    name = getattr(layer, "name", type(layer).__name__)
    class_name = next((c for c in ("LSTM", "Dense", "Embedding") if isinstance(layer, getattr(keras.layers, c))),
                      type(layer).__name__)
    config = layer.get_config() if hasattr(layer, "get_config") else {"name": name}
    expected = tensor_names(class_name, config)
    if not layer.built:
        raise ShapeError(f"{name}: the layer is not built; call it on an input or "
                         "build((None, None, features)) first")
    owner = layer.cell if class_name == "LSTM" else layer
    tensors = {t: np.array(keras.ops.convert_to_numpy(getattr(owner, t)), copy=True) for t in expected}
    return layer_from_config(class_name, config, tensors, keras_version=keras.__version__, source=source)


def write(weights: Layer | Model, target: Any = None, **settings: Any) -> Any:
    """Write a canonical layer as a new built Keras layer (or into ``target``); a model as ``keras.Sequential``.

    A new layer takes the Keras settings recorded when the weights came from
    Keras; a recurrent layer from elsewhere returns full sequences, as
    ``nn.LSTM`` does. Keyword arguments override both.
    """
    keras = require("keras")
    if isinstance(weights, Model):
        return _write_model(keras, weights)
    values = layer_tensors(weights)
    if target is None:
        target = new_layer(keras, weights, **settings)
        target.build(_input_shape(weights))
    else:
        _check_target(keras, weights, target)
    assign(weights.name, target, values)
    return target


def new_layer(keras, weights: Layer, **settings: Any) -> Any:
    """An unbuilt Keras layer configured like ``weights``."""
    recorded = dict(weights.config.get("keras", {}))
    if isinstance(weights, Dense):
        return keras.layers.Dense(weights.out_features, use_bias=weights.bias is not None, name=weights.name,
                                  activation=keras_activation(weights.activation), dtype=weights.dtype,
                                  **recorded, **settings)
    if isinstance(weights, Embedding):
        return keras.layers.Embedding(weights.num_embeddings, weights.embedding_dim, name=weights.name,
                                      dtype=weights.dtype, **recorded, **settings)
    options = {"return_sequences": True, **recorded, **settings}
    return keras.layers.LSTM(weights.hidden_size, use_bias=weights.bias, name=weights.name, dtype=weights.dtype,
                             activation=keras_activation(weights.activation),
                             recurrent_activation=keras_activation(weights.recurrent_activation), **options)


def assign(name: str, target: Any, values: Mapping[str, np.ndarray]) -> None:
    """Set a built Keras layer's variables by name, checking every shape before changing any."""
    owner = target.cell if hasattr(target, "cell") else target
    variables = {tensor: getattr(owner, tensor) for tensor in values}
    for tensor, variable in variables.items():
        if tuple(variable.shape) != values[tensor].shape:
            raise ShapeError(f"{name}.{tensor}: the target Keras layer {target.name!r} holds "
                             f"shape {tuple(variable.shape)}, expected {values[tensor].shape}")
    for tensor, variable in variables.items():
        variable.assign(values[tensor].astype(variable.dtype))


def _input_shape(weights: Layer) -> tuple:
    if isinstance(weights, Embedding):
        return (None, None)
    return (None, None, weights.input_size)


def _check_target(keras, weights: Layer, target: Any) -> None:
    cls = {"dense": keras.layers.Dense, "embedding": keras.layers.Embedding}.get(weights.kind, keras.layers.LSTM)
    if not isinstance(target, cls):
        raise UnsupportedError(f"{weights.name}: cannot write into {type(target).__name__}, "
                               f"expected keras.layers.{cls.__name__}")
    if not target.built:
        target.build(_input_shape(weights))
    if isinstance(weights, RecurrentLayer):
        config = target.get_config()
        wanted = {"units": weights.hidden_size, "use_bias": weights.bias,
                  "activation": keras_activation(weights.activation),
                  "recurrent_activation": keras_activation(weights.recurrent_activation)}
        for key, value in wanted.items():
            if config[key] != value:
                raise ShapeError(f"{weights.name}: the target Keras layer {target.name!r} has "
                                 f"{key}={config[key]!r}, expected {key}={value!r}")


def _write_model(keras, model: Model) -> Any:
    check_chain(model)
    recorded = model.config.get("keras", {})
    first = model.layers[0]
    shape = recorded.get("input_shape") or ([None] if isinstance(first, Embedding) else [None, first.input_size])
    dtype = recorded.get("input_dtype") or ("int32" if isinstance(first, Embedding) else first.dtype)
    layers = [new_layer(keras, layer) for layer in model.layers]
    built = keras.Sequential([keras.Input(tuple(shape), dtype=dtype), *layers], name=recorded.get("name"))
    for layer, target in zip(model.layers, layers):
        assign(layer.name, target, layer_tensors(layer))
    return built


def check_chain(model: Model) -> None:
    """Raise UnsupportedError unless the layers can run one after the other, as a Keras Sequential does."""
    for layer in model.layers:
        check_representable(layer)
    for before, after in zip(model.layers, model.layers[1:]):
        if isinstance(after, Embedding):
            raise UnsupportedError(f"{after.name}: an Embedding can only be the first layer of a sequential model")
        if before.output_size != after.input_size:
            raise UnsupportedError(
                f"{after.name}: takes {after.input_size} features but {before.name} gives {before.output_size}; "
                "the layers do not form one sequential chain")
