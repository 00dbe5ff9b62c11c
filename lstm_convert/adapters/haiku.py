"""Haiku parameter dictionaries into canonical layers, and canonical layers into them.

A Haiku model's parameters are a dict of modules, each a dict of arrays, named by module path
(``lstm/linear``, ``gru``, ``linear_1``); saved as ``.npz`` they are one array per ``/``-joined key
(``lstm/linear/w``).

=============  ====================================================================================
module         parameters
=============  ====================================================================================
``hk.LSTM``    ``NAME/linear``: ``w (in + H, 4H)`` multiplying ``concat([x, h])``, ``b (4H,)``; blocks i, g, f,
               o; ``f = sigmoid(pre_f + 1)``: the +1, hard-coded, is the layer's ``forget_bias`` constant
``hk.GRU``     ``NAME``: ``w_i (in, 3H)``, ``w_h (H, 3H)``, ``b (3H,)``; blocks z, r, a; reset before the
               product; ``h' = (1 - z) h + z a``: Haiku's z is the canonical update gate negated
``hk.Linear``  ``w (in, out)``, ``b (out,)``
``hk.Embed``   ``embeddings (vocab, dim)``
=============  ====================================================================================

Negating a pre-activation is exact (``sigmoid(-x) = 1 - sigmoid(x)``, and a sign flip changes no other bit), so a
GRU reads and writes back bit for bit; the LSTM's +1 stays a constant, folded into the forget bias only when a
target has no such constant. An LSTM is told by its module's name, ``lstm`` (``lstm_1``, ...); one named otherwise
(``hk.LSTM(H, name="encoder")``, parameters ``encoder/linear``) is a Linear inside another module as far as the
names say, and is refused until ``kinds`` says which (``{"encoder": "lstm"}`` or ``"dense"``). Modules are read in
order where their names say it (``lstm``, ``lstm_1``: one class numbered), or in the order ``only`` names them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._lazy import np
from ..canonical import Dense, Embedding, Gate, Layer, Model, RecurrentLayer
from ..errors import FormatError, UnsupportedError
from . import cell_features_reason
from ..gates import join, layout, split

_LSTM = re.compile(r"^(.*/)?lstm(_\d+)?$")
_NUMBERED = re.compile(r"^(.*?)(?:_(\d+))?$")


def modules_of(arrays: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """The flat ``/``-joined keys of an ``.npz`` (``lstm/linear/w``) as Haiku's dict of modules."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in arrays.items():
        module, _, name = key.rpartition("/")
        if not module or not name:
            raise FormatError(f"{where}: {key!r} is not a Haiku parameter (MODULE/NAME)")
        out.setdefault(module, {})[name] = value
    return out


def _what(module: str, params: Mapping[str, Any], kinds: Mapping[str, str], where: str) -> tuple[str, str] | None:
    """``(layer name's module, kind)`` of one module: ``lstm``, ``gru``, ``dense`` or ``embed``; None if none."""
    names = set(params)
    if names == {"w_i", "w_h", "b"}:
        return module, "gru"
    if names == {"embeddings"}:
        return module, "embed"
    if names <= {"w", "b"} and "w" in names:
        parent, _, last = module.rpartition("/")
        if last != "linear" or not parent:
            return module, "dense"
        said = kinds.get(parent)
        if said in ("lstm", "dense"):
            return (parent, "lstm") if said == "lstm" else (module, "dense")
        if _LSTM.match(parent):
            return parent, "lstm"
        raise FormatError(f"{where}: {module} is an hk.LSTM named {parent!r} or a Linear inside a module {parent!r}, "
                          "which Haiku's names do not tell apart",
                          remedy=f"say which with kinds={{{parent!r}: 'lstm'}} (or 'dense')",
                          hint=f"say which with --kind {parent}=lstm (or {parent}=dense)")
    return None


def read(params: Mapping[str, Mapping[str, Any]], where: str, *, only: Sequence[str] = (),
         kinds: Mapping[str, str] | None = None, inventory: bool = False,
         source: Mapping[str, str] | None = None) -> Model:
    """The model of a Haiku parameter dict (``{module: {name: array}}``)."""
    from ..formats import check_selection, order_by_patterns, selects, unconverted_error

    if not isinstance(params, Mapping) or not all(isinstance(v, Mapping) for v in params.values()):
        raise FormatError(f"{where}: a Haiku parameter dict maps module names to dicts of arrays")
    units, unknown = [], []
    for module, values in params.items():
        found = _what(module, values, kinds or {}, where)
        if found is None:
            unknown += [f"{module}/{k}" for k in values]
        else:
            units.append((found[0], found[1], module, values))
    names = [name for name, _, _, _ in units]
    check_selection(where, only, names + [n.replace("/", ".") for n in names] + unknown)

    def picks(patterns: Sequence[str], name: str) -> bool:
        return selects(patterns, name) or selects(patterns, name.replace("/", "."))

    chosen = [u for u in units if picks(only, u[0])]
    left = [n for n in unknown if selects(only, n)]
    if left and not (inventory and chosen):
        raise unconverted_error(where, [{"name": n, "type": "array", "tensors": {}} for n in left], "Haiku")
    if not chosen:
        raise FormatError(f"{where}: holds no hk.LSTM, hk.GRU, hk.Linear or hk.Embed that lstm_convert recognises")
    if len(chosen) > 1:
        numbered = [_NUMBERED.match(name.rpartition("/")[2]) for name, _, _, _ in chosen]
        if len({m.group(1) for m in numbered}) == 1 and len({name.rpartition("/")[0] for name, *_ in chosen}) == 1:
            chosen = [u for _, u in sorted(zip((int(m.group(2) or 0) for m in numbered), chosen), key=lambda p: p[0])]
        else:
            order = order_by_patterns([u[0] for u in chosen], only, lambda pattern, name: picks([pattern], name))
            if order is None:
                raise UnsupportedError(
                    f"{where}: holds {len(chosen)} modules ({', '.join(sorted(u[0] for u in chosen))}) whose names do "
                    "not say how they connect (Haiku numbers each class apart)",
                    remedy="name them in the order the model runs them, one pattern each in only=",
                    hint="name them in the order the model runs them, one --only each (listed here alphabetically)")
            chosen = [next(u for u in chosen if u[0] == name) for name in order]
    source = {"framework": "haiku", **(source or {})}
    layers = tuple(_layer(name, kind, module, values, where, source) for name, kind, module, values in chosen)
    unconverted = [{"name": n, "type": "array", "why": "not a parameter of a module lstm_convert recognises",
                    "tensors": {}} for n in left]
    return Model(layers, source=dict(source), config={"unconverted": unconverted} if unconverted else {})


def _array(values: Mapping[str, Any], key: str, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    value = np.asarray(values[key])
    if value.dtype.kind != "f":
        raise FormatError(f"{where}/{key}: holds {value.dtype}, not floating-point weights")
    if shape is not None and tuple(value.shape) != shape:
        raise FormatError(f"{where}/{key}: has shape {tuple(value.shape)}, expected {shape}")
    return value


def _layer(name: str, kind: str, module: str, values: Mapping[str, Any], where: str, source: Mapping[str, str]) -> Layer:
    at = f"{where}: {module}"
    layer_name = name.replace("/", ".")
    config = {"haiku": {"module": name}}
    params = sum(np.asarray(v).size for v in values.values())
    layer_source = {**source, "params": params}
    if kind == "embed":
        table = _array(values, "embeddings", None, at)
        if table.ndim != 2:
            raise FormatError(f"{at}/embeddings: has shape {tuple(table.shape)}, expected (vocab, dim)")
        return Embedding(layer_name, table, config=config, source=layer_source)
    if kind == "dense":
        w = _array(values, "w", None, at)
        if w.ndim != 2:
            raise FormatError(f"{at}/w: has shape {tuple(w.shape)}, expected (in, out)")
        b = _array(values, "b", (w.shape[1],), at) if "b" in values else None
        return Dense(layer_name, w.T, b, config=config, source=layer_source)
    if kind == "gru":
        lay = layout("haiku", "gru")
        w_h = _array(values, "w_h", None, at)
        if w_h.ndim != 2 or w_h.shape[1] != 3 * w_h.shape[0] or not w_h.shape[0]:
            raise FormatError(f"{at}/w_h: has shape {tuple(w_h.shape)}, expected (H, 3H)")
        hidden = w_h.shape[0]
        w_i = _array(values, "w_i", None, at)
        if w_i.ndim != 2 or w_i.shape[1] != 3 * hidden:
            raise FormatError(f"{at}/w_i: has shape {tuple(w_i.shape)}, expected (in, {3 * hidden})")
        b = _array(values, "b", (3 * hidden,), at)
        if not w_i.dtype == w_h.dtype == b.dtype:
            raise FormatError(f"{at}: w_i, w_h and b differ in dtype")
        wx, wh, bx = (split(lay, a, hidden, f"{module}/{n}") for a, n in ((w_i, "w_i"), (w_h, "w_h"), (b, "b")))
        gates = {}
        for gate in lay.order:
            sign = -1 if gate == "update" else 1  # Haiku's z keeps h where the canonical update gate replaces it
            gates[(0, "forward", gate)] = Gate(sign * wx[gate], sign * wh[gate], sign * bx[gate],
                                               np.zeros(hidden, b.dtype))
        return RecurrentLayer("gru", w_i.shape[0], hidden, gates, name=layer_name, reset_after=False, config=config,
                              source={**layer_source, "layout": "haiku hk.GRU"})
    lay = layout("haiku", "lstm")
    if "b" not in values:
        raise FormatError(f"{at}: lacks b, which an hk.LSTM's linear always has")
    w = _array(values, "w", None, at)
    if w.ndim != 2 or w.shape[1] % 4 or not w.shape[1]:
        raise FormatError(f"{at}/w: has shape {tuple(w.shape)}, expected (in + H, 4H)")
    hidden = w.shape[1] // 4
    if w.shape[0] <= hidden:
        raise FormatError(f"{at}/w: has {w.shape[0]} rows, which leaves no input for {hidden} units")
    b = _array(values, "b", (4 * hidden,), at)
    inputs = w.shape[0] - hidden
    wx, wh, bx = split(lay, w[:inputs], hidden, f"{module}/w"), split(lay, w[inputs:], hidden, f"{module}/w"), \
        split(lay, b, hidden, f"{module}/b")
    gates = {(0, "forward", g): Gate(wx[g], wh[g], np.array(bx[g]), np.zeros(hidden, b.dtype)) for g in lay.order}
    return RecurrentLayer("lstm", inputs, hidden, gates, name=layer_name, forget_bias=1.0, config=config,
                          source={**layer_source, "layout": "haiku hk.LSTM"})


# -- writing -------------------------------------------------------------------------------------------


def check_layer(layer: Layer) -> str | None:
    """Why a layer cannot be a Haiku module; None when it can."""
    if isinstance(layer, (Dense, Embedding)):
        return None
    if not isinstance(layer, RecurrentLayer) or layer.kind == "rnn":
        return f"{layer.name}: Haiku has no {layer.kind} module that lstm_convert writes (hk.LSTM, hk.GRU)"
    if layer.directions != 1 or layer.num_layers != 1 or layer.backward:
        return f"{layer.name}: hk.LSTM and hk.GRU are one forward layer; this one has {layer.num_layers} layers and " \
               f"{layer.directions} directions"
    if (reason := cell_features_reason(layer, "Haiku module")) is not None:
        return reason
    if layer.kind == "gru" and layer.reset_after:
        return (f"{layer.name}: hk.GRU applies its reset gate before the recurrent product (Keras' reset_after=False); "
                "this GRU applies it after (PyTorch's form), which no Haiku module computes")
    if layer.activation != "tanh" or layer.recurrent_activation != "sigmoid" or not layer.bias:
        return f"{layer.name}: Haiku's modules compute tanh and sigmoid, with biases"
    return None


def write_params(model: Model) -> dict[str, dict[str, np.ndarray]]:
    """Haiku's parameter dict of ``model``: ``lstm``, ``lstm_1``, ... ``gru``, ``linear``, ``embed`` by class in
    order, or the module names the layers were read with."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for layer, name in zip(model.layers, module_names(model)):
        reason = check_layer(layer)
        if reason:
            raise UnsupportedError(reason)
        if isinstance(layer, Dense):
            out[name] = {"w": np.ascontiguousarray(layer.weight.T),
                         **({"b": np.array(layer.bias)} if layer.bias is not None else {})}
        elif isinstance(layer, Embedding):
            out[name] = {"embeddings": np.array(layer.weight)}
        elif layer.kind == "gru":
            lay = layout("haiku", "gru")
            gates = {g: layer.gate(g) for g in lay.order}
            sign = {g: (-1 if g == "update" else 1) for g in lay.order}
            out[name] = {"w_i": join(lay, {g: sign[g] * gate.W_x for g, gate in gates.items()}),
                         "w_h": join(lay, {g: sign[g] * gate.W_h for g, gate in gates.items()}),
                         "b": join(lay, {g: sign[g] * _sum(gate.b_x, gate.b_h) for g, gate in gates.items()})}
        else:
            lay = layout("haiku", "lstm")
            gates = {g: layer.gate(g) for g in lay.order}
            biases = {g: _sum(gate.b_x, gate.b_h) for g, gate in gates.items()}
            shift = layer.forget_bias - 1.0  # Haiku adds 1 itself
            if shift:
                biases["forget"] = (biases["forget"] + np.asarray(shift, biases["forget"].dtype)).astype(
                    biases["forget"].dtype)
            w = np.concatenate([join(lay, {g: gate.W_x for g, gate in gates.items()}),
                                join(lay, {g: gate.W_h for g, gate in gates.items()})], axis=0)
            out[name if name.endswith("/linear") else f"{name}/linear"] = {"w": w, "b": join(lay, biases)}
    return out


def module_names(model: Model) -> list[str]:
    """The Haiku module each layer is written as: the one it was read from, else Haiku's own name for its
    class, numbered as Haiku numbers a class (``lstm``, ``lstm_1``, ...)."""
    out, counts = [], {}
    for layer in model.layers:
        base = {"lstm": "lstm", "gru": "gru", "dense": "linear", "embedding": "embed"}.get(layer.kind, layer.kind)
        k = counts.get(base, 0)
        counts[base] = k + 1
        out.append(layer.config.get("haiku", {}).get("module") or (base if not k else f"{base}_{k}"))
    return out


def _sum(kept: np.ndarray, added: np.ndarray) -> np.ndarray:
    return np.array(kept) if not np.any(added) else (kept + added).astype(kept.dtype)


def flat(params: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The ``/``-joined keys of an ``.npz`` of Haiku's parameters."""
    return {f"{module}/{name}": value for module, values in params.items() for name, value in values.items()}
