"""Equinox modules into canonical layers, and canonical layers into them, as objects and as the leaves
``eqx.tree_serialise_leaves`` writes.

==================  ====================================================================================
module              leaves, in order
==================  ====================================================================================
``nn.LSTMCell``     ``weight_ih (4H, in)``, ``weight_hh (4H, H)``, ``bias (4H,)``: PyTorch's gate blocks
                    i, f, g, o and one bias; state ``(h, c)``; one step per call
``nn.GRUCell``      ``weight_ih (3H, in)``, ``weight_hh (3H, H)``, ``bias (3H,)``, ``bias_n (H,)``: blocks
                    r, z, n; ``n = tanh(x W_n + b_n + r (h W_hn + bias_n))``: PyTorch's GRU
``nn.Linear``       ``weight (out, in)``, ``bias (out,)``
``nn.Embedding``    ``weight (num_embeddings, dim)``
==================  ====================================================================================

The one bias is read as the input-side ``b_x`` (the recurrent-side ``b_h`` zero, but the GRU candidate's,
``bias_n``); writing adds ``b_h`` into it where the cell has no place for it. A cell is one step
(``cell=True``): an Equinox model scans it over a sequence itself.

A file of leaves holds arrays and nothing else, no class or name: it is read with a *skeleton*, the list of
modules in the order of their leaves, each ``{"class": "LSTMCell", "input_size": 5, "hidden_size": 4,
"use_bias": true}`` (``Linear``: ``in_features``, ``out_features``; ``Embedding``: ``num_embeddings``,
``embedding_dim``; ``name`` optional). The files lstm_convert writes carry their skeleton as one more leaf at
the end, which ``eqx.tree_deserialise_leaves`` with the skeleton's modules never reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._lazy import np
from ..canonical import Dense, Embedding, Gate, Layer, Model, RecurrentLayer
from ..errors import FormatError, UnsupportedError
from . import cell_features_reason
from ..gates import join, layout, split

CLASSES = ("LSTMCell", "GRUCell", "Linear", "Embedding")
_SIZES = {"LSTMCell": ("input_size", "hidden_size"), "GRUCell": ("input_size", "hidden_size"),
          "Linear": ("in_features", "out_features"), "Embedding": ("num_embeddings", "embedding_dim")}


def skeleton_of(value: Any, where: str) -> list[dict[str, Any]]:
    """A skeleton checked: a list of modules (or ``{"layers": [...]}``), each a known class with its sizes."""
    if isinstance(value, Mapping) and "layers" in value:
        value = value["layers"]
    if not isinstance(value, list) or not value:
        raise FormatError(f"{where}: an Equinox skeleton is a list of modules, each {{\"class\": ..., sizes}}")
    out = []
    for k, entry in enumerate(value):
        if not isinstance(entry, Mapping) or entry.get("class") not in CLASSES:
            raise FormatError(f"{where}: module {k} of the skeleton must have a class among {', '.join(CLASSES)}")
        sizes = _SIZES[entry["class"]]
        if not all(type(entry.get(s)) is int and 0 < entry[s] < 1 << 31 for s in sizes):
            raise FormatError(f"{where}: module {k} ({entry['class']}) needs positive integer {' and '.join(sizes)}")
        use_bias = entry.get("use_bias", True)
        if not isinstance(use_bias, bool) or (entry["class"] == "Embedding" and "use_bias" in entry):
            raise FormatError(f"{where}: module {k} ({entry['class']}): use_bias must be true or false (not for "
                              "an Embedding)")
        name = entry.get("name", f"{entry['class'].lower()}_{k}")
        if not isinstance(name, str) or not name:
            raise FormatError(f"{where}: module {k}: name must be text")
        out.append({"class": entry["class"], **{s: entry[s] for s in sizes}, "use_bias": use_bias, "name": name})
    if len({e["name"] for e in out}) != len(out):
        raise FormatError(f"{where}: the skeleton names two modules alike")
    return out


def leaf_shapes(entry: Mapping[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """The leaves a module of the skeleton has, by name and shape, in Equinox's order."""
    cls = entry["class"]
    if cls in ("LSTMCell", "GRUCell"):
        gates = 4 if cls == "LSTMCell" else 3
        h, n = entry["hidden_size"], entry["input_size"]
        out = [("weight_ih", (gates * h, n)), ("weight_hh", (gates * h, h))]
        if entry["use_bias"]:
            out.append(("bias", (gates * h,)))
            if cls == "GRUCell":
                out.append(("bias_n", (h,)))
        return out
    if cls == "Linear":
        return [("weight", (entry["out_features"], entry["in_features"]))] + (
            [("bias", (entry["out_features"],))] if entry["use_bias"] else [])
    return [("weight", (entry["num_embeddings"], entry["embedding_dim"]))]


def read(skeleton: Sequence[Mapping[str, Any]], leaves: Sequence[np.ndarray], where: str, *,
         source: Mapping[str, str] | None = None) -> Model:
    """The model of ``leaves`` (in order) as ``skeleton`` (checked, see :func:`skeleton_of`) says they are."""
    wanted = [(entry, name, shape) for entry in skeleton for name, shape in leaf_shapes(entry)]
    if len(leaves) != len(wanted):
        raise FormatError(f"{where}: holds {len(leaves)} arrays, but the skeleton's modules have {len(wanted)}")
    values: list[dict[str, np.ndarray]] = [{} for _ in skeleton]
    index = {id(entry): k for k, entry in enumerate(skeleton)}
    for (entry, name, shape), leaf in zip(wanted, leaves):
        if tuple(leaf.shape) != shape or leaf.dtype.kind != "f":
            raise FormatError(f"{where}: {entry['name']}.{name} is {leaf.dtype} of shape {tuple(leaf.shape)}, "
                              f"expected floating-point weights of shape {shape} ({entry['class']})")
        values[index[id(entry)]][name] = leaf
    source = {"framework": "equinox", **(source or {})}
    return Model(tuple(_layer(entry, arrays, source) for entry, arrays in zip(skeleton, values)),
                 source=dict(source))


def _layer(entry: Mapping[str, Any], arrays: Mapping[str, np.ndarray], source: Mapping[str, str]) -> Layer:
    name, cls = entry["name"], entry["class"]
    config = {"equinox": {"class": cls}}
    params = sum(a.size for a in arrays.values())
    layer_source = {**source, "layout": f"equinox.nn.{cls}", "params": params}
    if cls == "Linear":
        return Dense(name, arrays["weight"], arrays.get("bias"), config=config, source=layer_source)
    if cls == "Embedding":
        return Embedding(name, arrays["weight"], config=config, source=layer_source)
    kind = "lstm" if cls == "LSTMCell" else "gru"
    lay = layout("equinox", kind)
    hidden = entry["hidden_size"]
    w_x = split(lay, arrays["weight_ih"], hidden, f"{name}.weight_ih")
    w_h = split(lay, arrays["weight_hh"], hidden, f"{name}.weight_hh")
    bias = split(lay, arrays["bias"], hidden, f"{name}.bias") if "bias" in arrays else None
    gates = {}
    for gate in lay.order:
        b_h = None
        if bias is not None:
            b_h = arrays["bias_n"] if gate == "candidate" else np.zeros(hidden, bias[gate].dtype)
        gates[(0, "forward", gate)] = Gate(w_x[gate], w_h[gate], bias[gate] if bias is not None else None, b_h)
    return RecurrentLayer(kind, entry["input_size"], hidden, gates, name=name, cell=True, bias=bias is not None,
                          reset_after=True, config=config, source=layer_source)


def from_objects(obj: Any, where: str = "the Equinox module") -> Model:
    """The model of an Equinox ``LSTMCell``, ``GRUCell``, ``Linear`` or ``Embedding``, or of a list, tuple or
    ``nn.Sequential`` of them (in that order)."""
    modules = list(getattr(obj, "layers", obj)) if isinstance(obj, (list, tuple)) or hasattr(obj, "layers") \
        else [obj]
    skeleton, leaves = [], []
    for k, module in enumerate(modules):
        cls = type(module).__name__
        if cls not in CLASSES:
            raise FormatError(f"{where}: module {k} is a {cls}; lstm_convert reads {', '.join(CLASSES)}")
        entry = {"class": cls, "name": f"{cls.lower()}_{k}"}
        if cls == "Embedding":
            entry.update(num_embeddings=int(module.num_embeddings), embedding_dim=int(module.embedding_size))
        elif cls == "Linear":
            entry.update(in_features=int(module.in_features), out_features=int(module.out_features),
                         use_bias=bool(module.use_bias))
        else:
            entry.update(input_size=int(module.input_size), hidden_size=int(module.hidden_size),
                         use_bias=bool(module.use_bias))
        skeleton.append(entry)
        leaves += [np.asarray(getattr(module, name)) for name, _ in leaf_shapes(skeleton_of([entry], where)[0])]
    return read(skeleton_of(skeleton, where), leaves, where)


# -- writing -------------------------------------------------------------------------------------------


def check_layer(layer: Layer) -> str | None:
    """Why a layer cannot be an Equinox module; None when it can."""
    if isinstance(layer, (Dense, Embedding)):
        return None
    if not isinstance(layer, RecurrentLayer):
        return f"{layer.name}: a {layer.kind} layer has no equinox.nn module that lstm_convert writes"
    if layer.kind == "rnn":
        return f"{layer.name}: equinox.nn has no simple RNN cell (LSTMCell and GRUCell only)"
    if layer.directions != 1 or layer.num_layers != 1:
        return (f"{layer.name}: an equinox.nn cell is one direction of one layer; this layer has "
                f"{layer.num_layers} layers and {layer.directions} directions (split it, or keep it in an archive)")
    if (reason := cell_features_reason(layer, "equinox.nn cell")) is not None:
        return reason
    if layer.kind == "gru" and not layer.reset_after:
        return (f"{layer.name}: a GRU with reset_after=False applies its reset gate before the recurrent product; "
                "equinox.nn's GRUCell applies it after (PyTorch's form)")
    if layer.activation != "tanh" or layer.recurrent_activation != "sigmoid":
        return f"{layer.name}: equinox.nn's cells compute tanh and sigmoid only"
    return None


def write_leaves(model: Model) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """The skeleton of ``model`` and its leaves in order (see the module docstring)."""
    skeleton, leaves = [], []
    for layer in model.layers:
        reason = check_layer(layer)
        if reason:
            raise UnsupportedError(reason)
        if isinstance(layer, Dense):
            skeleton.append({"class": "Linear", "in_features": layer.in_features, "out_features": layer.out_features,
                             "use_bias": layer.bias is not None, "name": layer.name})
            leaves += [np.array(layer.weight)] + ([np.array(layer.bias)] if layer.bias is not None else [])
        elif isinstance(layer, Embedding):
            skeleton.append({"class": "Embedding", "num_embeddings": layer.num_embeddings,
                             "embedding_dim": layer.embedding_dim, "name": layer.name})
            leaves.append(np.array(layer.weight))
        else:
            lay = layout("equinox", layer.kind)
            skeleton.append({"class": "LSTMCell" if layer.kind == "lstm" else "GRUCell", "input_size": layer.input_size,
                             "hidden_size": layer.hidden_size, "use_bias": layer.bias, "name": layer.name})
            gates = {g: layer.gate(g) for g in lay.order}
            leaves += [join(lay, {g: gate.W_x for g, gate in gates.items()}),
                       join(lay, {g: gate.W_h for g, gate in gates.items()})]
            if layer.bias:
                inside = {g: _sum(gate.b_x, gate.b_h) if (g != "candidate" or layer.kind == "lstm") else
                          np.array(gate.b_x) for g, gate in gates.items()}
                leaves.append(join(lay, inside))
                if layer.kind == "gru":
                    leaves.append(np.array(gates["candidate"].b_h))
    return skeleton, leaves


def _sum(kept: np.ndarray, added: np.ndarray) -> np.ndarray:
    """``kept + added``, bit for bit ``kept`` where ``added`` is zero (a module read from Equinox)."""
    return np.array(kept) if not np.any(added) else (kept + added).astype(kept.dtype)


def to_objects(model: Model, key: Any = None) -> list[Any]:
    """New Equinox modules holding ``model``'s layers, in order."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    skeleton, leaves = write_leaves(model)
    modules = build(skeleton, key if key is not None else jax.random.PRNGKey(0))
    out, at = [], 0
    for entry, module in zip(skeleton, modules):
        names = [name for name, _ in leaf_shapes(entry)]
        values = [jnp.asarray(v) for v in leaves[at:at + len(names)]]
        at += len(names)
        out.append(eqx.tree_at(lambda m, names=names: [getattr(m, n) for n in names], module, values))
    return out


def build(skeleton: Sequence[Mapping[str, Any]], key: Any) -> list[Any]:
    """Equinox modules of the skeleton's classes and sizes (random weights: a template to load leaves into)."""
    import equinox as eqx
    import jax

    keys = jax.random.split(key, len(skeleton))
    out = []
    for entry, k in zip(skeleton, keys):
        cls = getattr(eqx.nn, entry["class"])
        if entry["class"] == "Embedding":
            out.append(cls(entry["num_embeddings"], entry["embedding_dim"], key=k))
        elif entry["class"] == "Linear":
            out.append(cls(entry["in_features"], entry["out_features"], use_bias=entry["use_bias"], key=k))
        else:
            out.append(cls(entry["input_size"], entry["hidden_size"], use_bias=entry["use_bias"], key=k))
    return out
