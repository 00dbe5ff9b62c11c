"""PyTorch adapter: recurrent modules, ``nn.Linear``, ``nn.Embedding`` and state dicts <-> the canonical form.

PyTorch stores ``nn.LSTM`` (G = 4, blocks i, f, g, o), ``nn.GRU`` (G = 3,
blocks r, z, n) and ``nn.RNN`` (G = 1) as, for stacked layer ``k`` and
direction suffix ``s`` (empty, or ``_reverse`` for the backward direction of a
bidirectional module)::

    weight_ih_l{k}{s}  (G*H, fan_in)
    weight_hh_l{k}{s}  (G*H, P)       P = proj_size if set, else H
    bias_ih_l{k}{s}    (G*H,)         only when bias=True
    bias_hh_l{k}{s}    (G*H,)
    weight_hr_l{k}{s}  (P, H)         LSTM with proj_size only
    Linear     weight (out, in), bias (out,)
    Embedding  weight (num_embeddings, embedding_dim)
    Conv1d     weight (out, in // groups, kernel_size), bias (out,)
    BatchNorm1d  weight, bias, running_mean, running_var (features,), num_batches_tracked ()
    LayerNorm  weight, bias (features,)

Cells (``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell``) have the same tensors
without ``_l{k}``. ``fan_in`` is ``input_size`` for layer 0 and
``P * directions`` above it. Both biases map one to one onto the canonical
``b_x`` and ``b_h``, so a state dict survives the trip bit for bit.

A model's state dict is split into modules by parameter names: the keys
``<prefix>.weight_ih_l0``, ... form one recurrent module, whose kind follows
from G (rows of ``weight_ih`` over H), ``<prefix>.weight`` and
``<prefix>.bias`` a Linear. What the keys cannot tell, the caller says
(``kinds``): whether a lone 2-D ``weight`` is an Embedding or a Linear
without bias, and whether an ``nn.RNN`` uses tanh or relu. The prefix is
kept, so keys come back exactly. The first half of this module is NumPy
only; ``torch`` is imported on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._lazy import asarray, filled, np
from .._gc import paused

from .. import _dtypes
from .._optional import require
from ..canonical import (
    AROUND,
    DIRECTIONS,
    BatchNorm,
    Conv1D,
    Dense,
    Embedding,
    Gate,
    Layer,
    LayerNorm,
    Masking,
    Model,
    RecurrentLayer,
)
from ..errors import ConfigError, FormatError, ShapeError, UnsupportedError
from ..formats import check_selection, selects, unconverted_error
from ..gates import join_bias, join_chunks, layout, split, split_bias
from . import refuse_cell_features

_SUFFIX = {"forward": "", "reverse": "_reverse"}
_RECURRENT_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)(?:_l(\d+)(_reverse)?)?$")
# G, the number of gate blocks (rows of weight_ih over H), tells the kind of a recurrent module.
_KIND_BY_GATES = {4: "lstm", 3: "gru", 1: "rnn"}
_MODULES = {"lstm": ("LSTM", "LSTMCell"), "gru": ("GRU", "GRUCell"), "rnn": ("RNN", "RNNCell")}
_MODULE_SETTINGS = ("batch_first", "dropout")


# -- NumPy only -----------------------------------------------------------------------------------


@paused()
def model_from_state_arrays(arrays: Mapping[str, np.ndarray], *, kinds: Mapping[str, str] | None = None,
                            settings: Mapping[str, Mapping[str, Any]] | None = None,
                            source: Mapping[str, str] | None = None, where: str = "state dict",
                            only: Sequence[str] = (), inventory: bool = False,
                            classes: Mapping[str, str] | None = None) -> Model:
    """Split a PyTorch state dict (NumPy arrays) into canonical layers, one per module prefix.

    ``only`` (shell-style patterns on module prefixes) reads just the modules it selects. Modules that are
    not an LSTM, GRU, RNN, Linear or Embedding are refused all together in one message, or with
    ``inventory`` listed in the model's ``config["unconverted"]`` (as ``classes`` names them, where the file
    says which module class each prefix is).
    """
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        prefix, _, param = key.rpartition(".")
        groups.setdefault(prefix, {})[param] = array
    check_selection(where, only, [prefix or "(no prefix)" for prefix in groups])
    kinds = dict(kinds or {})  # a kind for a prefix that is not here is ignored: one may name several files' modules
    source = dict(source or {"framework": "torch"})
    layers, unknown = [], []
    for prefix, params in groups.items():
        if not selects(only, prefix):
            continue
        layer = _module(prefix, params, kinds.get(prefix), (settings or {}).get(prefix, {}), source, where)
        if layer is None:
            unknown.append({"name": prefix or "(no prefix)", "type": (classes or {}).get(prefix, "module"),
                            "why": _why(prefix, params),
                            "tensors": {param: list(array.shape) for param, array in params.items()},
                            **({"kind": _suggested(params)} if _suggested(params) and prefix else {})})
        else:
            layers.append(layer)
    if unknown and not (inventory and layers):
        raise unconverted_error(where, unknown, "PyTorch")
    return Model(tuple(layers), source=source, config={"unconverted": unknown} if unknown else {})


_NOT_CONVERTED = "not an LSTM, GRU, RNN, Linear, Embedding, Conv1d, BatchNorm1d or LayerNorm"
_BATCH_NORM = {"running_mean", "running_var", "num_batches_tracked"}
# What a state dict does not hold, and what is taken instead (PyTorch's defaults), by kind.
_DEFAULTS = {"conv1d": {"stride": 1, "padding": 0, "dilation": 1, "groups": 1},
             "batch_norm": {"eps": 1e-5, "momentum": 0.1}, "layer_norm": {"eps": 1e-5}}


def _suggested(params: Mapping[str, np.ndarray]) -> str | None:
    """The kind a module's keys suggest but cannot prove (a 3-D weight: nn.Conv1d or nn.ConvTranspose1d; a 1-D
    weight: nn.LayerNorm or nn.GroupNorm), for the user to confirm with ``kinds``; None otherwise."""
    weight = params.get("weight")
    if set(params) <= {"weight", "bias"} and weight is not None and weight.ndim in (1, 3):
        return "conv1d" if weight.ndim == 3 else "layer_norm"
    return None


def _why(prefix: str, params: Mapping[str, np.ndarray]) -> str:
    """Why a module is not converted, and what to say if it is one that is."""
    kind = _suggested(params)
    if kind is not None:
        module = "nn.Conv1d" if kind == "conv1d" else "nn.LayerNorm"
        return (f"its keys do not say which module it is; if it is an {module}, say so with --kind "
                f"{prefix}={kind} (its {', '.join(_DEFAULTS[kind])} are not in a state dict either: PyTorch's "
                "defaults are taken unless set with --set)")
    return _NOT_CONVERTED


def _around(prefix: str, params: dict[str, Any], kind: str | None, settings: Mapping[str, Any],
            source: Mapping[str, str], where: str) -> Layer | None:
    """An nn.Conv1d, nn.BatchNorm1d or nn.LayerNorm; its settings are the module's (``settings``) or, from a
    state dict alone, PyTorch's defaults, recorded in ``config["torch"]["assumed"]``."""
    keys = set(params)
    weight = params.get("weight")
    if _BATCH_NORM <= keys <= _BATCH_NORM | {"weight", "bias"}:
        kind = "batch_norm"
    elif kind not in ("conv1d", "layer_norm") or not keys <= {"weight", "bias"} or weight is None \
            or weight.ndim != (3 if kind == "conv1d" else 1):
        return None
    own = {k: v for k, v in settings.items() if k in _DEFAULTS[kind]}
    assumed = {k: v for k, v in _DEFAULTS[kind].items() if k not in own}
    values = {**assumed, **own}
    config = {"torch": {"prefix": f"{prefix}." if prefix else "",
                        **({"assumed": sorted(assumed)} if assumed else {})}}
    name = prefix or kind
    arrays = {k: np.asarray(v) for k, v in params.items()}
    label = f"{where}: {prefix}" if prefix else where
    try:
        if kind == "conv1d":
            padding = Conv1D.padding_of(values["padding"], int(weight.shape[2]), values["dilation"], values["stride"])
            return Conv1D(name=name, weight=arrays["weight"], bias=arrays.get("bias"), stride=values["stride"],
                          dilation=values["dilation"], groups=values["groups"], padding=padding, config=config,
                          source=source)
        if kind == "layer_norm":
            return LayerNorm(name=name, size=int(weight.shape[0]), scale=arrays["weight"], offset=arrays.get("bias"),
                             epsilon=values["eps"], config=config, source=source)
        tracked = arrays["num_batches_tracked"]
        if tracked.shape != () or tracked.dtype.kind not in "iu":
            raise ShapeError(f"num_batches_tracked: expected a 0-D integer tensor, got {tracked.dtype} {tracked.shape}")
        return BatchNorm(name=name, mean=arrays["running_mean"], variance=arrays["running_var"],
                         scale=arrays.get("weight"), offset=arrays.get("bias"), epsilon=values["eps"],
                         momentum=values["momentum"], batches_tracked=int(tracked), config=config, source=source)
    except (ConfigError, ShapeError) as exc:
        raise ShapeError(f"{label}: {exc}") from None


def _module(prefix: str, params: dict[str, np.ndarray], kind: str | None, settings: Mapping[str, Any],
            source: Mapping[str, str], where: str) -> Layer | None:
    keys = sorted(f"{prefix}.{p}" if prefix else p for p in params)
    config = {"torch": {"prefix": f"{prefix}." if prefix else "", **settings}}
    if any(_RECURRENT_KEY.match(p) for p in params) or (set(params) <= {"weight", "bias"} and "weight" in params
                                                           and params["weight"].ndim == 2):
        params = {k: asarray(v) for k, v in params.items()}  # a module this tool converts: read its values
    if any(_RECURRENT_KEY.match(p) for p in params):
        activation = {"rnn_tanh": "tanh", "rnn_relu": "relu"}.get(kind or "")
        return recurrent_from_state_arrays(params, name=prefix or None, settings=config["torch"], source=source,
                                           activation=activation, where=f"{where}: {prefix}" if prefix else where)
    if set(params) == {"weight", "bias"} and params["weight"].ndim == 2 and kind in (None, "linear"):
        return Dense(name=prefix or "linear", weight=params["weight"], bias=params["bias"], config=config,
                     source=source)
    if set(params) == {"weight"} and params["weight"].ndim == 2:
        if kind == "linear":
            return Dense(name=prefix or "linear", weight=params["weight"], config=config, source=source)
        if kind == "embedding":
            return Embedding(name=prefix or "embedding", weight=params["weight"], config=config, source=source)
        raise FormatError(f"{where}: {keys[0]} alone may be nn.Embedding or nn.Linear(bias=False), and the keys "
                          "cannot tell which", remedy=f"say so with kinds={{'{prefix}': 'embedding'}} (or 'linear')",
                          hint=f"say so with --kind {prefix}=embedding or --kind {prefix}=linear")
    return _around(prefix, params, kind, settings, source, where)  # or None: not a module this tool converts


def recurrent_from_state_arrays(arrays: Mapping[str, np.ndarray], *, name: str | None = None,
                                settings: Mapping[str, Any] | None = None,
                                source: Mapping[str, str] | None = None, activation: str | None = None,
                                where: str | None = None) -> RecurrentLayer:
    """Build a recurrent layer from PyTorch parameter names (no prefix) and NumPy arrays.

    ``activation`` is an ``nn.RNN``'s nonlinearity, which its state dict does not hold.
    """
    where = where or name or "state dict"
    parsed = {}
    for key in arrays:
        match = _RECURRENT_KEY.match(key)
        if match is None:
            raise FormatError(f"{where}: unexpected key {key!r} in a PyTorch recurrent state dict")
        parsed[key] = match.groups()  # (tensor, layer index or None, "_reverse" or None)
    cells = [index is None for _, index, _ in parsed.values()]
    cell = all(cells)
    if not cell and any(cells):
        raise FormatError(f"{where}: keys {sorted(arrays)} mix a cell's names (weight_ih) and a layer's (weight_ih_l0)")
    first = "" if cell else "_l0"
    w_ih, w_hh = arrays.get(f"weight_ih{first}"), arrays.get(f"weight_hh{first}")
    if w_ih is None or w_hh is None:
        raise FormatError(f"{where}: a recurrent state dict needs weight_ih{first} and weight_hh{first}, "
                          f"got keys {sorted(arrays)}")
    w_hr = arrays.get("weight_hr_l0")
    hidden = int(w_hr.shape[1]) if w_hr is not None and w_hr.ndim == 2 else int(w_hh.shape[-1])
    if w_ih.ndim != 2 or w_hh.ndim != 2 or hidden == 0:
        raise ShapeError(f"{where}: weight_ih{first} {w_ih.shape} and weight_hh{first} {w_hh.shape} must be "
                         "(G*H, input) and (G*H, H) matrices")
    if w_ih.shape[0] % hidden or w_ih.shape[0] != w_hh.shape[0]:
        raise ShapeError(f"{where}: weight_ih{first} has shape {w_ih.shape}, expected G*H rows like "
                         f"weight_hh{first} {w_hh.shape} (H = {hidden})")
    gates = w_ih.shape[0] // hidden
    kind = _KIND_BY_GATES.get(gates)
    if kind is None:
        raise UnsupportedError(f"{where}: weight_ih{first} of shape {w_ih.shape} has {gates} gate blocks of "
                               f"{hidden}; known: 4 (LSTM), 3 (GRU), 1 (RNN)")
    if kind == "rnn" and activation is None:
        raise FormatError(f"{where}: an nn.RNN's nonlinearity (tanh or relu) is not in its state dict",
                          remedy=f"say which with kinds={{'{name}': 'rnn_tanh'}} (or 'rnn_relu')",
                          hint=f"say which with --kind {name}=rnn_tanh or --kind {name}=rnn_relu")
    num_layers = 1 if cell else 1 + max(int(index) for _, index, _ in parsed.values())
    directions = 2 if any(reverse for _, _, reverse in parsed.values()) else 1
    bias = f"bias_ih{first}" in arrays
    proj_size = int(w_hr.shape[0]) if w_hr is not None else 0
    name = name or kind
    lay = layout("torch", kind)
    names = _tensor_names(lay, bias, proj_size > 0)
    if len(arrays) != len(names) * num_layers * directions or not all(
            _key(t, index, d, cell) in arrays for index in range(num_layers) for d in DIRECTIONS[:directions]
            for t in names):
        expected = {_key(t, index, d, cell) for index in range(num_layers) for d in DIRECTIONS[:directions]
                    for t in names}
        missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        raise FormatError(f"{where}: keys do not form one {_MODULES[kind][cell]} with {num_layers} layer(s), "
                          f"{directions} direction(s), bias={bias} (missing {missing or 'none'}, "
                          f"unexpected {extra or 'none'})")
    gate_weights, projections = {}, {}
    for index in range(num_layers):
        for direction in DIRECTIONS[:directions]:
            keys = [_key(tensor, index, direction, cell) for tensor in lay.tensors]
            w_x = split(lay, arrays[keys[0]], hidden, f"{where}.{keys[0]}")
            w_h = split(lay, arrays[keys[1]], hidden, f"{where}.{keys[1]}")
            if bias:  # bias_ih and bias_hh, the two canonical biases as they are
                b_x, b_h = split_bias(lay, [arrays[keys[2]], arrays[keys[3]]], hidden, f"{where}.{keys[2]}")
                for gate in lay.order:
                    gate_weights[(index, direction, gate)] = Gate(w_x[gate], w_h[gate], b_x[gate], b_h[gate])
            else:
                for gate in lay.order:
                    gate_weights[(index, direction, gate)] = Gate(w_x[gate], w_h[gate])
            if proj_size:
                projections[(index, direction)] = arrays[_key("weight_hr", index, direction, cell)]
    try:
        return RecurrentLayer(
            kind=kind, input_size=int(w_ih.shape[1]), hidden_size=hidden, num_layers=num_layers,
            directions=directions, bias=bias, gates=gate_weights, name=name, activation=activation or "tanh",
            proj_size=proj_size, projections=projections, cell=cell,
            config={"torch": dict(settings or {})}, source=dict(source or {"framework": "torch"}))
    except (ConfigError, ShapeError) as exc:
        raise ShapeError(f"{where}: {exc}") from None


def layer_state_chunks(layer: Layer) -> dict[str, list[np.ndarray]]:
    """One layer's parameters as its PyTorch module names them (no prefix), each as pieces to write in turn."""
    check_representable(layer)
    if isinstance(layer, Masking):
        return {}
    if isinstance(layer, (Dense, Embedding)):
        return {name.rpartition(".")[2]: [array] for name, array in layer.tensors()}
    if isinstance(layer, AROUND):
        names = {"scale": "weight", "offset": "bias", "mean": "running_mean", "variance": "running_var"}
        out = {names.get(attr, attr): [array] for label, array in layer.tensors()
               for attr in [label.rpartition(".")[2]]}
        # A normalisation with an offset and no scale (Keras scale=False) is an affine PyTorch module whose
        # weight is ones: the same function exactly (x * 1 == x). The reverse needs no zeros: bias=False.
        if isinstance(layer, (BatchNorm, LayerNorm)) and layer.scale is None and layer.offset is not None:
            out = {"weight": [filled(layer.size, layer.offset, 1.0)], **out}
        if isinstance(layer, BatchNorm) and layer.scale is not None and layer.offset is None:
            out["bias"] = [filled(layer.size, layer.scale, 0.0)]
        if isinstance(layer, BatchNorm):
            out = {key: out[key] for key in ("weight", "bias") if key in out} | {
                "running_mean": out["running_mean"], "running_var": out["running_var"],
                "num_batches_tracked": [np.array(layer.batches_tracked or 0, dtype=np.int64)]}
        return out
    lay = layout("torch", layer.kind)
    out = {}
    for index in range(layer.num_layers):
        for direction in layer.direction_names:
            gates = {g: layer.gates[(index, direction, g)] for g in lay.order}
            keys = [_key(tensor, index, direction, layer.cell) for tensor in lay.tensors]
            for key, role in zip(keys[:2], ("W_x", "W_h")):  # written block by block, never joined in memory
                out[key] = join_chunks(lay, {g: getattr(v, role) for g, v in gates.items()})
            if layer.bias:
                stored = join_bias(lay, *({g: getattr(v, role) for g, v in gates.items()} for role in ("b_x", "b_h")))
                out.update({key: [array] for key, array in zip(keys[2:], stored, strict=True)})
            if layer.proj_size:
                out[_key("weight_hr", index, direction, layer.cell)] = [layer.projections[(index, direction)]]
    return out


def layer_state_arrays(layer: Layer) -> dict[str, np.ndarray]:
    """One layer's parameters as its PyTorch module names them (no prefix)."""
    return {k: _joined(c) for k, c in layer_state_chunks(layer).items()}


def state_chunks(weights: Layer | Model) -> dict[str, list[np.ndarray]]:
    """The PyTorch state dict as pieces to write: a layer's own keys, or a model's keys
    ``<prefix><param>`` where the prefix is the one the weights came with from PyTorch,
    else ``<layer name>.``."""
    if not isinstance(weights, Model):
        return layer_state_chunks(weights)
    out: dict[str, list[np.ndarray]] = {}
    for layer in weights.layers:
        recorded = layer.config.get("torch")
        prefix = recorded.get("prefix") if isinstance(recorded, Mapping) else None
        prefix = prefix if isinstance(prefix, str) else f"{layer.name}."
        for param, chunks in layer_state_chunks(layer).items():
            if prefix + param in out:
                raise UnsupportedError(f"{layer.name}: key {prefix + param} would appear twice in the state dict")
            out[prefix + param] = chunks
    return out


def state_arrays(weights: Layer | Model) -> dict[str, np.ndarray]:
    """The PyTorch state dict as NumPy arrays (see :func:`state_chunks`)."""
    return {k: _joined(c) for k, c in state_chunks(weights).items()}


def _joined(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if len(chunks) > 1 else np.asarray(chunks[0])


def check_representable(layer: Layer) -> None:
    """Raise UnsupportedError unless PyTorch modules hold ``layer``'s weights and compute its cells exactly
    (what the layer does around them, such as reversing its input, is :meth:`Layer.semantics`)."""
    keep = "Keep it in a safetensors archive"
    if not isinstance(layer, RecurrentLayer):
        return
    module = f"nn.{_MODULES[layer.kind][layer.cell]}"
    refuse_cell_features(layer, module)
    # go_backwards and merge modes other than concat are not a module's, but its weights are an ordinary
    # module's: the state dict holds them, and the generated module (--module) reverses and merges.
    if layer.kind == "gru" and not layer.reset_after:
        raise UnsupportedError(f"{layer.name}: a GRU with reset_after=False (reset applied before the recurrent "
                               f"matrix product) is a different function that no nn.GRU computes. {keep}, or "
                               "export ONNX, whose GRU has linear_before_reset=0")
    wanted = {"rnn": (("activation", ("tanh", "relu")),)}.get(
        layer.kind, (("activation", ("tanh",)), ("recurrent_activation", ("sigmoid",))))
    for attr, allowed in wanted:
        if getattr(layer, attr) not in allowed:
            raise UnsupportedError(
                f"{layer.name}: {attr} is {getattr(layer, attr)!r}, but {module} only computes "
                f"{' or '.join(allowed)}; no PyTorch module computes this layer. {keep}")


def check_single_module(layer: RecurrentLayer) -> None:
    """UnsupportedError if one PyTorch module, run on its own, computes something else than ``layer``
    (a whole model's module, :mod:`.torch_module`, reverses and merges around it)."""
    check_representable(layer)
    module = f"nn.{module_name(layer)}"
    if layer.go_backwards:
        raise UnsupportedError(f"{layer.name}: go_backwards=True (reading the sequence from its end) is not what "
                               f"an {module} computes on its own; convert the whole model (its module reverses "
                               "the input), or reverse the input in time yourself")
    if layer.merge_mode != "concat":
        raise UnsupportedError(f"{layer.name}: Bidirectional merge_mode={layer.merge_mode!r}, but a bidirectional "
                               f"{module} concatenates the two directions; convert the whole model (its module "
                               "merges them)")


def module_name(layer: RecurrentLayer) -> str:
    """The PyTorch module class that holds ``layer``: ``LSTM``, ``GRUCell``, ..."""
    return _MODULES[layer.kind][layer.cell]


@functools.lru_cache(maxsize=16)
def _tensor_names(lay, bias: bool, projection: bool) -> tuple[str, ...]:
    """The parameters of one layer and direction: weight_ih, weight_hh, the biases, weight_hr."""
    return (*lay.tensors[: 4 if bias else 2], *(("weight_hr",) if projection else ()))


@functools.lru_cache(maxsize=4096)
def _key(tensor: str, index: int, direction: str, cell: bool = False) -> str:
    return tensor if cell else f"{tensor}_l{index}{_SUFFIX[direction]}"


# -- live torch objects ---------------------------------------------------------------------------


def read(obj: Any, *, name: str | None = None, kinds: Mapping[str, str] | None = None) -> Layer | Model:
    """Read a recurrent module (``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` or their cells), ``nn.Linear`` or
    ``nn.Embedding`` into a layer; a module made of them, or a state dict with prefixed keys, into a
    :class:`Model`."""
    torch = require("torch")
    source = {"framework": "torch", "framework_version": torch.__version__}
    settings: dict[str, dict[str, Any]] = {}
    if isinstance(obj, torch.nn.Module):
        found = {}
        for prefix, module in obj.named_modules():
            if isinstance(module, torch.nn.RNNBase):
                settings[prefix] = {key: getattr(module, key) for key in _MODULE_SETTINGS}
            if isinstance(module, (torch.nn.RNN, torch.nn.RNNCell)):
                found[prefix] = f"rnn_{module.nonlinearity}"
            elif isinstance(module, torch.nn.Embedding):
                found[prefix] = "embedding"
            elif isinstance(module, torch.nn.Linear):
                found[prefix] = "linear"
            elif isinstance(module, (torch.nn.Conv1d, torch.nn.BatchNorm1d, torch.nn.LayerNorm)):
                found[prefix], settings[prefix] = _around_settings(torch, prefix, module)
        state = obj.state_dict()
        kinds = {**found, **(kinds or {})}
    elif isinstance(obj, Mapping):
        state = obj
    else:
        raise UnsupportedError(f"expected an nn.Module or a state dict, got {type(obj).__name__}")
    # Integer buffers (BatchNorm's num_batches_tracked) as they are: a layer refuses integer weights itself.
    arrays = {key: to_numpy(torch, key, value, floating=False) for key, value in state.items()}
    model = model_from_state_arrays(arrays, kinds=kinds, settings=settings, source=source)
    if {key.rpartition(".")[0] for key in arrays} == {""}:  # a single module's own state dict
        layer = model.layers[0]
        return dataclasses.replace(layer, name=name) if name else layer
    return model


def _around_settings(torch, prefix: str, module: Any) -> tuple[str, dict[str, Any]]:
    """The kind and settings of an nn.Conv1d, nn.BatchNorm1d or nn.LayerNorm; UnsupportedError for what the
    canonical layers do not compute."""
    name = prefix or type(module).__name__

    def refuse(what: str) -> UnsupportedError:
        return UnsupportedError(f"{name}: {type(module).__name__} with {what} is not supported; keep it in "
                                "PyTorch, or select the layers around it with --only")

    if isinstance(module, torch.nn.Conv1d):
        if module.padding_mode != "zeros":
            raise refuse(f"padding_mode={module.padding_mode!r} (only zeros)")
        padding = module.padding if isinstance(module.padding, str) else module.padding[0]
        return "conv1d", {"stride": module.stride[0], "dilation": module.dilation[0], "groups": module.groups,
                          "padding": padding}
    if isinstance(module, torch.nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise refuse(f"normalized_shape={tuple(module.normalized_shape)} (only the last axis, the features)")
        if not module.elementwise_affine:
            raise refuse("elementwise_affine=False (no weight: the keys cannot say its size)")
        return "layer_norm", {"eps": module.eps}
    if not module.track_running_stats:
        raise refuse("track_running_stats=False (it normalises with each batch's own statistics)")
    return "batch_norm", {"eps": module.eps, "momentum": module.momentum}


def write(weights: Layer | Model, module: Any = None, *, state_dict: bool = False,
          batch_first: bool | None = None) -> Any:
    """Write a layer as a new ``nn.LSTM`` / ``nn.Linear`` / ``nn.Embedding``, a model as a new module whose
    ``forward`` computes it (see :mod:`.torch_module`), load either into ``module``, or return the state
    dict (``state_dict=True``).

    ``batch_first`` defaults to the source module's setting when the weights
    came from PyTorch, and to True otherwise (Keras is batch-major).
    """
    torch = require("torch")
    if isinstance(weights, Model) and module is None and not state_dict:
        from . import torch_module

        module = torch_module.build(weights)
    tensors = {key: from_numpy(torch, value) for key, value in state_arrays(weights).items()}
    if module is not None:
        _check_module(torch, weights, module)
        module.load_state_dict(tensors, strict=True)
        return module
    if state_dict:
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
    if isinstance(layer, AROUND):
        return _new_around(torch, layer, dtype)
    check_single_module(layer)
    cls = getattr(torch.nn, _MODULES[layer.kind][layer.cell])
    options: dict[str, Any] = {"bias": layer.bias, "dtype": dtype}
    if layer.kind == "rnn":
        options["nonlinearity"] = layer.activation
    if layer.cell:
        return cls(layer.input_size, layer.hidden_size, **options)
    settings = {k: v for k, v in layer.config.get("torch", {}).items() if k in _MODULE_SETTINGS}
    if batch_first is not None:
        settings["batch_first"] = batch_first
    settings.setdefault("batch_first", True)
    if layer.proj_size:
        options["proj_size"] = layer.proj_size
    return cls(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
               bidirectional=layer.directions == 2, **options, **settings)


def _new_around(torch, layer: Layer, dtype: Any) -> Any:
    """The PyTorch module of a Conv1D, BatchNorm or LayerNorm (what ``eval()`` computes, on (batch, channels,
    time) for the first two); UnsupportedError for the layers that have none."""
    if isinstance(layer, Conv1D):
        if layer.padding == "same" or layer.padding[0] != layer.padding[1] or layer.activation != "linear":
            raise UnsupportedError(f"{layer.name}: an nn.Conv1d pads both ends alike and has no activation; this "
                                   f"convolution (padding {layer.padding}, activation {layer.activation!r}) needs the "
                                   "module of a whole model (--module), which pads and activates around it")
        return torch.nn.Conv1d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                               padding=layer.padding[0], dilation=layer.dilation, groups=layer.groups,
                               bias=layer.bias is not None, dtype=dtype)
    if isinstance(layer, BatchNorm):
        return torch.nn.BatchNorm1d(layer.size, eps=layer.epsilon, momentum=layer.momentum,
                                    affine=layer.scale is not None or layer.offset is not None, dtype=dtype)
    if isinstance(layer, LayerNorm) and (layer.scale is not None or layer.offset is not None):
        return torch.nn.LayerNorm(layer.size, eps=layer.epsilon, bias=layer.offset is not None, dtype=dtype)
    raise UnsupportedError(f"{layer.name}: a {layer.kind} layer holds no weights and has no module of its own here; "
                           "convert the whole model (--module)")


def _check_module(torch, weights: Layer | Model, module: Any) -> None:
    if not isinstance(weights, RecurrentLayer):
        return  # load_state_dict(strict=True) names any mismatch
    check_single_module(weights)
    wanted_type = getattr(torch.nn, _MODULES[weights.kind][weights.cell])
    if type(module) is not wanted_type:
        raise UnsupportedError(f"{weights.name}: cannot write into {type(module).__name__}, "
                               f"expected torch.nn.{wanted_type.__name__}")
    wanted = {"input_size": weights.input_size, "hidden_size": weights.hidden_size, "bias": weights.bias}
    if not weights.cell:
        wanted |= {"num_layers": weights.num_layers, "bidirectional": weights.directions == 2}
    if weights.kind == "lstm" and not weights.cell:
        wanted["proj_size"] = weights.proj_size
    if weights.kind == "rnn":
        wanted["nonlinearity"] = weights.activation
    for attr, value in wanted.items():
        if getattr(module, attr) != value:
            raise ShapeError(f"{weights.name}: the target nn.{type(module).__name__} has {attr}={getattr(module, attr)!r}, "
                             f"expected {attr}={value!r}")


def to_numpy(torch, key: str, value: Any, *, floating: bool = True) -> np.ndarray:
    """A NumPy copy of a tensor; bfloat16 through ml_dtypes. With ``floating``, FormatError unless it holds
    floating-point values (a state dict's integer buffers, such as BatchNorm's ``num_batches_tracked``,
    are read as they are without it, and refused where they would be weights)."""
    if not isinstance(value, torch.Tensor):
        raise FormatError(f"{key}: expected a tensor, got {type(value).__name__}")
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
        bfloat16 = require("ml_dtypes").bfloat16
        return value.view(torch.int16).numpy().copy().view(bfloat16)
    if floating and not value.is_floating_point():
        raise FormatError(f"{key}: expected floating-point weights, got {value.dtype}")
    return value.numpy().copy()


def from_numpy(torch, array: np.ndarray) -> Any:
    """A tensor owning a copy of ``array`` (canonical arrays are read-only)."""
    array = np.array(array, order="C", copy=True)
    if _dtypes.name(array.dtype) == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)
