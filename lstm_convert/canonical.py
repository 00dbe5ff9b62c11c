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

A :class:`Model` is an ordered collection of named layers: recurrent layers,
:class:`Dense` (weight ``(out, in)`` like ``nn.Linear``) and :class:`Embedding`
(``(num_embeddings, embedding_dim)``). Everything is validated on
construction, arrays are read-only, and equality is bit for bit, dtypes
included.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .activations import ACTIVATIONS
from .errors import ShapeError, UnsupportedError
from .gates import GATES, layout

DIRECTIONS = ("forward", "reverse")
# How a bidirectional layer combines its two output sequences (as Keras' Bidirectional names them).
MERGE_MODES = ("concat", "sum", "mul", "ave")
ROLES = ("W_x", "W_h", "b_x", "b_h")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

GateKey = tuple[int, str, str]


def tensor_name(layer: str, index: int, direction: str, gate: str, role: str) -> str:
    """The name of one canonical tensor, as used in messages and archives."""
    return f"{layer}.l{index}.{direction}.{gate}.{role}"


def gate_keys(kind: str, num_layers: int, directions: int, backward: bool = False) -> list[GateKey]:
    """Every (layer index, direction, gate) of a recurrent layer, in canonical order."""
    names = ("reverse",) if backward else DIRECTIONS[:directions]
    return [(index, direction, gate) for index in range(num_layers) for direction in names for gate in GATES[kind]]


PEEPHOLE_GATES = ("input", "forget", "output")


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


class _BitEqual:
    """Equality of configuration and of every tensor bit for bit, dtypes included."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.spec() == other.spec() and all(  # type: ignore[attr-defined]
            _same_bits(a, b) for (_, a), (_, b) in zip(self.tensors(), other.tensors()))  # type: ignore

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class RecurrentLayer(_BitEqual):
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
    reset_after: bool = True
    proj_size: int = 0
    projections: Mapping[tuple[int, str], np.ndarray] = field(default_factory=dict)
    go_backwards: bool = False
    cell: bool = False
    merge_mode: str = "concat"
    backward: bool = False
    peepholes: Mapping[GateKey, np.ndarray] = field(default_factory=dict)
    clip: float | None = None
    input_forget: bool = False

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
        if self.merge_mode not in MERGE_MODES or (self.directions == 1 and self.merge_mode != "concat"):
            raise ShapeError(f"{self.name}: merge_mode must be one of {MERGE_MODES} (and 'concat' for one "
                             f"direction), got {self.merge_mode!r}")
        if self.kind != "gru" and not self.reset_after:
            raise ShapeError(f"{self.name}: reset_after=False is a GRU variant, not {self.kind}")
        if self.proj_size and (self.kind != "lstm" or not 0 < self.proj_size < self.hidden_size):
            raise ShapeError(f"{self.name}: proj_size must be an LSTM's, between 1 and hidden_size - 1, "
                             f"got {self.proj_size!r}")
        if self.backward and (self.directions != 1 or self.go_backwards):
            raise ShapeError(f"{self.name}: backward=True is a single reverse direction (ONNX direction='reverse')")
        if (self.peepholes or self.clip is not None or self.input_forget) and self.kind != "lstm":
            raise ShapeError(f"{self.name}: peepholes, clip and input_forget belong to an LSTM, not {self.kind}")
        if self.clip is not None and not (isinstance(self.clip, (int, float)) and self.clip > 0):
            raise ShapeError(f"{self.name}: clip must be a positive number or None, got {self.clip!r}")
        if self.cell and (self.num_layers != 1 or self.directions != 1 or self.go_backwards or self.proj_size):
            raise ShapeError(f"{self.name}: a single-step cell has one layer, one forward direction, no projection")
        _freeze_common(self)
        object.__setattr__(self, "gates", MappingProxyType(self._validated_gates()))
        object.__setattr__(self, "projections", MappingProxyType(self._validated_projections()))
        object.__setattr__(self, "peepholes", MappingProxyType(self._validated_peepholes()))

    # -- structure -------------------------------------------------------

    @property
    def gate_names(self) -> tuple[str, ...]:
        return GATES[self.kind]

    @property
    def direction_names(self) -> tuple[str, ...]:
        return ("reverse",) if self.backward else DIRECTIONS[: self.directions]

    def keys(self) -> list[GateKey]:
        """Every (layer, direction, gate) in canonical order."""
        return gate_keys(self.kind, self.num_layers, self.directions, self.backward)

    def onnx_features(self) -> list[str]:
        """The features of this layer that only ONNX (and the archive) can hold."""
        return [name for name, present in (("peepholes (P)", bool(self.peepholes)), ("clip", self.clip is not None),
                                           ("input_forget", self.input_forget),
                                           ("a single reverse direction", self.backward)) if present]

    def refuse_onnx_features(self, target: str) -> None:
        """UnsupportedError if this layer has ONNX-only features, which ``target`` (say ``nn.LSTM``) lacks."""
        if self.onnx_features():
            raise UnsupportedError(f"{self.name}: {', '.join(self.onnx_features())} of this ONNX layer have no "
                                   f"{target} equivalent; keep it in a safetensors archive, or keep it in ONNX")

    @property
    def state_size(self) -> int:
        """The size of ``h``: ``proj_size`` with a projection, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    @property
    def state_names(self) -> tuple[str, ...]:
        """The recurrent states: ``h`` and ``c`` for an LSTM, ``h`` otherwise."""
        return ("h", "c") if self.kind == "lstm" else ("h",)

    def fan_in(self, index: int) -> int:
        return self.input_size if index == 0 else self.output_size

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
            if key in self.peepholes:
                yield tensor_name(self.name, *key, "p"), self.peepholes[key]
            if self.proj_size and key[2] == self.gate_names[-1]:
                yield tensor_name(self.name, key[0], key[1], "projection", "W_hr"), self.projections[key[:2]]

    def count_params(self, framework: str = "torch") -> int:
        """Parameters as ``framework`` counts them: PyTorch keeps two biases per
        gate, Keras one, so ``nn.LSTM(7, 2)`` has 88 and Keras ``LSTM(2)`` on 7 features 80."""
        weights = sum(a.size for name, a in self.tensors() if not name.endswith(("b_x", "b_h", ".p")))
        weights += sum(a.size for a in self.peepholes.values()) if framework == "onnx" else 0
        biases = layout(framework, self.kind).biases if self.bias else 0
        if framework == "keras" and self.kind == "gru" and self.bias:
            biases = 2 if self.reset_after else 1  # Keras keeps the recurrent bias only after the reset
        return weights + biases * self.hidden_size * len(self.gates)

    @property
    def output_size(self) -> int:
        return self.state_size * (self.directions if self.merge_mode == "concat" else 1)

    def spec(self) -> dict[str, Any]:
        """The configuration without weights, as JSON-compatible data."""
        return {
            "name": self.name, "kind": self.kind, "input_size": self.input_size,
            "hidden_size": self.hidden_size, "num_layers": self.num_layers,
            "directions": self.directions, "bias": self.bias, "activation": self.activation,
            "recurrent_activation": self.recurrent_activation, "dtype": self.dtype,
            "reset_after": self.reset_after, "proj_size": self.proj_size, "go_backwards": self.go_backwards,
            "cell": self.cell, "merge_mode": self.merge_mode, "backward": self.backward,
            "peepholes": bool(self.peepholes), "clip": self.clip, "input_forget": self.input_forget,
            "config": dict(self.config),
            "source": dict(self.source),
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], fetch: Callable[[str], np.ndarray]) -> RecurrentLayer:
        """Rebuild a layer from :meth:`spec` and ``fetch(tensor name) -> array``."""
        fields = {key: spec[key] for key in _RECURRENT_FIELDS}
        roles = ROLES if spec["bias"] else ROLES[:2]
        keys = gate_keys(spec["kind"], spec["num_layers"], spec["directions"], spec["backward"])
        fields["peepholes"] = {key: fetch(tensor_name(spec["name"], *key, "p")) for key in keys
                               if spec["peepholes"] and key[2] in PEEPHOLE_GATES}
        gates = {key: Gate(**{role: fetch(tensor_name(spec["name"], *key, role)) for role in roles})
                 for key in keys}
        projections = {key[:2]: fetch(tensor_name(spec["name"], key[0], key[1], "projection", "W_hr"))
                       for key in keys if spec["proj_size"] and key[2] == GATES[spec["kind"]][-1]}
        return cls(gates=gates, projections=projections, **fields)

    def unstack(self) -> list[RecurrentLayer]:
        """One single-layer RecurrentLayer per stacked layer, in order: the first keeps the name,
        layer ``k`` is named ``<name>_l<k>``. Together they compute the same function."""
        if self.num_layers == 1:
            return [self]
        out = []
        for index in range(self.num_layers):
            gates = {(0, d, g): gate for (i, d, g), gate in self.gates.items() if i == index}
            projections = {(0, d): w for (i, d), w in self.projections.items() if i == index}
            peepholes = {(0, d, g): p for (i, d, g), p in self.peepholes.items() if i == index}
            out.append(dataclasses.replace(
                self, name=self.name if index == 0 else f"{self.name}_l{index}", num_layers=1,
                input_size=self.fan_in(index), gates=gates, projections=projections, peepholes=peepholes,
                go_backwards=self.go_backwards and index == 0))  # the stack reverses its input once
        return out

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
                      "W_h": (self.hidden_size, self.state_size),
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
                frozen[role] = _frozen_array(array, shapes[role], dtype, label)
                dtype = frozen[role].dtype
            out[key] = Gate(**frozen)
        return out

    def _validated_peepholes(self) -> dict[GateKey, np.ndarray]:
        if not self.peepholes:
            return {}
        expected = [key for key in self.keys() if key[2] in PEEPHOLE_GATES]
        if sorted(self.peepholes) != sorted(expected):
            raise ShapeError(f"{self.name}: peepholes for {sorted(self.peepholes)} do not match the gates "
                             f"{PEEPHOLE_GATES} of every layer and direction")
        dtype = self.gates[self.keys()[0]].W_x.dtype
        return {key: _frozen_array(self.peepholes[key], (self.hidden_size,), dtype,
                                   tensor_name(self.name, *key, "p")) for key in expected}

    def _validated_projections(self) -> dict[tuple[int, str], np.ndarray]:
        expected = [(index, d) for index in range(self.num_layers) for d in self.direction_names] \
            if self.proj_size else []
        if sorted(self.projections) != sorted(expected):
            raise ShapeError(f"{self.name}: projections for {sorted(self.projections)} do not match "
                             f"proj_size={self.proj_size} (expected {expected})")
        dtype = self.gates[self.keys()[0]].W_x.dtype
        return {key: _frozen_array(self.projections[key], (self.proj_size, self.hidden_size), dtype,
                                   tensor_name(self.name, *key, "projection", "W_hr")) for key in expected}

    # -- comparison and display ------------------------------------------

    def __repr__(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in ("num_layers", "directions", "bias")
                        if getattr(self, k) != getattr(type(self), k))
        return (f"RecurrentLayer(name={self.name!r}, kind={self.kind!r}, input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}{extra}, dtype={self.dtype!r}, "
                f"gates={'/'.join(self.gate_names)})")


_RECURRENT_FIELDS = ("name", "kind", "input_size", "hidden_size", "num_layers", "directions", "bias",
                     "activation", "recurrent_activation", "reset_after", "proj_size", "go_backwards", "cell",
                     "merge_mode", "backward", "clip", "input_forget", "config", "source")


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    as_int = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(a.view(as_int), b.view(as_int)))


def _frozen_array(array: Any, shape: tuple[int, ...], dtype: np.dtype | None, label: str) -> np.ndarray:
    """A read-only view of ``array`` after checking its dtype (floating, and ``dtype`` if given) and shape."""
    array = np.asarray(array)
    if array.dtype.name not in FLOAT_DTYPES:
        raise ShapeError(f"{label}: expected a floating dtype {FLOAT_DTYPES}, got {array.dtype}")
    if dtype is not None and array.dtype != dtype:
        raise ShapeError(f"{label}: expected dtype {dtype} like the other tensors, got {array.dtype}")
    if array.shape != shape:
        raise ShapeError(f"{label}: expected shape {shape}, got {array.shape}")
    view = array.view()
    view.flags.writeable = False
    return view


def _frozen_json(value: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    try:
        copy = json.loads(json.dumps(dict(value), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{what} must be JSON-compatible: {exc}") from None
    return MappingProxyType(copy)


@dataclass(frozen=True, eq=False)
class Dense(_BitEqual):
    """A fully connected layer: ``y = activation(x @ weight.T + bias)``.

    ``weight`` is ``(out_features, in_features)`` (PyTorch ``Linear.weight``;
    the transpose of a Keras ``Dense`` kernel), ``bias`` ``(out_features,)`` or None.
    Applied to a sequence, it acts on every time step.
    """

    name: str
    weight: np.ndarray
    bias: np.ndarray | None = None
    activation: str = "linear"
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    kind = "dense"

    def __post_init__(self) -> None:
        weight = np.asarray(self.weight)
        if weight.ndim != 2:
            raise ShapeError(f"{self.name}.weight: expected a 2-D (out, in) matrix, got shape {weight.shape}")
        object.__setattr__(self, "weight", _frozen_array(weight, weight.shape, None, f"{self.name}.weight"))
        if self.bias is not None:
            object.__setattr__(self, "bias", _frozen_array(self.bias, (weight.shape[0],), weight.dtype,
                                                           f"{self.name}.bias"))
        if self.activation not in ACTIVATIONS:
            raise ShapeError(f"{self.name}: activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        _freeze_common(self)

    in_features = property(lambda self: int(self.weight.shape[1]))
    out_features = property(lambda self: int(self.weight.shape[0]))
    input_size = in_features
    output_size = out_features
    dtype = property(lambda self: str(self.weight.dtype))

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        yield f"{self.name}.weight", self.weight
        if self.bias is not None:
            yield f"{self.name}.bias", self.bias

    def count_params(self, framework: str = "torch") -> int:
        return sum(a.size for _, a in self.tensors())

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "in_features": self.in_features,
                "out_features": self.out_features, "bias": self.bias is not None,
                "activation": self.activation, "dtype": self.dtype,
                "config": dict(self.config), "source": dict(self.source)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], fetch: Callable[[str], np.ndarray]) -> Dense:
        bias = fetch(f"{spec['name']}.bias") if spec["bias"] else None
        return cls(name=spec["name"], weight=fetch(f"{spec['name']}.weight"), bias=bias,
                   activation=spec["activation"], config=spec["config"], source=spec["source"])

    def __repr__(self) -> str:
        return (f"Dense(name={self.name!r}, in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, activation={self.activation!r}, dtype={self.dtype!r})")


@dataclass(frozen=True, eq=False)
class Embedding(_BitEqual):
    """A lookup table: ``weight`` is ``(num_embeddings, embedding_dim)`` in Keras and PyTorch alike.

    Its input is integer indices ``(batch, time)``.
    """

    name: str
    weight: np.ndarray
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    kind = "embedding"

    def __post_init__(self) -> None:
        weight = np.asarray(self.weight)
        if weight.ndim != 2:
            raise ShapeError(f"{self.name}.weight: expected a 2-D (num_embeddings, embedding_dim) table, "
                             f"got shape {weight.shape}")
        object.__setattr__(self, "weight", _frozen_array(weight, weight.shape, None, f"{self.name}.weight"))
        _freeze_common(self)

    num_embeddings = property(lambda self: int(self.weight.shape[0]))
    embedding_dim = property(lambda self: int(self.weight.shape[1]))
    output_size = embedding_dim
    dtype = property(lambda self: str(self.weight.dtype))

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        yield f"{self.name}.weight", self.weight

    def count_params(self, framework: str = "torch") -> int:
        return self.weight.size

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim, "dtype": self.dtype,
                "config": dict(self.config), "source": dict(self.source)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], fetch: Callable[[str], np.ndarray]) -> Embedding:
        return cls(name=spec["name"], weight=fetch(f"{spec['name']}.weight"),
                   config=spec["config"], source=spec["source"])

    def __repr__(self) -> str:
        return (f"Embedding(name={self.name!r}, num_embeddings={self.num_embeddings}, "
                f"embedding_dim={self.embedding_dim}, dtype={self.dtype!r})")


Layer = RecurrentLayer | Dense | Embedding
LAYER_TYPES: dict[str, type] = {"dense": Dense, "embedding": Embedding, **{k: RecurrentLayer for k in GATES}}


@dataclass(frozen=True, eq=False)
class Model(_BitEqual):
    """An ordered collection of named layers: a model's weights.

    ``config`` keeps model-level settings per framework (for example the Keras
    input shape); ``source`` records where the weights came from.
    """

    layers: tuple[Layer, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if not layers:
            raise ShapeError("a model needs at least one layer")
        for layer in layers:
            if not isinstance(layer, (RecurrentLayer, Dense, Embedding)):
                raise ShapeError(f"a model holds RecurrentLayer, Dense and Embedding layers, "
                                 f"got {type(layer).__name__}")
        names = [layer.name for layer in layers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ShapeError(f"layer names must be unique, got {duplicates} more than once")
        object.__setattr__(self, "layers", layers)
        _freeze_common(self)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, key: int | str) -> Layer:
        if isinstance(key, str):
            for layer in self.layers:
                if layer.name == key:
                    return layer
            raise KeyError(key)
        return self.layers[key]

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        for layer in self.layers:
            yield from layer.tensors()

    def count_params(self, framework: str = "torch") -> int:
        return sum(layer.count_params(framework) for layer in self.layers)

    def spec(self) -> dict[str, Any]:
        return {"layers": [layer.spec() for layer in self.layers],
                "config": dict(self.config), "source": dict(self.source)}

    def __repr__(self) -> str:
        return "Model(" + ", ".join(repr(layer) for layer in self.layers) + ")"


def _freeze_common(obj: Any) -> None:
    """Check the name; copy ``config`` and ``source`` into read-only JSON-compatible mappings."""
    name = getattr(obj, "name", "model")
    if not isinstance(name, str) or not name:
        raise ShapeError(f"a layer name must be a non-empty string, got {name!r}")
    object.__setattr__(obj, "config", _frozen_json(obj.config, f"{name}: config"))
    object.__setattr__(obj, "source", _frozen_json({k: str(v) for k, v in obj.source.items()},
                                                   f"{name}: source"))
