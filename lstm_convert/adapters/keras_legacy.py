"""Keras layers and files that today's Keras no longer reads, in today's terms (NumPy only).

:func:`modernise` turns a legacy layer's configuration into the one Keras 2 and 3 would write for the
same function, with a :class:`Recipe` saying how its weights differ; :func:`key` names a stored weight
as today's Keras names it; :func:`tensors` turns the weights into today's layout; :func:`finish`
restores what today's layout has no room for and records where the weights came from.

- **CuDNNLSTM / CuDNNGRU** (tf.keras 2, Keras 2.0.9-2.3; they ran only on a GPU): weights named as
  an LSTM's and a GRU's, laid out as :data:`~lstm_convert.gates.CUDNN_LSTM` and
  :data:`~lstm_convert.gates.CUDNN_GRU` say. The LSTM keeps two biases, which Keras' LSTM has no room
  for: they stay apart in the canonical form (exact to PyTorch), summed only where a target keeps one.
  Activations are tanh and sigmoid, and the GRU computes reset after the product.
- **Keras 1**: configurations use ``output_dim``, ``inner_activation`` (default ``hard_sigmoid``,
  Keras 2's ``0.2 x + 0.5``), ``dropout_W`` / ``dropout_U``, a Dense's ``bias``; weights are named
  ``<layer>_W_i`` and so on (:data:`~lstm_convert.gates.KERAS1_GATES`), one tensor per gate unless
  ``consume_less='gpu'``; the GRU computes reset before the product. A file without a
  ``keras_version`` attribute is a Keras 1 file, as Keras 2 and tf.keras read it.
- **Keras 2.0-2.2**: a GRU whose configuration has no ``reset_after`` predates it and computes reset
  before the product.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._lazy import np
from ..canonical import Gate, Layer, RecurrentLayer
from ..errors import FormatError, ShapeError, UnsupportedError
from ..gates import KERAS1_GATES, join, join_bias, layout, split, split_bias

CUDNN = {"CuDNNLSTM": ("LSTM", "lstm"), "CuDNNGRU": ("GRU", "gru")}
_KERAS1_RECURRENT = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
# The Keras 1 layers read: their weights by Keras 1 role, in the order Keras 1 listed them.
_KERAS1_WEIGHTS = {"Dense": ("W", "b"), "Embedding": ("W",), "Masking": (), "Activation": (), "Dropout": (),
                   "SpatialDropout1D": (), "GaussianNoise": (), "GaussianDropout": (), "ActivityRegularization": (),
                   "InputLayer": ()}
_KERAS1_WRAPPERS = ("TimeDistributed", "Bidirectional")
# Keras 2 names of Keras 1 roles: W kernel, U recurrent kernel, b bias (an Embedding's W is its table).
_ROLE = {"W": "kernel", "U": "recurrent_kernel", "b": "bias"}


@dataclass(frozen=True)
class Recipe:
    """How a legacy layer's weights differ from today's: ``layout`` names the legacy form (recorded as the
    layer's provenance), ``kind`` the canonical kind; ``cudnn`` for a CuDNN layer; for Keras 1, ``names``
    the prefixes its weight names start with, by side (``""``, ``"forward/"``, ``"backward/"``), and
    ``per_gate`` whether a recurrent layer keeps one tensor per gate."""

    layout: str
    kind: str
    cudnn: bool = False
    names: tuple[tuple[str, str], ...] = ()
    per_gate: bool = False
    sides: tuple[str, ...] = ("",)
    bias: bool = True


class Tensors(dict):
    """A legacy layer's weights in today's layout, with the recurrent-side biases (by side, per gate) that
    today's layout has no room for."""

    def __init__(self, values: Mapping[str, np.ndarray], recipe: Recipe,
                 recurrent_bias: Mapping[str, Mapping[str, np.ndarray]] | None = None):
        super().__init__(values)
        self.recipe = recipe
        self.recurrent_bias = dict(recurrent_bias or {})


def is_keras1(version: str) -> bool:
    return version == "1" or version.startswith("1.")


def modern_config(config: Mapping[str, Any], version: str) -> tuple[Mapping[str, Any], dict[str, Recipe],
                                                                    dict[str, str]]:
    """A model configuration as today's Keras writes it, with the recipes of its legacy layers and the
    reasons for the Keras 1 layers that are not read, by layer name. Keras 1's and Keras 2.0-2.2's
    Sequential keeps a bare list of layers where today's keeps ``{"name": ..., "layers": [...]}``."""
    if isinstance(config, dict) and isinstance(config.get("config"), list):
        config = {**config, "config": {"name": None, "layers": config["config"]}}
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        return config, {}, {}
    recipes, refused, modern = {}, {}, []
    for entry in layers:
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            modern.append(entry)
            continue
        class_name = entry.get("class_name")
        name = entry["config"].get("name", entry.get("name", class_name))
        if not isinstance(class_name, str):  # the reader names what is wrong with it
            modern.append(entry)
            continue
        try:
            class_name, layer_config, recipe = modernise(class_name, entry["config"], version)
        except UnsupportedError as exc:
            refused[str(name)] = str(exc).split(": ", 1)[-1]
            modern.append(entry)
            continue
        if recipe is not None:
            recipes[str(name)] = recipe
        modern.append({**entry, "class_name": class_name, "config": layer_config})
    return {**config, "config": {**inner, "layers": modern}}, recipes, refused


def modernise(class_name: str, config: Mapping[str, Any], version: str) -> tuple[str, dict[str, Any], Recipe | None]:
    """``(class name, configuration, recipe)`` of a layer as today's Keras writes it; the recipe is None for a
    layer that is already in today's terms. UnsupportedError for a Keras 1 layer the tool does not read."""
    config = dict(config)
    name = config.get("name", class_name)
    if is_keras1(version):
        return _keras1(class_name, config, name)
    if class_name in CUDNN:
        modern, recipe = _cudnn(class_name, config)
        return CUDNN[class_name][0], modern, recipe
    inner = config.get("layer") if class_name == "Bidirectional" else None
    if isinstance(inner, dict) and inner.get("class_name") in CUDNN:
        modern, recipe = _cudnn(inner["class_name"], dict(inner.get("config") or {}))
        config["layer"] = {**inner, "class_name": CUDNN[inner["class_name"]][0], "config": modern}
        return class_name, config, dataclasses.replace(recipe, sides=("forward/", "backward/"))
    if version.startswith(("2.0", "2.1", "2.2")) or version == "2":
        _reset_before(class_name, config)
    return class_name, config, None


def _reset_before(class_name: str, config: dict[str, Any]) -> None:
    """A Keras 2 GRU from before ``reset_after`` existed (Keras 2.1.3) computes reset before the product."""
    if class_name in ("GRU", "GRUCell"):
        config.setdefault("reset_after", False)
    for key in ("layer", "cell"):
        inner = config.get(key)
        if isinstance(inner, dict) and inner.get("class_name") in ("GRU", "GRUCell") and isinstance(
                inner.get("config"), dict):
            inner = {**inner, "config": dict(inner["config"])}
            inner["config"].setdefault("reset_after", False)
            config[key] = inner


_CUDNN_SETTINGS = ("name", "trainable", "dtype", "return_sequences", "return_state", "go_backwards", "stateful",
                   "time_major", "batch_input_shape", "batch_shape")


def _cudnn(class_name: str, config: Mapping[str, Any]) -> tuple[dict[str, Any], Recipe]:
    modern = {key: config[key] for key in _CUDNN_SETTINGS if key in config}
    modern.update(units=config.get("units"), activation="tanh", use_bias=True)
    kind = CUDNN[class_name][1]
    modern["recurrent_activation"] = "sigmoid"
    if kind == "gru":
        modern["reset_after"] = True
    return modern, Recipe(layout=class_name, kind=kind, cudnn=True)


def _keras1(class_name: str, config: dict[str, Any], name: str) -> tuple[str, dict[str, Any], Recipe | None]:
    common = {key: config[key] for key in ("name", "trainable", "batch_input_shape") if key in config}
    if isinstance(config.get("input_dtype"), str):
        common["dtype"] = config["input_dtype"]
    if class_name in _KERAS1_RECURRENT:
        kind = _KERAS1_RECURRENT[class_name]
        modern = {**common, "units": _required(config, "output_dim", name),
                  "activation": config.get("activation", "tanh"), "use_bias": True,
                  "dropout": config.get("dropout_W", 0.0), "recurrent_dropout": config.get("dropout_U", 0.0)}
        modern.update({key: config[key] for key in ("return_sequences", "go_backwards", "stateful", "unroll")
                       if key in config})
        if kind != "rnn":
            modern["recurrent_activation"] = config.get("inner_activation", "hard_sigmoid")
        if kind == "gru":
            modern["reset_after"] = False
        per_gate = kind != "rnn" and config.get("consume_less", "cpu") != "gpu"
        form = "one tensor per gate" if per_gate else "stacked weights (consume_less='gpu')"
        return class_name, modern, Recipe(layout=f"Keras 1 {class_name} ({form})", kind=kind,
                                          names=((name, ""),), per_gate=per_gate)
    if class_name == "Dense":
        modern = {**common, "units": _required(config, "output_dim", name),
                  "activation": config.get("activation", "linear"), "use_bias": bool(config.get("bias", True))}
        return class_name, modern, Recipe(layout="Keras 1 Dense", kind="dense", names=((name, ""),),
                                          bias=modern["use_bias"])
    if class_name == "Embedding":
        modern = {**common, "input_dim": _required(config, "input_dim", name),
                  "output_dim": _required(config, "output_dim", name), "mask_zero": bool(config.get("mask_zero"))}
        return class_name, modern, Recipe(layout="Keras 1 Embedding", kind="embedding", names=((name, ""),))
    if class_name in _KERAS1_WRAPPERS:
        inner = config.get("layer")
        inner_class = inner.get("class_name") if isinstance(inner, dict) else None
        wanted = ("Dense",) if class_name == "TimeDistributed" else tuple(_KERAS1_RECURRENT)
        if inner_class not in wanted or not isinstance(inner.get("config"), dict):
            raise UnsupportedError(f"{name}: a Keras 1 {class_name} of {inner_class or 'an unknown layer'} is not "
                                   f"read (inside {class_name}: {', '.join(wanted)})")
        inner_name = inner["config"].get("name", inner_class)
        _, modern_inner, recipe = _keras1(inner_class, dict(inner["config"]), inner_name)
        wrapper = {**common, "layer": {"class_name": inner_class, "config": modern_inner}}
        if class_name == "Bidirectional":
            wrapper["merge_mode"] = config.get("merge_mode", "concat")
            names = ((f"forward_{inner_name}", "forward/"), (f"backward_{inner_name}", "backward/"))
            recipe = dataclasses.replace(recipe, names=names, sides=("forward/", "backward/"),
                                         layout=f"Keras 1 Bidirectional of {recipe.layout.removeprefix('Keras 1 ')}")
        return class_name, wrapper, recipe
    if class_name in _KERAS1_WEIGHTS:  # no weights; a few settings were renamed
        renamed = {"p": "rate", "sigma": "stddev", "input_dtype": "dtype"}
        return class_name, {renamed.get(k, k): v for k, v in config.items()}, None
    raise UnsupportedError(f"{name}: Keras 1 layer {class_name} is not read (Keras 1 layers read: "
                           f"{', '.join([*_KERAS1_RECURRENT, *_KERAS1_WEIGHTS, *_KERAS1_WRAPPERS][:5])}, ...)")


def _required(config: Mapping[str, Any], key: str, name: str) -> Any:
    if key not in config:
        raise FormatError(f"layer {name!r}: a Keras 1 configuration has {key!r}, this one does not")
    return config[key]


def keras1_layers() -> tuple[str, ...]:
    """The Keras 1 layers read (for the README)."""
    return (*_KERAS1_RECURRENT, *_KERAS1_WRAPPERS, *_KERAS1_WEIGHTS)


_TF_SUFFIX = re.compile(r"(_\d+)?(:\d+)?$")  # TensorFlow's uniquifying suffix and output index


def key(recipe: Recipe | None, weight_name: str) -> str:
    """The key of a stored weight: today's name (``kernel``, ``forward/bias``) for today's names and CuDNN's;
    for Keras 1, its role and gate (``W_i``), with the side of a Bidirectional (``forward/W_i``)."""
    if recipe is None or not recipe.names:
        role = weight_name.rpartition("/")[2].split(":")[0]
        side = next((s for s in ("forward", "backward") for part in weight_name.split("/")[:-1]
                     if part.startswith(f"{s}_")), None)
        return f"{side}/{role}" if side else role
    bare = weight_name.rpartition("/")[2]
    for prefix, side in sorted(recipe.names, key=lambda pair: -len(pair[0])):
        if bare.startswith(f"{prefix}_"):
            return side + _TF_SUFFIX.sub("", bare[len(prefix) + 1:])
    return bare  # not this layer's name: the caller's check of the set of keys names it


def expected(recipe: Recipe) -> list[str]:
    """The Keras 1 keys of a layer's weights, in the order Keras 1 stored them."""
    if recipe.kind in ("dense", "embedding"):
        roles = ["W", "b"][: 2 if recipe.kind == "dense" and recipe.bias else 1]
    elif recipe.per_gate:
        roles = [f"{role}_{letter}" for letter, _ in KERAS1_GATES[recipe.kind] for role in ("W", "U", "b")]
    else:
        roles = ["W", "U", "b"]
    return [side + role for side in recipe.sides for role in roles]


def tensors(recipe: Recipe, raw: Mapping[str, np.ndarray], label: str, units: int | None) -> Tensors:
    """A legacy layer's weights ``raw`` (by :func:`key`) in today's layout; ``label`` names the layer in errors."""
    if recipe.cudnn:
        return _cudnn_tensors(recipe, raw, label, units)
    if set(raw) != set(expected(recipe)):
        raise FormatError(f"{label}: a {recipe.layout} layer holds weights {expected(recipe)}, this one "
                          f"{sorted(raw)}")
    if recipe.kind == "embedding":
        return Tensors({"embeddings": raw["W"]}, recipe)
    out = {}
    for side in recipe.sides:
        if recipe.per_gate:
            lay = layout("keras", recipe.kind)
            blocks = {role: {} for role in ("W", "U", "b")}
            for letter, gate in KERAS1_GATES[recipe.kind]:
                for role in blocks:
                    value = raw[f"{side}{role}_{letter}"]
                    want = 1 if role == "b" else 2
                    if value.ndim != want:
                        raise ShapeError(f"{label}.{side}{role}_{letter}: expected a {want}-D tensor, got shape "
                                         f"{tuple(value.shape)}")
                    blocks[role][gate] = value.T if value.ndim == 2 else value
            for role, per_gate in blocks.items():
                sizes = {b.shape[0] for b in per_gate.values()}
                if len(sizes) != 1 or (units is not None and sizes != {units}):
                    raise ShapeError(f"{label}.{side}{role}: every gate's tensor has {units} units, got "
                                     f"{sorted(b.shape for b in per_gate.values())}")
                out[side + _ROLE[role]] = join(lay, per_gate)
        else:
            for role in ("W", "U", "b"):
                if side + role in raw:
                    out[side + _ROLE[role]] = raw[side + role]
    return Tensors(out, recipe)


def _cudnn_tensors(recipe: Recipe, raw: Mapping[str, np.ndarray], label: str, units: int | None) -> Tensors:
    cudnn, keras = layout("cudnn", recipe.kind), layout("keras", recipe.kind)
    want = [side + t for side in recipe.sides for t in cudnn.tensors]
    if set(raw) != set(want):
        raise FormatError(f"{label}: a {recipe.layout} layer holds weights {want}, this one {sorted(raw)}")
    if not isinstance(units, int) or isinstance(units, bool) or units < 1:
        raise FormatError(f"{label}: a {recipe.layout} configuration gives its units, this one {units!r}")
    out, recurrent = {}, {}
    for side in recipe.sides:
        kernel, rec, bias = (raw[side + t] for t in cudnn.tensors)
        if kernel.ndim != 2 or rec.shape != (units, len(cudnn.order) * units):
            raise ShapeError(f"{label}.{side}kernel, recurrent_kernel: expected (input, {len(cudnn.order) * units}) "
                             f"and ({units}, {len(cudnn.order) * units}), got {tuple(kernel.shape)} and "
                             f"{tuple(rec.shape)}")
        w_x = split(cudnn, kernel, units, f"{label}.{side}kernel")
        w_h = split(cudnn, rec, units, f"{label}.{side}recurrent_kernel")
        b_x, b_h = split_bias(cudnn, [bias], units, f"{label}.{side}bias")
        out[side + "kernel"], out[side + "recurrent_kernel"] = join(keras, w_x), join(keras, w_h)
        if recipe.kind == "gru":  # Keras' GRU with reset_after keeps both sides, as rows
            (out[side + "bias"],) = join_bias(keras, b_x, b_h, reset_after=True)
        else:  # Keras' LSTM keeps one bias: the input side goes there, the recurrent side is kept apart
            out[side + "bias"] = join(keras, b_x)
            recurrent[side] = b_h
    return Tensors(out, recipe, recurrent)


def finish(layer: Layer, held: Tensors) -> Layer:
    """``layer`` (read from today's layout) with the recurrent-side biases today's layout had no room for,
    and the legacy layout recorded in its provenance."""
    source = {**layer.source, "layout": held.recipe.layout, **({"gates_layout": "cudnn"} if held.recipe.cudnn else {})}
    if not isinstance(layer, RecurrentLayer) or not held.recurrent_bias:
        return dataclasses.replace(layer, source=source)
    directions = {"": "forward", "forward/": "forward", "backward/": "reverse"}
    gates = dict(layer.gates)
    for side, biases in held.recurrent_bias.items():
        for gate, value in biases.items():
            key_ = (0, directions[side], gate)
            gates[key_] = Gate(gates[key_].W_x, gates[key_].W_h, gates[key_].b_x, value)
    return dataclasses.replace(layer, gates=gates, source=source)
