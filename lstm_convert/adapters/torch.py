"""PyTorch adapter: ``nn.LSTM`` modules and their state dicts <-> the canonical form.

PyTorch stores, for stacked layer ``k`` and direction suffix ``s`` (empty, or
``_reverse`` for the backward direction of a bidirectional module)::

    weight_ih_l{k}{s}  (4H, fan_in)   gate blocks i, f, g, o
    weight_hh_l{k}{s}  (4H, H)
    bias_ih_l{k}{s}    (4H,)          only when bias=True
    bias_hh_l{k}{s}    (4H,)

``fan_in`` is ``input_size`` for layer 0 and ``H * directions`` above it.
Both biases map one to one onto the canonical ``b_x`` and ``b_h``, so a
state dict survives the trip bit for bit. ``torch`` is imported on first use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._optional import require
from ..canonical import DIRECTIONS, ROLES, Gate, RecurrentLayer
from ..errors import FormatError, ShapeError, UnsupportedError
from ..gates import join, layout, split

_SUFFIX = {"forward": "", "reverse": "_reverse"}
_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")
# The rows of weight_hh per unit of H tell the cell kind of a bare state dict.
_KIND_BY_GATES = {4: "lstm"}
_MODULE_SETTINGS = ("batch_first", "dropout")


def read(obj: Any, *, name: str = "lstm") -> RecurrentLayer:
    """Read an ``nn.LSTM`` or its state dict into a :class:`RecurrentLayer`."""
    torch = require("torch")
    settings: dict[str, Any] = {}
    if isinstance(obj, torch.nn.Module):
        if not isinstance(obj, torch.nn.LSTM):
            raise UnsupportedError(f"{name}: {type(obj).__name__} is not supported, expected torch.nn.LSTM")
        if obj.proj_size:
            raise UnsupportedError(f"{name}: nn.LSTM with proj_size={obj.proj_size} is not supported yet; "
                                   "use proj_size=0")
        settings = {key: getattr(obj, key) for key in _MODULE_SETTINGS}
        state = obj.state_dict()
    elif isinstance(obj, Mapping):
        state = obj
    else:
        raise UnsupportedError(f"{name}: expected torch.nn.LSTM or a state dict, got {type(obj).__name__}")
    arrays = {key: _to_numpy(torch, key, value) for key, value in state.items()}
    return from_state_arrays(arrays, name=name, settings=settings,
                             source={"framework": "torch", "framework_version": torch.__version__})


def from_state_arrays(arrays: Mapping[str, np.ndarray], *, name: str = "lstm",
                      settings: Mapping[str, Any] | None = None,
                      source: Mapping[str, str] | None = None) -> RecurrentLayer:
    """Build a layer from PyTorch parameter names and NumPy arrays (no torch needed)."""
    parsed = {}
    for key in arrays:
        match = _KEY.match(key)
        if match is None:
            raise FormatError(f"{name}: unexpected key {key!r} in a PyTorch LSTM state dict")
        parsed[key] = (match[1], int(match[2]), "reverse" if match[3] else "forward")
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
    num_layers = 1 + max(index for _, index, _ in parsed.values())
    directions = 2 if any(d == "reverse" for *_, d in parsed.values()) else 1
    bias = "bias_ih_l0" in arrays
    expected = {_key(t, index, d) for index in range(num_layers) for d in DIRECTIONS[:directions]
                for t in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())}
    if set(arrays) != expected:
        missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        raise FormatError(f"{name}: state dict keys do not form an LSTM with {num_layers} layer(s), "
                          f"{directions} direction(s), bias={bias} (missing {missing or 'none'}, "
                          f"unexpected {extra or 'none'})")
    lay = layout("torch", kind)
    gates = {}
    for index in range(num_layers):
        for direction in DIRECTIONS[:directions]:
            blocks = {}
            for tensor, role in zip(lay.tensors, ROLES):
                key = _key(tensor, index, direction)
                if key in arrays:
                    blocks[role] = split(lay, arrays[key], hidden, f"{name}.{key}")
            for gate in lay.order:
                gates[(index, direction, gate)] = Gate(**{role: b[gate] for role, b in blocks.items()})
    return RecurrentLayer(
        kind=kind, input_size=int(arrays["weight_ih_l0"].shape[1]), hidden_size=hidden,
        num_layers=num_layers, directions=directions, bias=bias, gates=gates, name=name,
        config={"torch": dict(settings or {})}, source=dict(source or {"framework": "torch"}),
    )


def to_state_arrays(layer: RecurrentLayer) -> dict[str, np.ndarray]:
    """The PyTorch state dict of ``layer`` as NumPy arrays, in nn.LSTM's key order."""
    _check_representable(layer)
    lay = layout("torch", layer.kind)
    out = {}
    for index in range(layer.num_layers):
        for direction in layer.direction_names:
            gates = {g: layer.gates[(index, direction, g)] for g in lay.order}
            for tensor, role in zip(lay.tensors, ROLES):
                if role.startswith("b") and not layer.bias:
                    continue
                out[_key(tensor, index, direction)] = join(lay, {g: getattr(v, role) for g, v in gates.items()})
    return out


def write(layer: RecurrentLayer, module: Any = None, *, state_dict: bool = False,
          batch_first: bool | None = None) -> Any:
    """Write ``layer`` as a new ``nn.LSTM``, into ``module``, or as a state dict.

    ``batch_first`` defaults to the source module's setting when the weights
    came from PyTorch, and to True otherwise (Keras is batch-major).
    """
    torch = require("torch")
    arrays = to_state_arrays(layer)
    tensors = {key: _from_numpy(torch, value) for key, value in arrays.items()}
    if state_dict:
        return tensors
    if module is None:
        settings = dict(layer.config.get("torch", {}))
        if batch_first is not None:
            settings["batch_first"] = batch_first
        settings.setdefault("batch_first", True)
        module = torch.nn.LSTM(
            layer.input_size, layer.hidden_size, num_layers=layer.num_layers, bias=layer.bias,
            bidirectional=layer.directions == 2, dtype=_torch_dtype(torch, layer.dtype), **settings)
    else:
        _check_module(torch, layer, module)
    module.load_state_dict(tensors, strict=True)
    return module


def _check_representable(layer: RecurrentLayer) -> None:
    for attr, wanted in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        if getattr(layer, attr) != wanted:
            raise UnsupportedError(
                f"{layer.name}: {attr} is {getattr(layer, attr)!r}, but nn.LSTM always uses {wanted}; "
                "no PyTorch LSTM computes this layer. Keep it in a safetensors archive (lstm_convert.save)")


def _check_module(torch, layer: RecurrentLayer, module: Any) -> None:
    if not isinstance(module, torch.nn.LSTM):
        raise UnsupportedError(f"{layer.name}: cannot write into {type(module).__name__}, expected torch.nn.LSTM")
    wanted = {"input_size": layer.input_size, "hidden_size": layer.hidden_size,
              "num_layers": layer.num_layers, "bidirectional": layer.directions == 2,
              "bias": layer.bias, "proj_size": 0}
    for attr, value in wanted.items():
        if getattr(module, attr) != value:
            raise ShapeError(f"{layer.name}: the target nn.LSTM has {attr}={getattr(module, attr)!r}, "
                             f"expected {attr}={value!r}")


def _key(tensor: str, index: int, direction: str) -> str:
    return f"{tensor}_l{index}{_SUFFIX[direction]}"


def _to_numpy(torch, key: str, value: Any) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise FormatError(f"{key}: expected a tensor, got {type(value).__name__}")
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
        bfloat16 = require("ml_dtypes").bfloat16
        return value.view(torch.int16).numpy().copy().view(bfloat16)
    return value.numpy().copy()


def _from_numpy(torch, array: np.ndarray) -> Any:
    array = np.ascontiguousarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _torch_dtype(torch, name: str) -> Any:
    return getattr(torch, name)
