"""The canonical, gate-labelled form of recurrent weights. NumPy only.

A :class:`RecurrentLayer` holds, for every stacked layer ``l``, direction
``d`` (``"forward"`` or ``"reverse"``) and gate ``g``, one :class:`Gate`:

========  ===================  ============================================
role      shape                meaning
========  ===================  ============================================
``W_x``   (H, fan_in)          input weights; fan_in is ``input_size`` for
                               layer 0 and ``H * directions`` above it
``W_h``   (H, H)               recurrent weights
``b_x``   (H,) or None         input-side bias (None when ``bias=False``)
``b_h``   (H,) or None         recurrent-side bias
========  ===================  ============================================

LSTM gates are ``input``, ``forget``, ``cell`` (the candidate) and
``output``; with ``act = activation`` and ``rec = recurrent_activation``::

    i = rec(W_x[input] x + b_x[input] + W_h[input] h + b_h[input])   (f, o alike)
    g = act(W_x[cell] x + b_x[cell] + W_h[cell] h + b_h[cell])
    c' = f * c + i * g
    h' = o * act(c')

Both biases are kept, so a PyTorch layer survives a trip bit for bit; a
framework with a single bias (Keras) puts it in ``b_x`` and zeros in ``b_h``.
Everything is validated on construction, arrays are read-only, and equality
is bit for bit, dtypes included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .activations import ACTIVATIONS
from .errors import ShapeError
from .gates import GATES

DIRECTIONS = ("forward", "reverse")
ROLES = ("W_x", "W_h", "b_x", "b_h")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

GateKey = tuple[int, str, str]


def tensor_name(layer: str, index: int, direction: str, gate: str, role: str) -> str:
    """The name of one canonical tensor, as used in messages and archives."""
    return f"{layer}.l{index}.{direction}.{gate}.{role}"


@dataclass(frozen=True, eq=False)
class Gate:
    """One gate's weights: ``W_x`` (H, fan_in), ``W_h`` (H, H), biases (H,) or None."""

    W_x: np.ndarray  # noqa: N815 - the names of the equations
    W_h: np.ndarray  # noqa: N815
    b_x: np.ndarray | None = None
    b_h: np.ndarray | None = None

    def arrays(self) -> Iterator[tuple[str, np.ndarray | None]]:
        for role in ROLES:
            yield role, getattr(self, role)


@dataclass(frozen=True, eq=False)
class RecurrentLayer:
    """Weights and configuration of one recurrent layer (possibly stacked, bidirectional).

    ``gates`` maps ``(layer index, direction, gate name)`` to a :class:`Gate`.
    ``config`` keeps settings that are not weights (``return_sequences``,
    ``batch_first``, ...) as JSON-compatible values; ``source`` records where
    the weights came from (``framework``, ``framework_version``, ...).
    """

    kind: str
    input_size: int
    hidden_size: int
    gates: Mapping[GateKey, Gate]
    num_layers: int = 1
    directions: int = 1
    bias: bool = True
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    name: str = "lstm"
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in GATES:
            raise ShapeError(f"{self.name}: unknown layer kind {self.kind!r}, expected one of {sorted(GATES)}")
        for attr in ("input_size", "hidden_size", "num_layers"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ShapeError(f"{self.name}: {attr} must be a positive integer, got {value!r}")
        if self.directions not in (1, 2):
            raise ShapeError(f"{self.name}: directions must be 1 or 2, got {self.directions!r}")
        for attr in ("activation", "recurrent_activation"):
            if getattr(self, attr) not in ACTIVATIONS:
                raise ShapeError(f"{self.name}: {attr} {getattr(self, attr)!r} is not one of "
                                 f"{sorted(ACTIVATIONS)}")
        object.__setattr__(self, "config", _frozen_json(self.config, f"{self.name}: config"))
        object.__setattr__(self, "source", _frozen_json(
            {k: str(v) for k, v in self.source.items()}, f"{self.name}: source"))
        object.__setattr__(self, "gates", MappingProxyType(self._validated_gates()))

    # -- structure -------------------------------------------------------

    @property
    def gate_names(self) -> tuple[str, ...]:
        return GATES[self.kind]

    @property
    def direction_names(self) -> tuple[str, ...]:
        return DIRECTIONS[: self.directions]

    def keys(self) -> list[GateKey]:
        """Every (layer, direction, gate) in canonical order."""
        return [(index, direction, gate)
                for index in range(self.num_layers)
                for direction in self.direction_names
                for gate in self.gate_names]

    def fan_in(self, index: int) -> int:
        return self.input_size if index == 0 else self.hidden_size * self.directions

    def gate(self, name: str, layer: int = 0, direction: str = "forward") -> Gate:
        return self.gates[(layer, direction, name)]

    @property
    def dtype(self) -> str:
        return str(self.gates[self.keys()[0]].W_x.dtype)

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every canonical tensor with its name, in canonical order (biases skipped when absent)."""
        for key in self.keys():
            for role, array in self.gates[key].arrays():
                if array is not None:
                    yield tensor_name(self.name, *key, role), array

    def count_params(self, biases: int = 2) -> int:
        """Parameters as a framework with ``biases`` bias vectors per gate counts them
        (2 for PyTorch, 1 for Keras)."""
        weights = sum(g.W_x.size + g.W_h.size for g in self.gates.values())
        return weights + (biases * self.hidden_size * len(self.gates) if self.bias else 0)

    def spec(self) -> dict[str, Any]:
        """The configuration without weights, as JSON-compatible data."""
        return {
            "name": self.name, "kind": self.kind, "input_size": self.input_size,
            "hidden_size": self.hidden_size, "num_layers": self.num_layers,
            "directions": self.directions, "bias": self.bias, "activation": self.activation,
            "recurrent_activation": self.recurrent_activation, "dtype": self.dtype,
            "config": dict(self.config), "source": dict(self.source),
        }

    # -- validation ------------------------------------------------------

    def _validated_gates(self) -> dict[GateKey, Gate]:
        expected = self.keys()
        missing = [k for k in expected if k not in self.gates]
        extra = [k for k in self.gates if k not in expected]
        if missing or extra:
            raise ShapeError(f"{self.name}: gates do not match the configuration "
                             f"(missing {missing or 'none'}, unexpected {extra or 'none'})")
        dtype = None
        out = {}
        for key in expected:
            gate = self.gates[key]
            if not isinstance(gate, Gate):
                raise ShapeError(f"{self.name}: gate {key} must be a Gate, got {type(gate).__name__}")
            shapes = {"W_x": (self.hidden_size, self.fan_in(key[0])),
                      "W_h": (self.hidden_size, self.hidden_size),
                      "b_x": (self.hidden_size,), "b_h": (self.hidden_size,)}
            frozen = {}
            for role, array in gate.arrays():
                label = tensor_name(self.name, *key, role)
                if role in ("b_x", "b_h") and not self.bias:
                    if array is not None:
                        raise ShapeError(f"{label}: the layer has bias=False, but a bias was given")
                    frozen[role] = None
                    continue
                if array is None:
                    raise ShapeError(f"{label}: missing (the layer has bias=True)")
                array = np.asarray(array)
                if array.dtype.name not in FLOAT_DTYPES:
                    raise ShapeError(f"{label}: expected a floating dtype {FLOAT_DTYPES}, got {array.dtype}")
                dtype = dtype or array.dtype
                if array.dtype != dtype:
                    raise ShapeError(f"{label}: expected dtype {dtype} like the other tensors, got {array.dtype}")
                if array.shape != shapes[role]:
                    raise ShapeError(f"{label}: expected shape {shapes[role]}, got {array.shape}")
                view = array.view()
                view.flags.writeable = False
                frozen[role] = view
            out[key] = Gate(**frozen)
        return out

    # -- comparison and display ------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecurrentLayer):
            return NotImplemented
        if self.spec() != other.spec():
            return False
        return all(_same_bits(a, b) for (_, a), (_, b) in zip(self.tensors(), other.tensors()))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in ("num_layers", "directions", "bias")
                        if getattr(self, k) != getattr(type(self), k))
        return (f"RecurrentLayer(name={self.name!r}, kind={self.kind!r}, input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}{extra}, dtype={self.dtype!r}, "
                f"gates={'/'.join(self.gate_names)})")


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    as_int = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(a.view(as_int), b.view(as_int)))


def _frozen_json(value: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    try:
        copy = json.loads(json.dumps(dict(value), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{what} must be JSON-compatible: {exc}") from None
    return MappingProxyType(copy)
