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

What a layer computes around its weights is part of it, whatever framework it
came from: ``return_sequences`` (False: only the last step is returned),
``return_state``, ``go_backwards``, ``stateful`` and, for masked input,
``zero_output_for_mask``. A plain PyTorch module is the default: the whole
sequence, no mask, from zero states.

A :class:`Model` is an ordered chain of named layers: recurrent layers,
:class:`Dense` (weight ``(out, in)`` like ``nn.Linear``), :class:`Embedding`
(``(num_embeddings, embedding_dim)``, index 0 is padding with ``mask_zero``)
and :class:`Masking`, the layers around recurrent ones (:class:`Conv1D`, :class:`BatchNorm`,
:class:`LayerNorm`, :class:`Activation`, :class:`Flatten`, :class:`Pooling`), with the model's input
shape, dtype and fixed batch size.
Everything is validated on construction, arrays are read-only, and equality
is bit for bit, dtypes included.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import sys
import math
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._lazy import Placeholder, asarray, np

from . import _dtypes
from .activations import ACTIVATIONS
from .errors import ConfigError, SettingError, ShapeError, UnsupportedError
from .gates import GATES, param_count

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
    return list(_gate_keys(kind, num_layers, directions, backward))


@functools.lru_cache(maxsize=256)
def _gate_keys(kind: str, num_layers: int, directions: int, backward: bool) -> tuple[GateKey, ...]:
    names = ("reverse",) if backward else DIRECTIONS[:directions]
    return tuple((index, direction, gate) for index in range(num_layers) for direction in names
                 for gate in GATES[kind])


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
    # Per gate, coefficients (H,) of a normalisation of its pre-activation before the bias (TFLite's layer-norm LSTM)
    layer_norm: Mapping[GateKey, np.ndarray] = field(default_factory=dict)
    clip: float | None = None
    cell_clip: float | None = None  # the cell state clipped to [-cell_clip, cell_clip] after each step (TFLite)
    input_forget: bool = False
    return_sequences: bool = True
    return_state: bool = False
    zero_output_for_mask: bool = False
    stateful: bool = False
    forget_bias: float = 0.0  # a constant the layer adds to its forget gate at run time (Haiku's hk.LSTM: 1.0)

    def __post_init__(self) -> None:
        # The settings' checks, once per distinct combination of settings (and of their types, so that
        # True is not taken for 1): a state dict of 2,000 alike LSTMs checks them once.
        settings = (*_checked_settings(self), bool(self.peepholes), bool(self.layer_norm))
        checked = (settings, tuple(map(type, settings)))
        try:
            known = checked in _CHECKED
        except TypeError:  # a setting that is no hashable value: the checks say what is wrong with it
            known = False
        if not known:
            self._check_settings()
            if len(_CHECKED) < 1024:
                _CHECKED.add(checked)
        object.__setattr__(self, "forget_bias", float(self.forget_bias))
        if self.directions == 2:  # as Keras' Bidirectional: masked steps give zeros exactly when it returns sequences
            object.__setattr__(self, "zero_output_for_mask", self.return_sequences)
        _freeze_common(self)
        object.__setattr__(self, "gates", MappingProxyType(self._validated_gates()))
        object.__setattr__(self, "projections", MappingProxyType(self._validated_projections()))
        object.__setattr__(self, "peepholes", MappingProxyType(self._validated_peepholes()))
        object.__setattr__(self, "layer_norm", MappingProxyType(self._validated_layer_norm()))
        object.__setattr__(self, "_tensors", tuple(self._listed_tensors()))

    def _check_settings(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in GATES:
            raise ConfigError(f"{self.name}: unknown layer kind {self.kind!r}, expected one of {sorted(GATES)}")
        for attr in ("input_size", "hidden_size", "num_layers"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{self.name}: {attr} must be a positive integer, got {value!r}")
        if isinstance(self.directions, bool) or self.directions not in (1, 2):
            raise ConfigError(f"{self.name}: directions must be 1 or 2, got {self.directions!r}")
        for attr in ("activation", "recurrent_activation"):
            if not isinstance(getattr(self, attr), str) or getattr(self, attr) not in ACTIVATIONS:
                raise ConfigError(f"{self.name}: {attr} {getattr(self, attr)!r} is not one of "
                                 f"{sorted(ACTIVATIONS)}")
        if self.merge_mode not in MERGE_MODES or (self.directions == 1 and self.merge_mode != "concat"):
            raise ConfigError(f"{self.name}: merge_mode must be one of {MERGE_MODES} (and 'concat' for one "
                             f"direction), got {self.merge_mode!r}")
        if self.kind != "gru" and not self.reset_after:
            raise ConfigError(f"{self.name}: reset_after=False is a GRU variant, not {self.kind}")
        if self.proj_size and (self.kind != "lstm" or not 0 < self.proj_size < self.hidden_size):
            raise ConfigError(f"{self.name}: proj_size must be an LSTM's, between 1 and hidden_size - 1, "
                             f"got {self.proj_size!r}")
        if self.backward and (self.directions != 1 or self.go_backwards):
            raise ConfigError(f"{self.name}: backward=True is a single reverse direction; it takes neither "
                              "directions=2 nor go_backwards")
        if (self.peepholes or self.layer_norm or self.clip is not None or self.cell_clip is not None
                or self.input_forget) and self.kind != "lstm":
            raise ConfigError(f"{self.name}: peepholes, layer_norm, clip, cell_clip and input_forget belong to an "
                              f"LSTM, not {self.kind}")
        if isinstance(self.forget_bias, bool) or not isinstance(self.forget_bias, (int, float)) or not \
                math.isfinite(self.forget_bias) or (self.forget_bias and self.kind != "lstm"):
            raise ConfigError(f"{self.name}: forget_bias must be a finite number, and zero but for an LSTM, got "
                              f"{self.forget_bias!r}")
        for attr in ("clip", "cell_clip"):
            value = getattr(self, attr)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value < math.inf):
                raise ConfigError(f"{self.name}: {attr} must be a positive number or None, got {value!r}")
        if self.cell and (self.num_layers != 1 or self.directions != 1 or self.go_backwards or self.proj_size):
            raise ConfigError(f"{self.name}: a single-step cell has one layer, one forward direction, no projection")
        for attr in ("return_sequences", "return_state", "zero_output_for_mask", "stateful", "bias", "cell",
                     "go_backwards", "backward", "input_forget", "reset_after"):
            if not isinstance(getattr(self, attr), bool):
                raise ConfigError(f"{self.name}: {attr} must be True or False, got {getattr(self, attr)!r}")

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

    def cell_features(self) -> list[str]:
        """What this layer's cells compute beyond the plain equations: peepholes, a clipped cell state,
        coupled input and forget gates, a single reverse direction. Most targets have none of these."""
        return [name for name, present in (("peepholes (P)", bool(self.peepholes)),
                                           ("layer norm of the gates (LN)", bool(self.layer_norm)),
                                           ("clip", self.clip is not None),
                                           (f"cell_clip={self.cell_clip!r} (the cell state clipped)",
                                            self.cell_clip is not None),
                                           ("input_forget", self.input_forget),
                                           ("a single reverse direction", self.backward)) if present]

    def semantics(self) -> list[str]:
        """What this layer computes beyond running its weights over the whole sequence from the start
        (the plain meaning of a PyTorch module): each as ``setting=value``, empty for a plain layer."""
        flags = [("return_sequences=False", not self.return_sequences), ("return_state=True", self.return_state),
                 ("go_backwards=True", self.go_backwards), ("stateful=True", self.stateful),
                 (f"merge_mode={self.merge_mode!r}", self.merge_mode != "concat")]
        return [text for text, on in flags if on]

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
        return _dtypes.name(self._tensors[0][1].dtype)  # the first W_x's (every tensor's)

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every canonical tensor with its name, in canonical order (biases skipped when absent)."""
        return iter(self._tensors)  # listed once, when the layer was made: it cannot change

    def _listed_tensors(self) -> list[tuple[str, np.ndarray]]:
        out = []
        last = self.gate_names[-1]
        name, gates, peepholes, layer_norm = self.name, self.gates, self.peepholes or None, self.layer_norm or None
        for key in _gate_keys(self.kind, self.num_layers, self.directions, self.backward):
            gate = gates[key]
            prefix = f"{name}.l{key[0]}.{key[1]}.{key[2]}."  # tensor_name's, but for the role
            if gate.b_x is not None and gate.b_h is not None:
                out += ((prefix + "W_x", gate.W_x), (prefix + "W_h", gate.W_h), (prefix + "b_x", gate.b_x),
                        (prefix + "b_h", gate.b_h))
            else:
                out += ((prefix + role, array) for role, array in gate.arrays() if array is not None)
            if peepholes and key in peepholes:
                out.append((prefix + "p", peepholes[key]))
            if layer_norm:
                out.append((prefix + "ln", layer_norm[key]))
            if self.proj_size and key[2] == last:
                out.append((tensor_name(self.name, key[0], key[1], "projection", "W_hr"), self.projections[key[:2]]))
        return out

    def count_params(self, framework: str = "torch") -> int:
        """Parameters as ``framework`` counts them: PyTorch keeps two biases per
        gate, Keras one, so ``nn.LSTM(7, 2)`` has 88 and Keras ``LSTM(2)`` on 7 features 80."""
        return param_count(self, framework)

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
            "return_sequences": self.return_sequences, "return_state": self.return_state,
            "zero_output_for_mask": self.zero_output_for_mask, "stateful": self.stateful,
            **({"forget_bias": self.forget_bias} if self.forget_bias else {}),
            **({"cell_clip": self.cell_clip} if self.cell_clip is not None else {}),
            **({"layer_norm": True} if self.layer_norm else {}),
            "config": dict(self.config),
            "source": dict(self.source),
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], fetch: Callable[[str], np.ndarray]) -> RecurrentLayer:
        """Rebuild a layer from :meth:`spec` and ``fetch(tensor name) -> array``."""
        fields = {key: spec[key] for key in _RECURRENT_FIELDS}
        fields["forget_bias"] = spec.get("forget_bias", 0.0)  # archives before it have none
        fields["cell_clip"] = spec.get("cell_clip")  # nor this
        roles = ROLES if spec["bias"] else ROLES[:2]
        keys = gate_keys(spec["kind"], spec["num_layers"], spec["directions"], spec["backward"])
        fields["peepholes"] = {key: fetch(tensor_name(spec["name"], *key, "p")) for key in keys
                               if spec["peepholes"] and key[2] in PEEPHOLE_GATES}
        gates = {key: Gate(**{role: fetch(tensor_name(spec["name"], *key, role)) for role in roles})
                 for key in keys}
        fields["layer_norm"] = {key: fetch(tensor_name(spec["name"], *key, "ln")) for key in keys} \
            if spec.get("layer_norm") else {}
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
            layer_norm = {(0, d, g): c for (i, d, g), c in self.layer_norm.items() if i == index}
            last = index == self.num_layers - 1  # only the top layer may return its last step alone
            # A framework's record names the stacked module (a PyTorch key prefix, say), which no single
            # layer of it is: each is then named by its own name.
            config = {k: v for k, v in self.config.items() if k not in ("torch",)}
            out.append(dataclasses.replace(
                self, name=self.name if index == 0 else f"{self.name}_l{index}", num_layers=1, config=config,
                input_size=self.fan_in(index), gates=gates, projections=projections, peepholes=peepholes,
                layer_norm=layer_norm,
                go_backwards=self.go_backwards and index == 0,  # the stack reverses its input once
                return_sequences=self.return_sequences or not last, return_state=self.return_state and last,
                zero_output_for_mask=self.zero_output_for_mask and last))
        return out

    # -- validation ------------------------------------------------------

    def _validated_gates(self) -> dict[GateKey, Gate]:
        expected = _gate_keys(self.kind, self.num_layers, self.directions, self.backward)
        if len(self.gates) != len(expected) or not all(key in self.gates for key in expected):
            missing = [k for k in expected if k not in self.gates]
            extra = [k for k in self.gates if k not in expected]
            raise ShapeError(f"{self.name}: gates do not match the configuration "
                             f"(missing {missing or 'none'}, unexpected {extra or 'none'})")
        hidden, state = self.hidden_size, self.state_size
        roles = ROLES if self.bias else ROLES[:2]
        ndarray = np.ndarray if sys.modules.get("numpy") is not None else None  # none is one before NumPy is imported
        dtype = None
        out = {}
        for key in expected:
            gate = self.gates[key]
            if not isinstance(gate, Gate):
                raise ShapeError(f"{self.name}: gate {key} must be a Gate, got {type(gate).__name__}")
            shapes = ((hidden, self.fan_in(key[0])), (hidden, state), (hidden,), (hidden,))
            if type(gate) is Gate and _kept(gate, shapes, dtype, ndarray, self.bias):
                out[key] = gate  # read-only arrays of the right shapes and dtype already (a mapped file's)
                continue
            frozen = []
            for role, shape in zip(roles, shapes):
                array = getattr(gate, role)
                if type(array) is ndarray and array.shape == shape and array.dtype == dtype:  # most: _frozen_array's
                    view = array.view()  # fast path, without the call
                    view.flags.writeable = False
                    frozen.append(view)
                    continue
                if array is None:
                    raise ShapeError(f"{tensor_name(self.name, *key, role)}: missing (the layer has bias=True)")
                array = _frozen_array(array, shape, dtype, (self.name, *key, role))
                dtype = array.dtype
                frozen.append(array)
            if not self.bias:
                for role in ROLES[2:]:
                    if getattr(gate, role) is not None:
                        raise ShapeError(f"{tensor_name(self.name, *key, role)}: the layer has bias=False, but a "
                                         "bias was given")
            out[key] = Gate(*frozen)
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

    def _validated_layer_norm(self) -> dict[GateKey, np.ndarray]:
        if not self.layer_norm:
            return {}
        expected = self.keys()
        if sorted(self.layer_norm) != sorted(expected):
            raise ShapeError(f"{self.name}: layer-norm coefficients for {sorted(self.layer_norm)} do not match the "
                             f"gates (expected {expected})")
        dtype = self.gates[expected[0]].W_x.dtype
        return {key: _frozen_array(self.layer_norm[key], (self.hidden_size,), dtype, tensor_name(self.name, *key, "ln"))
                for key in expected}

    def _validated_projections(self) -> dict[tuple[int, str], np.ndarray]:
        if not self.proj_size and not self.projections:
            return {}
        expected = [(index, d) for index in range(self.num_layers) for d in self.direction_names] \
            if self.proj_size else []
        if sorted(self.projections) != sorted(expected):
            raise ShapeError(f"{self.name}: projections for {sorted(self.projections)} do not match "
                             f"proj_size={self.proj_size} (expected {expected})")
        dtype = self.gates[self.keys()[0]].W_x.dtype
        return {key: _frozen_array(self.projections[key], (self.proj_size, self.hidden_size), dtype,
                                   tensor_name(self.name, *key, "projection", "W_hr")) for key in expected}

    # -- comparison and display ------------------------------------------

    def _repr_html_(self) -> str:
        """The gate table as HTML, for notebooks."""
        from ._html import layer_html

        return layer_html(self)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in ("num_layers", "directions", "bias")
                        if getattr(self, k) != getattr(type(self), k))
        return (f"RecurrentLayer(name={self.name!r}, kind={self.kind!r}, input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}{extra}, dtype={self.dtype!r}, "
                f"gates={'/'.join(self.gate_names)})")


_RECURRENT_FIELDS = ("name", "kind", "input_size", "hidden_size", "num_layers", "directions", "bias",
                     "activation", "recurrent_activation", "reset_after", "proj_size", "go_backwards", "cell",
                     "merge_mode", "backward", "clip", "input_forget", "return_sequences", "return_state",
                     "zero_output_for_mask", "stateful", "config", "source")
# The settings RecurrentLayer._check_settings looks at (beside whether there are peepholes and layer norms).
_CHECKED_SETTINGS = ("kind", "input_size", "hidden_size", "num_layers", "directions", "bias", "activation",
                     "recurrent_activation", "reset_after", "proj_size", "go_backwards", "cell", "merge_mode",
                     "backward", "clip", "cell_clip", "input_forget", "return_sequences", "return_state",
                     "zero_output_for_mask", "stateful", "forget_bias")
_checked_settings = operator.attrgetter(*_CHECKED_SETTINGS)
_CHECKED: set = set()


def folded(model: Model) -> Model:
    """``model`` with every LSTM's ``forget_bias`` constant added into its forget gate's ``b_x`` (in the
    weights' dtype) and set to zero: what a target without such a constant holds. Said in the layer's
    provenance (``source["folded"]``)."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, RecurrentLayer) and layer.forget_bias:
            if not layer.bias:
                raise UnsupportedError(f"{layer.name}: forget_bias {layer.forget_bias!r} is a constant this target "
                                       "has no place for, and the layer has no bias to fold it into")
            gates = {}
            for key, gate in layer.gates.items():
                if key[2] == "forget" and gate.b_x is not None:
                    gate = Gate(gate.W_x, gate.W_h, (gate.b_x + np.asarray(layer.forget_bias, gate.b_x.dtype)).astype(
                        gate.b_x.dtype), gate.b_h)
                gates[key] = gate
            note = f"forget_bias {layer.forget_bias!r} (a constant of the layer) folded into the forget gate's bias"
            said = layer.source.get("folded")
            layer = dataclasses.replace(layer, gates=gates, forget_bias=0.0,
                                        source={**layer.source, "folded": f"{said}; {note}" if said else note})
        layers.append(layer)
    return dataclasses.replace(model, layers=tuple(layers))


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    as_int = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(a.view(as_int), b.view(as_int)))


def _kept(gate: Gate, shapes: tuple[tuple[int, ...], ...], dtype: Any, ndarray: type | None, bias: bool) -> bool:
    """Whether ``gate`` is kept as it is: NumPy arrays that are read-only already (views of a mapped file, or
    of another layer's frozen arrays), of ``shapes`` and ``dtype``, with biases exactly when ``bias``."""
    w_x, w_h, b_x, b_h = gate.W_x, gate.W_h, gate.b_x, gate.b_h
    if not (type(w_x) is ndarray and type(w_h) is ndarray and w_x.dtype == dtype and w_h.dtype == dtype
            and w_x.shape == shapes[0] and w_h.shape == shapes[1]
            and not w_x.flags.writeable and not w_h.flags.writeable):
        return False
    if not bias:
        return b_x is None and b_h is None
    return (type(b_x) is ndarray and type(b_h) is ndarray and b_x.dtype == dtype and b_h.dtype == dtype
            and b_x.shape == shapes[2] and b_h.shape == shapes[3]
            and not b_x.flags.writeable and not b_h.flags.writeable)


def _frozen_array(array: Any, shape: tuple[int, ...], dtype: np.dtype | None,
                  label: str | tuple[str, int, str, str, str]) -> np.ndarray:
    """A read-only view of ``array`` after checking its dtype (floating, and ``dtype`` if given) and shape.
    ``label`` names the tensor in messages: a name, or the arguments of :func:`tensor_name`."""
    if type(array) is not Placeholder and type(array) is np.ndarray and array.shape == shape and \
            array.dtype == dtype:  # most tensors: the dtype was checked on the first of them (and a placeholder
        view = array.view()  # needs no NumPy)
        view.flags.writeable = False
        return view
    if isinstance(label, tuple):
        label = tensor_name(*label)
    array = asarray(array)
    if _dtypes.name(array.dtype) not in FLOAT_DTYPES:
        raise ShapeError(f"{label}: expected a floating dtype {FLOAT_DTYPES}, got {array.dtype}")
    if dtype is not None and array.dtype != dtype:
        raise ShapeError(f"{label}: expected dtype {dtype} like the other tensors, got {array.dtype}")
    if array.shape != shape:
        raise ShapeError(f"{label}: expected shape {shape}, got {array.shape}")
    if isinstance(array, Placeholder):
        return array
    view = array.view()
    view.flags.writeable = False
    return view


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


class _NotPlain(Exception):
    pass


def _plain_copy(value: Any) -> Any:
    """A copy of JSON data made of dicts with string keys, lists, strings, ints, finite floats, booleans and
    None, keys sorted: what the JSON round trip of :func:`_frozen_json` gives, at a tenth of its cost;
    _NotPlain for anything else, which the round trip then converts or refuses."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if value - value == 0.0:  # finite
            return value
        raise _NotPlain
    if kind is dict:
        if not all(type(key) is str for key in value):
            raise _NotPlain
        return {key: _plain_copy(value[key]) for key in sorted(value)}
    if kind is list or kind is tuple:
        return [_plain_copy(item) for item in value]
    raise _NotPlain


def _frozen_json(value: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    try:
        return MappingProxyType(_plain_copy(dict(value)))
    except _NotPlain:
        pass
    try:
        copy = json.loads(json.dumps(dict(value), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be JSON-compatible: {exc}") from None
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
        weight = asarray(self.weight)
        if weight.ndim != 2:
            raise ShapeError(f"{self.name}.weight: expected a 2-D (out, in) matrix, got shape {weight.shape}")
        object.__setattr__(self, "weight", _frozen_array(weight, weight.shape, None, f"{self.name}.weight"))
        if self.bias is not None:
            object.__setattr__(self, "bias", _frozen_array(self.bias, (weight.shape[0],), weight.dtype,
                                                           f"{self.name}.bias"))
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"{self.name}: activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}")
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

    def semantics(self) -> list[str]:
        """What this layer computes beyond ``x @ weight.T + bias`` (see :meth:`RecurrentLayer.semantics`)."""
        return [f"activation={self.activation!r}"] if self.activation != "linear" else []

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
    mask_zero: bool = False

    kind = "embedding"

    def __post_init__(self) -> None:
        weight = asarray(self.weight)
        if weight.ndim != 2:
            raise ShapeError(f"{self.name}.weight: expected a 2-D (num_embeddings, embedding_dim) table, "
                             f"got shape {weight.shape}")
        if not isinstance(self.mask_zero, bool):
            raise ConfigError(f"{self.name}: mask_zero must be True or False, got {self.mask_zero!r}")
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

    def semantics(self) -> list[str]:
        """``mask_zero=True`` when index 0 marks padding that the following layers skip."""
        return ["mask_zero=True"] if self.mask_zero else []

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim, "dtype": self.dtype, "mask_zero": self.mask_zero,
                "config": dict(self.config), "source": dict(self.source)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], fetch: Callable[[str], np.ndarray]) -> Embedding:
        return cls(name=spec["name"], weight=fetch(f"{spec['name']}.weight"), mask_zero=spec["mask_zero"],
                   config=spec["config"], source=spec["source"])

    def __repr__(self) -> str:
        return (f"Embedding(name={self.name!r}, num_embeddings={self.num_embeddings}, "
                f"embedding_dim={self.embedding_dim}, dtype={self.dtype!r}"
                + (", mask_zero=True)" if self.mask_zero else ")"))


@dataclass(frozen=True, eq=False)
class Masking(_BitEqual):
    """Keras' ``Masking(mask_value)``: a time step whose every feature equals ``mask_value`` is masked.

    It holds no weights. Its output is its input with masked steps set to zero; the recurrent layers
    after it skip masked steps (their states carry over unchanged), and Dense layers pass the mask on.
    ``size`` is the number of features.
    """

    name: str
    size: int
    mask_value: float = 0.0
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    kind = "masking"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"{self.name}: size must be a positive integer, got {self.size!r}")
        if isinstance(self.mask_value, bool) or not isinstance(self.mask_value, (int, float)) \
                or not _finite(self.mask_value):
            raise ConfigError(f"{self.name}: mask_value must be a finite number, got {self.mask_value!r}")
        object.__setattr__(self, "mask_value", float(self.mask_value))
        _freeze_common(self)

    input_size = property(lambda self: self.size)
    output_size = input_size
    dtype = None  # no weights

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        return iter(())

    def count_params(self, framework: str = "torch") -> int:
        return 0

    def semantics(self) -> list[str]:
        return [f"Masking(mask_value={self.mask_value!r})"]

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "size": self.size, "mask_value": self.mask_value,
                "config": dict(self.config), "source": dict(self.source)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], fetch: Callable[[str], np.ndarray]) -> Masking:
        return cls(name=spec["name"], size=spec["size"], mask_value=spec["mask_value"], config=spec["config"],
                   source=spec["source"])

    def __repr__(self) -> str:
        return f"Masking(name={self.name!r}, size={self.size}, mask_value={self.mask_value!r})"


class _Plain(_BitEqual):
    """What the layers around recurrent ones share: named array fields (``_ARRAYS``, None when absent),
    settings (``_SETTINGS``, JSON values), and a spec that lists both."""

    _ARRAYS: tuple[str, ...] = ()
    _SETTINGS: tuple[str, ...] = ()

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        for attr in self._ARRAYS:
            array = getattr(self, attr)
            if array is not None:
                yield f"{self.name}.{attr}", array

    def count_params(self, framework: str = "torch") -> int:
        return sum(a.size for _, a in self.tensors())

    @property
    def dtype(self) -> str | None:
        return next((str(a.dtype) for _, a in self.tensors()), None)

    def semantics(self) -> list[str]:
        return []

    def spec(self) -> dict[str, Any]:
        settings = {key: list(v) if isinstance(v := getattr(self, key), tuple) else v for key in self._SETTINGS}
        return {"name": self.name, "kind": self.kind, **settings, "dtype": self.dtype,
                "arrays": [attr for attr in self._ARRAYS if getattr(self, attr) is not None],
                "config": dict(self.config), "source": dict(self.source)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], fetch: Callable[[str], np.ndarray]) -> Any:
        arrays = spec["arrays"]
        if not isinstance(arrays, list) or not set(arrays) <= set(cls._ARRAYS):
            raise ConfigError(f"{spec['name']}: arrays must list some of {cls._ARRAYS}, got {arrays!r}")
        settings = {key: tuple(v) if isinstance(v := spec[key], list) else v for key in cls._SETTINGS}
        return cls(name=spec["name"], **settings, **{a: fetch(f"{spec['name']}.{a}") for a in arrays},
                   config=spec["config"], source=spec["source"])

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={getattr(self, key)!r}" for key in self._SETTINGS)
        return f"{type(self).__name__}(name={self.name!r}, {shown}, dtype={self.dtype!r})"

    def _vector(self, attr: str, size: int, dtype: Any) -> np.dtype | None:
        """Freeze the (size,) array ``attr`` if present; return its dtype (or ``dtype``)."""
        value = getattr(self, attr)
        if value is None:
            return dtype
        array = _frozen_array(value, (size,), dtype, f"{self.name}.{attr}")
        object.__setattr__(self, attr, array)
        return array.dtype


def _positive(obj: Any, *attrs: str) -> None:
    for attr in attrs:
        value = getattr(obj, attr)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{obj.name}: {attr} must be a positive integer, got {value!r}")


def _small_positive(obj: Any, attr: str) -> None:
    value = getattr(obj, attr)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{obj.name}: {attr} must be a number between 0 and 1, got {value!r}")
    object.__setattr__(obj, attr, float(value))


@dataclass(frozen=True, eq=False, repr=False)
class Conv1D(_Plain):
    """A convolution over time: ``weight`` is ``(out_channels, in_channels // groups, kernel_size)``, as
    ``nn.Conv1d`` holds it (a Keras ``Conv1D`` kernel is ``(kernel_size, in // groups, out)``).

    Its input and output are sequences ``(batch, time, channels)``. ``padding`` is the zeros added before
    and after the sequence, ``(left, right)`` (Keras ``valid`` is ``(0, 0)``, ``causal`` ``((k - 1) * dilation,
    0)``, and ``same`` with stride 1 splits ``(k - 1) * dilation`` with the odd one on the right, as PyTorch's
    ``same`` does), or ``"same"`` for Keras' ``same`` with a stride above 1, which pads by the input's
    length: ``max((ceil(L / stride) - 1) * stride + (k - 1) * dilation + 1 - L, 0)`` in all, the odd one on
    the right. ``activation`` is applied after the bias. It takes no mask: a mask before it ends there.
    """

    name: str
    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    padding: tuple[int, int] | str = (0, 0)
    activation: str = "linear"
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    kind = "conv1d"
    _ARRAYS = ("weight", "bias")
    _SETTINGS = ("stride", "dilation", "groups", "padding", "activation")

    def __post_init__(self) -> None:
        weight = asarray(self.weight)
        if weight.ndim != 3:
            raise ShapeError(f"{self.name}.weight: expected a 3-D (out_channels, in_channels // groups, "
                             f"kernel_size) array, got shape {weight.shape}")
        _positive(self, "stride", "dilation", "groups")
        if weight.shape[0] % self.groups:
            raise ShapeError(f"{self.name}.weight: {weight.shape[0]} output channels do not split into "
                             f"groups={self.groups}")
        padding = self.padding
        if isinstance(padding, list):
            padding = tuple(padding)
        if padding != "same" and not (isinstance(padding, tuple) and len(padding) == 2 and all(
                isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in padding)):
            raise ConfigError(f"{self.name}: padding must be (left, right) non-negative integers or 'same', "
                              f"got {self.padding!r}")
        object.__setattr__(self, "padding", padding)
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"{self.name}: activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        object.__setattr__(self, "weight", _frozen_array(weight, weight.shape, None, f"{self.name}.weight"))
        self._vector("bias", weight.shape[0], weight.dtype)
        _freeze_common(self)

    out_channels = property(lambda self: int(self.weight.shape[0]))
    in_channels = property(lambda self: int(self.weight.shape[1]) * self.groups)
    kernel_size = property(lambda self: int(self.weight.shape[2]))
    input_size = in_channels
    output_size = out_channels

    def pads(self, length: int) -> tuple[int, int]:
        """The zeros added (before, after) to a sequence of ``length`` steps."""
        if self.padding != "same":
            return self.padding  # type: ignore[return-value]
        total = max((-(-length // self.stride) - 1) * self.stride + (self.kernel_size - 1) * self.dilation + 1
                    - length, 0)
        return total // 2, total - total // 2

    def output_length(self, length: int) -> int:
        left, right = self.pads(length)
        return max((length + left + right - self.dilation * (self.kernel_size - 1) - 1) // self.stride + 1, 0)

    def semantics(self) -> list[str]:
        """The activation, and a padding that an ``nn.Conv1d`` cannot hold (other zeros at each end, or by the
        input's length)."""
        out = [f"activation={self.activation!r}"] if self.activation != "linear" else []
        if self.padding == "same" or self.padding[0] != self.padding[1]:
            out.append(f"padding={self.padding if self.padding == 'same' else list(self.padding)!r}")
        return out

    @staticmethod
    def padding_of(value: Any, kernel_size: int, dilation: int = 1, stride: int = 1) -> tuple[int, int] | str:
        """The canonical padding for a framework's: ``valid``, ``causal``, ``same`` (Keras, PyTorch), an
        integer (PyTorch's zeros on both sides) or a pair. ConfigError for anything else."""
        span = (kernel_size - 1) * dilation
        if value == "valid":
            return (0, 0)
        if value == "causal":
            return (span, 0)
        if value == "same":
            return (span // 2, span - span // 2) if stride == 1 else "same"
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return (value, value)
        if isinstance(value, (list, tuple)) and len(value) == 1:
            return Conv1D.padding_of(value[0], kernel_size, dilation, stride)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return tuple(value)  # type: ignore[return-value]  # checked by the layer
        raise ConfigError(f"padding {value!r} is not 'valid', 'causal', 'same', an integer or a (left, right) pair")


@dataclass(frozen=True, eq=False, repr=False)
class BatchNorm(_Plain):
    """Batch normalisation at inference, per feature: ``(x - mean) / sqrt(variance + epsilon) * scale + offset``
    (Keras ``gamma`` / ``beta``, PyTorch ``weight`` / ``bias``; None when the layer has none).

    ``momentum`` is the weight of a new batch's statistics in the running averages, as PyTorch counts it
    (Keras' ``momentum`` is ``1 - momentum``; None is PyTorch's cumulative average). It and ``batches_tracked``
    (PyTorch's ``num_batches_tracked``) only matter when training goes on; they are kept for that.
    """

    name: str
    mean: np.ndarray
    variance: np.ndarray
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    epsilon: float = 1e-5
    momentum: float | None = 0.1
    batches_tracked: int | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    kind = "batch_norm"
    _ARRAYS = ("scale", "offset", "mean", "variance")
    _SETTINGS = ("epsilon", "momentum", "batches_tracked")

    def __post_init__(self) -> None:
        mean = asarray(self.mean)
        if mean.ndim != 1:
            raise ShapeError(f"{self.name}.mean: expected a 1-D (features,) array, got shape {mean.shape}")
        dtype = self._vector("mean", mean.shape[0], None)
        for attr in ("variance", "scale", "offset"):
            self._vector(attr, mean.shape[0], dtype)
        _small_positive(self, "epsilon")
        if self.momentum is not None:
            _small_positive(self, "momentum")
        if self.batches_tracked is not None and (isinstance(self.batches_tracked, bool)
                                                 or not isinstance(self.batches_tracked, int)
                                                 or self.batches_tracked < 0):
            raise ConfigError(f"{self.name}: batches_tracked must be a non-negative integer or None, "
                              f"got {self.batches_tracked!r}")
        _freeze_common(self)

    size = property(lambda self: int(self.mean.shape[0]))
    input_size = size
    output_size = size

    def count_params(self, framework: str = "torch") -> int:
        """PyTorch's parameters are the scale and offset (the running statistics are buffers); Keras counts
        the moving statistics too, as non-trainable weights."""
        kept = ("scale", "offset") if framework == "torch" else self._ARRAYS
        return sum(getattr(self, a).size for a in kept if getattr(self, a) is not None)


@dataclass(frozen=True, eq=False, repr=False)
class LayerNorm(_Plain):
    """Layer normalisation over the features of each step: ``(x - mean) / sqrt(variance + epsilon) * scale +
    offset`` with the mean and the (biased) variance of that step's features; ``scale`` and ``offset`` are
    ``(size,)`` or None."""

    name: str
    size: int
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    epsilon: float = 1e-5
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    kind = "layer_norm"
    _ARRAYS = ("scale", "offset")
    _SETTINGS = ("size", "epsilon")

    def __post_init__(self) -> None:
        _positive(self, "size")
        dtype = self._vector("scale", self.size, None)
        self._vector("offset", self.size, dtype)
        _small_positive(self, "epsilon")
        _freeze_common(self)

    input_size = property(lambda self: self.size)
    output_size = input_size


@dataclass(frozen=True, eq=False, repr=False)
class Activation(_Plain):
    """An activation on every feature (``size`` of them) of every step, such as Keras ``Activation("relu")``
    or ``nn.ReLU()``."""

    name: str
    activation: str
    size: int
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    kind = "activation"
    _SETTINGS = ("activation", "size")

    def __post_init__(self) -> None:
        _positive(self, "size")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"{self.name}: activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        _freeze_common(self)

    input_size = property(lambda self: self.size)
    output_size = input_size

    def semantics(self) -> list[str]:
        return [f"activation={self.activation!r}"]


@dataclass(frozen=True, eq=False, repr=False)
class Flatten(_Plain):
    """A sequence of ``steps`` steps of ``size`` features as one vector of ``steps * size``, step after step
    (Keras ``Flatten`` on ``(batch, time, features)``). It takes no mask."""

    name: str
    steps: int
    size: int
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    kind = "flatten"
    _SETTINGS = ("steps", "size")

    def __post_init__(self) -> None:
        _positive(self, "steps", "size")
        _freeze_common(self)

    input_size = property(lambda self: self.size)
    output_size = property(lambda self: self.steps * self.size)


POOLING_MODES = ("average", "max")


@dataclass(frozen=True, eq=False, repr=False)
class Pooling(_Plain):
    """Global pooling over time: the average or the maximum of each feature over the steps (Keras
    ``GlobalAveragePooling1D`` / ``GlobalMaxPooling1D``). The average takes a mask, as Keras' does, and
    averages the unmasked steps; the maximum takes none (every step counts, a masked one as zeros)."""

    name: str
    mode: str
    size: int
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    kind = "pooling"
    _SETTINGS = ("mode", "size")

    def __post_init__(self) -> None:
        _positive(self, "size")
        if self.mode not in POOLING_MODES:
            raise ConfigError(f"{self.name}: mode must be one of {POOLING_MODES}, got {self.mode!r}")
        _freeze_common(self)

    input_size = property(lambda self: self.size)
    output_size = input_size

    def semantics(self) -> list[str]:
        return [f"global {self.mode} over time"]


# The layers around recurrent ones that have weights of their own or change the data's shape.
AROUND = (Conv1D, BatchNorm, LayerNorm, Activation, Flatten, Pooling)
Layer = RecurrentLayer | Dense | Embedding | Masking | Conv1D | BatchNorm | LayerNorm | Activation | Flatten | Pooling
LAYER_TYPES: dict[str, type] = {"dense": Dense, "embedding": Embedding, "masking": Masking,
                                **{cls.kind: cls for cls in AROUND}, **{k: RecurrentLayer for k in GATES}}
# Whether a layer takes a sequence (batch, time, features) and gives one; None: either, as it is given.
TAKES_SEQUENCE = {"conv1d": True, "flatten": True, "pooling": True, "lstm": True, "gru": True, "rnn": True}


@dataclass(frozen=True, eq=False)
class Model(_BitEqual):
    """An ordered chain of named layers, each applied to the previous one's output: a model.

    What the model computes is part of it, not of any framework: each recurrent layer's
    ``return_sequences`` (and state, masking and ``stateful`` settings), a :class:`Masking` layer or an
    :class:`Embedding` with ``mask_zero``, and the model's input: ``input_shape`` (without the batch;
    ``None`` for a free length), ``input_dtype`` (``float32`` features, ``int64`` indices, ...) and a fixed
    ``batch_size`` (which ``stateful`` layers need). ``config`` keeps model-level settings per framework
    that do not change the function (say the Keras model name); ``source`` records where the weights
    came from.
    """

    layers: tuple[Layer, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)
    input_shape: tuple[int | None, ...] | None = None
    input_dtype: str | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if not layers:
            raise ConfigError("a model needs at least one layer")
        for layer in layers:
            if not isinstance(layer, (RecurrentLayer, Dense, Embedding, Masking, *AROUND)):
                raise ConfigError(f"a model holds RecurrentLayer, Dense, Embedding, Masking, "
                                  f"{', '.join(c.__name__ for c in AROUND)} layers, got {type(layer).__name__}")
        if self.input_shape is not None:
            if not isinstance(self.input_shape, (tuple, list)):
                raise ConfigError(f"model input_shape must be a sequence of positive integers or None, got "
                                  f"{self.input_shape!r}")
            shape = tuple(self.input_shape)
            if not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape):
                raise ConfigError(f"model input_shape must hold positive integers or None, got {self.input_shape!r}")
            object.__setattr__(self, "input_shape", shape)
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise ConfigError(f"model batch_size must be a positive integer or None, got {self.batch_size!r}")
        if self.input_dtype is not None and not isinstance(self.input_dtype, str):
            raise ConfigError(f"model input_dtype must be a dtype name, got {self.input_dtype!r}")
        names = [layer.name for layer in layers]
        duplicates = sorted(n for n, count in collections.Counter(names).items() if count > 1)
        if duplicates:
            raise ConfigError(f"layer names must be unique, got {duplicates} more than once")
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

    @property
    def masked(self) -> bool:
        """Whether the model marks padding steps that its recurrent layers skip."""
        return any(isinstance(layer, Masking) or (isinstance(layer, Embedding) and layer.mask_zero)
                   for layer in self.layers)

    def semantics(self) -> list[str]:
        """What the model computes beyond its layers run one after the other over whole sequences (the
        plain meaning of a PyTorch state dict), as ``layer: setting`` strings; empty for a plain chain."""
        return [f"{layer.name}: {text}" for layer in self.layers for text in layer.semantics()]

    def check_chain(self) -> None:
        """Raise UnsupportedError unless the layers run one after the other: each takes what the one before
        gives (its features, and a sequence where it needs one: no recurrent layer, convolution, Flatten or
        pooling after a layer that returns one vector per sequence), an Embedding or a Masking layer comes
        only first, and a Flatten gets the number of steps it was built for. Every target that writes a
        model runs this rule, then its own."""
        for index, layer in enumerate(self.layers):
            if isinstance(layer, (Embedding, Masking)) and index:
                what = "an Embedding" if isinstance(layer, Embedding) else "a Masking layer"
                raise UnsupportedError(f"{layer.name}: {what} can only be the first layer of a model")
        for before, after in zip(self.layers, self.layers[1:]):
            if before.output_size != after.input_size:
                hint = ""
                if isinstance(after, Conv1D):  # its weight holds in_channels // groups: perhaps other groups
                    per_group = after.weight.shape[1]
                    groups = before.output_size // per_group
                    if before.output_size % per_group == 0 and after.out_channels % groups == 0:
                        hint = (f" (with groups={groups}, its weight of {per_group} channels per group would take "
                                f"them: --set {after.name}.groups={groups})")
                raise UnsupportedError(f"{after.name}: takes {after.input_size} features but {before.name} gives "
                                       f"{before.output_size}; the layers do not form one chain{hint}")
        for layer, (sequence, steps) in zip(self.layers, self.shapes()):
            if TAKES_SEQUENCE.get(layer.kind) and not sequence:
                raise UnsupportedError(f"{layer.name}: takes a sequence, but the layer before it returns one "
                                       "vector per sequence (its last step only, a Flatten or a pooling)")
            if isinstance(layer, Flatten) and steps is not None and steps != layer.steps:
                raise UnsupportedError(f"{layer.name}: a Flatten built for {layer.steps} steps, but the model gives it "
                                       f"{steps}")

    def shapes(self) -> list[tuple[bool, int | None]]:
        """For each layer, what it is given: whether a sequence, and how many steps (None when not known)."""
        steps = self.input_shape[0] if self.input_shape else None
        sequence = True
        out = []
        for layer in self.layers:
            out.append((sequence, steps if sequence else None))
            if isinstance(layer, Conv1D) and steps is not None:
                steps = layer.output_length(steps)
            elif isinstance(layer, (Flatten, Pooling)) or (isinstance(layer, RecurrentLayer)
                                                            and not layer.return_sequences):
                sequence = False
        return out

    def input_spec(self) -> dict[str, Any]:
        return {"input_shape": None if self.input_shape is None else list(self.input_shape),
                "input_dtype": self.input_dtype, "batch_size": self.batch_size}

    def spec(self) -> dict[str, Any]:
        return {"layers": [layer.spec() for layer in self.layers], **self.input_spec(),
                "config": dict(self.config), "source": dict(self.source)}

    def _repr_html_(self) -> str:
        """The gate tables as HTML, for notebooks."""
        from ._html import model_html

        return model_html(self)

    def __repr__(self) -> str:
        return "Model(" + ", ".join(repr(layer) for layer in self.layers) + ")"


def _freeze_common(obj: Any) -> None:
    """Check the name; copy ``config`` and ``source`` into read-only JSON-compatible mappings."""
    name = getattr(obj, "name", "model")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a layer name must be a non-empty string, got {name!r}")
    for attr in ("config", "source"):
        if not isinstance(getattr(obj, attr), Mapping):
            raise ConfigError(f"{name}: {attr} must be a mapping, got {type(getattr(obj, attr)).__name__}")
    object.__setattr__(obj, "config", _frozen_json(obj.config, f"{name}: config"))
    object.__setattr__(obj, "source", _frozen_json({k: str(v) for k, v in obj.source.items()},
                                                   f"{name}: source"))


# What a user may state about a layer that its weights cannot say (``--set LAYER.SETTING=VALUE``).
SETTABLE: dict[type, dict[str, type]] = {
    RecurrentLayer: {"return_sequences": bool, "return_state": bool, "zero_output_for_mask": bool,
                     "stateful": bool, "go_backwards": bool, "activation": str, "recurrent_activation": str,
                     "cell_clip": object},
    Embedding: {"mask_zero": bool},
    Dense: {"activation": str},
    Masking: {"mask_value": float},
    Conv1D: {"activation": str, "stride": int, "dilation": int, "groups": int, "padding": object},
    BatchNorm: {"epsilon": float, "momentum": float},
    LayerNorm: {"epsilon": float},
    Activation: {"activation": str},
    Flatten: {"steps": int},
    Pooling: {"mode": str},
}


def with_settings(model: Model, settings: Mapping[str, Mapping[str, Any]]) -> Model:
    """``model`` with some layers' settings replaced: ``{"lstm": {"return_sequences": False}}``.

    A layer that does not exist, a setting that does not apply to that layer, or a value of the wrong
    type is a :class:`SettingError` naming it; nothing is ever ignored.
    """
    by_name = {layer.name: layer for layer in model.layers}
    for name, changes in settings.items():
        if name not in by_name:
            raise SettingError(f"setting {name}.…: the model has no layer {name!r} (layers: {', '.join(by_name)})")
        allowed = SETTABLE[type(by_name[name])]
        for key, value in changes.items():
            if key not in allowed:
                raise SettingError(f"setting {name}.{key}: {key!r} is not a setting of {by_name[name].kind} layers; "
                                   f"they take {', '.join(allowed)}")
            want = allowed[key]
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if want is object:  # a padding: checked by the layer
                continue
            if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
                expected = "true or false" if want is bool else want.__name__
                raise SettingError(f"setting {name}.{key}: expected {expected}, "
                                   f"got {value!r}")
    layers = []
    for layer in model.layers:
        changes = dict(settings.get(layer.name, {}))
        if isinstance(layer, Masking) and "mask_value" in changes:
            changes["mask_value"] = float(changes["mask_value"])
        try:
            if isinstance(layer, Conv1D) and "padding" in changes:
                changes["padding"] = Conv1D.padding_of(changes["padding"], layer.kernel_size,
                                                       changes.get("dilation", layer.dilation),
                                                       changes.get("stride", layer.stride))
            layers.append(dataclasses.replace(layer, **changes) if changes else layer)
        except (ConfigError, ShapeError) as exc:
            raise SettingError(f"setting {layer.name}: {exc}") from None
    return dataclasses.replace(model, layers=tuple(layers))
