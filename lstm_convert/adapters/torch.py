"""PyTorch adapter: ``nn.LSTM``, ``nn.Linear``, ``nn.Embedding`` and state dicts <-> the canonical form.

PyTorch stores, for stacked layer ``k`` and direction suffix ``s`` (empty, or
``_reverse`` for the backward direction of a bidirectional module)::

    weight_ih_l{k}{s}  (4H, fan_in)   gate blocks i, f, g, o
    weight_hh_l{k}{s}  (4H, H)
    bias_ih_l{k}{s}    (4H,)          only when bias=True
    bias_hh_l{k}{s}    (4H,)
    Linear     weight (out, in), bias (out,)
    Embedding  weight (num_embeddings, embedding_dim)

``fan_in`` is ``input_size`` for layer 0 and ``H * directions`` above it.
Both LSTM biases map one to one onto the canonical ``b_x`` and ``b_h``, so a
state dict survives the trip bit for bit.

A model's state dict is split into modules by parameter names: the keys
``<prefix>.weight_ih_l0``, ... form one recurrent module, ``<prefix>.weight``
and ``<prefix>.bias`` a Linear. A lone 2-D ``weight`` is a Linear without bias
or an Embedding, which the keys cannot tell apart: the caller says which
(``kinds``). The prefix is kept, so keys come back exactly. The first half of
this module is NumPy only; ``torch`` is imported on first use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._optional import require
from ..canonical import DIRECTIONS, ROLES, Dense, Embedding, Gate, Layer, Model, RecurrentLayer
from ..errors import FormatError, ShapeError, UnsupportedError
from ..gates import join, layout, split

_SUFFIX = {"forward": "", "reverse": "_reverse"}
_RECURRENT_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")
# The rows of weight_hh per unit of H tell the cell kind of a recurrent module.
_KIND_BY_GATES = {4: "lstm"}
_MODULE_SETTINGS = ("batch_first", "dropout")
KINDS = ("linear", "embedding")


# -- NumPy only -----------------------------------------------------------------------------------


def model_from_state_arrays(arrays: Mapping[str, np.ndarray], *, kinds: Mapping[str, str] | None = None,
                            settings: Mapping[str, Mapping[str, Any]] | None = None,
                            source: Mapping[str, str] | None = None, where: str = "state dict") -> Model:
    """Split a PyTorch state dict (NumPy arrays) into canonical layers, one per module prefix."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        prefix, _, param = key.rpartition(".")
        groups.setdefault(prefix, {})[param] = array
    kinds = dict(kinds or {})
    unknown = sorted(set(kinds) - set(groups))
    if unknown:
        raise FormatError(f"{where}: kinds given for {unknown}, which are not modules of it "
                          f"(modules: {sorted(groups)})")
    source = dict(source or {"framework": "torch"})
    layers = []
    for prefix, params in groups.items():
        layers.append(_module(prefix, params, kinds.get(prefix), (settings or {}).get(prefix, {}), source, where))
    return Model(tuple(layers), source=source)


def _module(prefix: str, params: dict[str, np.ndarray], kind: str | None, settings: Mapping[str, Any],
            source: Mapping[str, str], where: str) -> Layer:
    name = prefix or "lstm"
    keys = sorted(f"{prefix}.{p}" if prefix else p for p in params)
    config = {"torch": {"prefix": f"{prefix}." if prefix else "", **settings}}
    if any(_RECURRENT_KEY.match(p) for p in params):
        return recurrent_from_state_arrays(params, name=name, settings=config["torch"], source=source)
    if set(params) == {"weight", "bias"} and params["weight"].ndim == 2 and kind in (None, "linear"):
        return Dense(name=name or "linear", weight=params["weight"], bias=params["bias"], config=config,
                     source=source)
    if set(params) == {"weight"} and params["weight"].ndim == 2:
        if kind == "linear":
            return Dense(name=name, weight=params["weight"], config=config, source=source)
        if kind == "embedding":
            return Embedding(name=name, weight=params["weight"], config=config, source=source)
        raise FormatError(f"{where}: {keys[0]} alone may be nn.Embedding or nn.Linear(bias=False), and the keys "
                          f"cannot tell which; say so with kinds={{'{prefix}': 'embedding'}} "
                          f"(command line: --kind {prefix}=embedding or {prefix}=linear)")
    raise FormatError(f"{where}: cannot account for keys {keys}: they are not an LSTM, a Linear or an Embedding")


def recurrent_from_state_arrays(arrays: Mapping[str, np.ndarray], *, name: str = "lstm",
                                settings: Mapping[str, Any] | None = None,
                                source: Mapping[str, str] | None = None) -> RecurrentLayer:
    """Build a recurrent layer from PyTorch parameter names (no prefix) and NumPy arrays."""
    parsed = {}
    for key in arrays:
        match = _RECURRENT_KEY.match(key)
        if match is None:
            raise FormatError(f"{name}: unexpected key {key!r} in a PyTorch LSTM state dict")
        parsed[key] = (int(match[2]), "reverse" if match[3] else "forward")
    if "weight_hh_l0" not in arrays or "weight_ih_l0" not in arrays:
        raise FormatError(f"{name}: a PyTorch LSTM state dict needs weight_ih_l0 and weight_hh_l0, "
                          f"got keys {sorted(arrays)}")
    w_hh = arrays["weight_hh_l0"]
    if w_hh.ndim != 2 or w_hh.shape[1] == 0 or w_hh.shape[0] % w_hh.shape[1]:
        raise ShapeError(f"{name}: weight_hh_l0 must be (G*H, H), got {w_hh.shape}")
    hidden = w_hh.shape[1]
    kind = _KIND_BY_GATES.get(w_hh.shape[0] // hidden)
    if kind is None:
        raise UnsupportedError(f"{name}: weight_hh_l0 of shape {w_hh.shape} has "
                               f"{w_hh.shape[0] // hidden} gate blocks; only LSTM (4) is supported")
    num_layers = 1 + max(index for index, _ in parsed.values())
    directions = 2 if any(d == "reverse" for _, d in parsed.values()) else 1
    bias = "bias_ih_l0" in arrays
    lay = layout("torch", kind)
    expected = {_key(t, index, d) for index in range(num_layers) for d in DIRECTIONS[:directions]
                for t in lay.tensors[: 4 if bias else 2]}
    if set(arrays) != expected:
        missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        raise FormatError(f"{name}: state dict keys do not form an LSTM with {num_layers} layer(s), "
                          f"{directions} direction(s), bias={bias} (missing {missing or 'none'}, "
                          f"unexpected {extra or 'none'})")
    gates = {}
    for index in range(num_layers):
        for direction in DIRECTIONS[:directions]:
            blocks = {role: split(lay, arrays[_key(tensor, index, direction)], hidden,
                                  f"{name}.{_key(tensor, index, direction)}")
                      for tensor, role in zip(lay.tensors, ROLES) if _key(tensor, index, direction) in arrays}
            for gate in lay.order:
                gates[(index, direction, gate)] = Gate(**{role: b[gate] for role, b in blocks.items()})
    return RecurrentLayer(
        kind=kind, input_size=int(arrays["weight_ih_l0"].shape[1]), hidden_size=hidden,
        num_layers=num_layers, directions=directions, bias=bias, gates=gates, name=name,
        config={"torch": dict(settings or {})}, source=dict(source or {"framework": "torch"}),
    )


def layer_state_arrays(layer: Layer) -> dict[str, np.ndarray]:
    """One layer's parameters as its PyTorch module names them (no prefix)."""
    check_representable(layer)
    if isinstance(layer, (Dense, Embedding)):
        return {name.rpartition(".")[2]: np.asarray(array) for name, array in layer.tensors()}
    lay = layout("torch", layer.kind)
    out = {}
    for index in range(layer.num_layers):
        for direction in layer.direction_names:
            gates = {g: layer.gates[(index, direction, g)] for g in lay.order}
            for tensor, role in zip(lay.tensors, ROLES):
                if role in ("W_x", "W_h") or layer.bias:
                    out[_key(tensor, index, direction)] = join(lay, {g: getattr(v, role) for g, v in gates.items()})
    return out


def state_arrays(weights: Layer | Model) -> dict[str, np.ndarray]:
    """The PyTorch state dict as NumPy arrays: a layer's own keys, or a model's keys
    ``<prefix><param>`` where the prefix is the one the weights came with from PyTorch,
    else ``<layer name>.``."""
    if not isinstance(weights, Model):
        return layer_state_arrays(weights)
    out: dict[str, np.ndarray] = {}
    for layer in weights.layers:
        prefix = layer.config.get("torch", {}).get("prefix", f"{layer.name}.")
        for param, array in layer_state_arrays(layer).items():
            if prefix + param in out:
                raise FormatError(f"{layer.name}: key {prefix + param} would appear twice in the state dict")
            out[prefix + param] = array
    return out


def check_representable(layer: Layer) -> None:
    """Raise UnsupportedError unless a PyTorch module computes ``layer`` exactly."""
    if isinstance(layer, RecurrentLayer):
        for attr, wanted in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
            if getattr(layer, attr) != wanted:
                raise UnsupportedError(
                    f"{layer.name}: {attr} is {getattr(layer, attr)!r}, but nn.LSTM always uses {wanted}; "
                    "no PyTorch LSTM computes this layer. Keep it in a safetensors archive")


def _key(tensor: str, index: int, direction: str) -> str:
    return f"{tensor}_l{index}{_SUFFIX[direction]}"


# -- live torch objects ---------------------------------------------------------------------------


def read(obj: Any, *, name: str | None = None, kinds: Mapping[str, str] | None = None) -> Layer | Model:
    """Read an ``nn.LSTM``, ``nn.Linear`` or ``nn.Embedding`` into a layer; a module made of
    them, or a state dict with prefixed keys, into a :class:`Model`."""
    torch = require("torch")
    source = {"framework": "torch", "framework_version": torch.__version__}
    if isinstance(obj, torch.nn.Module):
        own = (torch.nn.LSTM, torch.nn.Linear, torch.nn.Embedding)
        modules = [("", obj)] if isinstance(obj, own) else list(obj.named_modules())
        settings, found = {}, {}
        for prefix, module in modules:
            if isinstance(module, torch.nn.LSTM):
                if module.proj_size:
                    raise UnsupportedError(f"{prefix or name or 'lstm'}: nn.LSTM with proj_size={module.proj_size} "
                                           "is not supported yet; use proj_size=0")
                settings[prefix] = {key: getattr(module, key) for key in _MODULE_SETTINGS}
            elif isinstance(module, torch.nn.Embedding):
                found[prefix] = "embedding"
            elif isinstance(module, torch.nn.Linear):
                found[prefix] = "linear"
            elif isinstance(module, (torch.nn.GRU, torch.nn.RNN)) or (not prefix and not len(list(module.children()))):
                label = f"{prefix or name}: " if prefix or name else ""
                raise UnsupportedError(f"{label}{type(module).__name__} is not supported "
                                       "(supported: nn.LSTM, nn.Linear, nn.Embedding)")
        state = obj.state_dict()
        kinds = {**found, **(kinds or {})}
    elif isinstance(obj, Mapping):
        state, settings = obj, {}
    else:
        raise UnsupportedError(f"expected an nn.Module or a state dict, got {type(obj).__name__}")
    arrays = {key: to_numpy(torch, key, value) for key, value in state.items()}
    groups = {key.rpartition(".")[0] for key in arrays}
    if groups == {""}:  # a single module's own state dict
        model = model_from_state_arrays(arrays, kinds={"": kinds[""]} if kinds and "" in kinds else None,
                                        settings=settings, source=source)
        layer = model.layers[0]
        return _renamed(layer, name) if name else layer
    return model_from_state_arrays(arrays, kinds=kinds, settings=settings, source=source)


def _renamed(layer: Layer, name: str) -> Layer:
    import dataclasses

    return dataclasses.replace(layer, name=name)


def write(weights: Layer | Model, module: Any = None, *, state_dict: bool = False,
          batch_first: bool | None = None) -> Any:
    """Write a layer as a new ``nn.LSTM`` / ``nn.Linear`` / ``nn.Embedding``, load it or a model into
    ``module``, or return the state dict (the default for a model: PyTorch has no generic chain).

    ``batch_first`` defaults to the source module's setting when the weights
    came from PyTorch, and to True otherwise (Keras is batch-major).
    """
    torch = require("torch")
    tensors = {key: from_numpy(torch, value) for key, value in state_arrays(weights).items()}
    if module is not None:
        _check_module(torch, weights, module)
        module.load_state_dict(tensors, strict=True)
        return module
    if state_dict or isinstance(weights, Model):
        return tensors
    module = new_module(torch, weights, batch_first=batch_first)
    module.load_state_dict(tensors, strict=True)
    return module


def new_module(torch, layer: Layer, *, batch_first: bool | None = None) -> Any:
    """An empty PyTorch module shaped like ``layer``."""
    dtype = getattr(torch, layer.dtype)
    if isinstance(layer, Dense):
        return torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, dtype=dtype)
    if isinstance(layer, Embedding):
        return torch.nn.Embedding(layer.num_embeddings, layer.embedding_dim, dtype=dtype)
    settings = {k: v for k, v in layer.config.get("torch", {}).items() if k in _MODULE_SETTINGS}
    if batch_first is not None:
        settings["batch_first"] = batch_first
    settings.setdefault("batch_first", True)
    return torch.nn.LSTM(layer.input_size, layer.hidden_size, num_layers=layer.num_layers, bias=layer.bias,
                         bidirectional=layer.directions == 2, dtype=dtype, **settings)


def _check_module(torch, weights: Layer | Model, module: Any) -> None:
    if not isinstance(weights, RecurrentLayer):
        return  # load_state_dict(strict=True) names any mismatch; wrapped by the caller
    if not isinstance(module, torch.nn.LSTM):
        raise UnsupportedError(f"{weights.name}: cannot write into {type(module).__name__}, expected torch.nn.LSTM")
    wanted = {"input_size": weights.input_size, "hidden_size": weights.hidden_size,
              "num_layers": weights.num_layers, "bidirectional": weights.directions == 2,
              "bias": weights.bias, "proj_size": 0}
    for attr, value in wanted.items():
        if getattr(module, attr) != value:
            raise ShapeError(f"{weights.name}: the target nn.LSTM has {attr}={getattr(module, attr)!r}, "
                             f"expected {attr}={value!r}")


def to_numpy(torch, key: str, value: Any) -> np.ndarray:
    """A NumPy copy of a tensor; bfloat16 through ml_dtypes."""
    if not isinstance(value, torch.Tensor):
        raise FormatError(f"{key}: expected a tensor, got {type(value).__name__}")
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
        bfloat16 = require("ml_dtypes").bfloat16
        return value.view(torch.int16).numpy().copy().view(bfloat16)
    if not value.is_floating_point():
        raise FormatError(f"{key}: expected floating-point weights, got {value.dtype}")
    return value.numpy().copy()


def from_numpy(torch, array: np.ndarray) -> Any:
    """A tensor owning a copy of ``array`` (canonical arrays are read-only)."""
    array = np.array(array, order="C", copy=True)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)
