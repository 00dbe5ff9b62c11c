"""Keras 3 adapter: built ``keras.layers.LSTM`` layers <-> the canonical form.

Keras stores one LSTM layer as::

    kernel            (input, 4H)   column blocks i, f, c, o
    recurrent_kernel  (H, 4H)
    bias              (4H,)         a single bias, absent when use_bias=False

Reading puts the bias in the canonical ``b_x`` and zeros in ``b_h``; writing
sums the two canonical biases (rounded once, from float64). Only public Keras
API is used (``get_config``, ``get_weights``, ``set_weights``), so any backend
works. ``keras`` is imported on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._optional import require
from ..activations import ACTIVATIONS
from ..canonical import Gate, RecurrentLayer
from ..errors import ShapeError, UnsupportedError
from ..gates import join, layout, split

# Keras activation names whose canonical name differs (see activations.py).
_TO_CANONICAL = {"hard_sigmoid": "hard_sigmoid_keras3"}
_FROM_CANONICAL = {v: k for k, v in _TO_CANONICAL.items()}
# Settings of keras.layers.LSTM that are not weights and that we carry along.
_SETTINGS = ("return_sequences", "return_state", "stateful", "unroll", "dropout", "recurrent_dropout")


def read(layer: Any) -> RecurrentLayer:
    """Read a built ``keras.layers.LSTM`` into a :class:`RecurrentLayer`."""
    keras = require("keras")
    name = getattr(layer, "name", type(layer).__name__)
    if not isinstance(layer, keras.layers.LSTM):
        raise UnsupportedError(f"{name}: {type(layer).__name__} is not supported, expected keras.layers.LSTM")
    if not layer.built:
        raise ShapeError(f"{name}: the layer is not built; call it on an input or "
                         "build((None, None, features)) first")
    config = layer.get_config()
    if config.get("go_backwards"):
        raise UnsupportedError(f"{name}: go_backwards=True is not supported yet")
    activations = {attr: _canonical_activation(name, attr, config[attr])
                   for attr in ("activation", "recurrent_activation")}
    lay = layout("keras", "lstm")
    hidden = int(config["units"])
    use_bias = bool(config["use_bias"])
    tensors = {tensor: _variable(keras, layer, tensor) for tensor in lay.tensors[: 3 if use_bias else 2]}
    blocks = {role: split(lay, value, hidden, f"{name}.{tensor}")
              for role, (tensor, value) in zip(("W_x", "W_h", "b_x"), tensors.items())}
    if use_bias:
        blocks["b_h"] = split(lay, np.zeros_like(tensors["bias"]), hidden, f"{name}.bias")
    kernel = tensors["kernel"]
    gates = {(0, "forward", g): Gate(**{role: b[g] for role, b in blocks.items()}) for g in lay.order}
    return RecurrentLayer(
        kind="lstm", input_size=int(kernel.shape[0]), hidden_size=hidden, bias=use_bias,
        gates=gates, name=name, **activations,
        config={"keras": {key: config[key] for key in _SETTINGS if key in config}},
        source={"framework": "keras", "framework_version": keras.__version__,
                "backend": keras.backend.backend()},
    )


def write(weights: RecurrentLayer, layer: Any = None, **settings: Any) -> Any:
    """Write ``weights`` as a new built ``keras.layers.LSTM``, or into ``layer``.

    A new layer takes the Keras settings recorded when the weights came from
    Keras, else ``return_sequences=True`` (what ``nn.LSTM`` returns); keyword
    arguments override both.
    """
    keras = require("keras")
    _check_representable(weights)
    lay = layout("keras", weights.kind)
    activations = {attr: _FROM_CANONICAL.get(getattr(weights, attr), getattr(weights, attr))
                   for attr in ("activation", "recurrent_activation")}
    if layer is None:
        options = {"return_sequences": True, **weights.config.get("keras", {}), **settings}
        layer = keras.layers.LSTM(weights.hidden_size, use_bias=weights.bias, name=weights.name,
                                  dtype=weights.dtype, **activations, **options)
        layer.build((None, None, weights.input_size))
    else:
        _check_layer(keras, weights, layer, activations)
    gates = {g: weights.gates[(0, "forward", g)] for g in lay.order}
    values = {"kernel": join(lay, {g: v.W_x for g, v in gates.items()}),
              "recurrent_kernel": join(lay, {g: v.W_h for g, v in gates.items()})}
    if weights.bias:
        values["bias"] = join(lay, {g: (v.b_x.astype(np.float64) + v.b_h.astype(np.float64))
                                    .astype(v.b_x.dtype) for g, v in gates.items()})
    variables = {tensor: getattr(layer.cell, tensor) for tensor in values}
    for tensor, variable in variables.items():  # check all before changing any
        if tuple(variable.shape) != values[tensor].shape:
            raise ShapeError(f"{weights.name}.{tensor}: the target Keras layer {layer.name!r} holds "
                             f"shape {tuple(variable.shape)}, expected {values[tensor].shape}")
    for tensor, variable in variables.items():
        variable.assign(values[tensor].astype(variable.dtype))
    return layer


def _variable(keras, layer: Any, tensor: str) -> np.ndarray:
    """A copy of the cell variable ``tensor`` (kernel, recurrent_kernel or bias)."""
    return np.array(keras.ops.convert_to_numpy(getattr(layer.cell, tensor)), copy=True)


def _canonical_activation(name: str, attr: str, value: Any) -> str:
    if not isinstance(value, str):
        raise UnsupportedError(f"{name}: {attr} {value!r} is a custom function; only named "
                               f"activations can be converted ({sorted(ACTIVATIONS)})")
    canonical = _TO_CANONICAL.get(value, value)
    if canonical not in ACTIVATIONS:
        raise UnsupportedError(f"{name}: {attr} {value!r} is not supported; "
                               f"supported: {sorted(_FROM_CANONICAL.get(a, a) for a in ACTIVATIONS)}")
    return canonical


def _check_representable(weights: RecurrentLayer) -> None:
    if weights.num_layers != 1 or weights.directions != 1:
        raise UnsupportedError(
            f"{weights.name}: {weights.num_layers} stacked layer(s) and {weights.directions} "
            "direction(s) need several Keras layers or Bidirectional, which is not supported yet; "
            "keep it in a safetensors archive (lstm_convert.save)")
    for attr in ("activation", "recurrent_activation"):
        if getattr(weights, attr) == "hard_sigmoid_keras2":
            raise UnsupportedError(
                f"{weights.name}: {attr} is Keras 2's hard_sigmoid (0.2x + 0.5), which Keras 3 no "
                "longer has; keep it in a safetensors archive (lstm_convert.save)")


def _check_layer(keras, weights: RecurrentLayer, layer: Any, activations: dict[str, str]) -> None:
    if not isinstance(layer, keras.layers.LSTM):
        raise UnsupportedError(f"{weights.name}: cannot write into {type(layer).__name__}, "
                               "expected keras.layers.LSTM")
    if not layer.built:
        layer.build((None, None, weights.input_size))
    config = layer.get_config()
    wanted = {"units": weights.hidden_size, "use_bias": weights.bias, **activations}
    for key, value in wanted.items():
        if config[key] != value:
            raise ShapeError(f"{weights.name}: the target Keras layer {layer.name!r} has "
                             f"{key}={config[key]!r}, expected {key}={value!r}")
