"""Flax linen parameter trees into canonical layers, and canonical layers into them.

A linen model's parameters are a tree of dicts, one per submodule, named by the module's attribute name or by
Flax's automatic names (``RNN_0``, ``Dense_0``, ``layers_0`` in ``nn.Sequential``). The cells name their dense
parts after gate and side, which says what each tensor is:

===================================  ================================================================  =========
cell (``flax.linen``)                parameters                                                        gates
===================================  ================================================================  =========
``LSTMCell``, ``OptimizedLSTMCell``  ``ii``, ``if``, ``ig``, ``io``: ``kernel (in, H)``, no bias;       i f g o
                                     ``hi``, ``hf``, ``hg``, ``ho``: ``kernel (H, H)`` and ``bias (H,)``
``GRUCell``                          ``ir``, ``iz``, ``in``: ``kernel (in, H)`` and ``bias``; ``hr``,    r z n
                                     ``hz``: ``kernel (H, H)``; ``hn``: ``kernel`` and ``bias``;
                                     ``n = tanh(x W_in + b_in + r (h W_hn + b_hn))``,
                                     ``h' = (1 - z) n + z h``: PyTorch's GRU
``SimpleCell``                       ``i``: ``kernel (in, H)`` and ``bias``; ``h``: ``kernel (H, H)``      h
``Dense``                            ``kernel (in, out)``, ``bias (out,)``
``Embed``                            ``embedding (num_embeddings, features)``
===================================  ================================================================  =========

The LSTM's only bias is on the recurrent side: it is read as the canonical ``b_h`` with a zero ``b_x``, so a
tree goes to the archive and back bit for bit and to PyTorch's two biases exactly; writing sums ``b_x`` into
it, as writing Keras does. A cell under ``cell`` is an ``nn.RNN`` over whole sequences; ``forward_rnn`` and
``backward_rnn`` side by side are an ``nn.Bidirectional`` (outputs concatenated); a cell alone is one step.

A tree holds no order between its modules, and Flax's automatic names number each class apart (``RNN_0``,
``Dense_0``), so modules are read in order only where the names say it: ``nn.Sequential``'s ``layers_K``, or
one class numbered ``Name_K``. A cell defined inline in a module's body is named by the cell's class
(``LSTMCell_0``, ``LSTMCell_1``) wherever the ``nn.RNN`` around it sits: two such cells might be a stack or the
two directions of a bidirectional layer, which the tree cannot tell, so such a tree is refused unless ``only``
selects one module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._lazy import np
from ..canonical import Dense, Embedding, Gate, Layer, Model, RecurrentLayer
from ..errors import FormatError, UnsupportedError

# A cell's dense parts, by gate: (input-side name, recurrent-side name), with which of them has a bias.
CELLS = {
    "lstm": {"input": ("ii", "hi"), "forget": ("if", "hf"), "cell": ("ig", "hg"), "output": ("io", "ho")},
    "gru": {"reset": ("ir", "hr"), "update": ("iz", "hz"), "candidate": ("in", "hn")},
    "rnn": {"hidden": ("i", "h")},
}
_BIASED = {"lstm": {"hi", "hf", "hg", "ho"}, "gru": {"ir", "iz", "in", "hn"}, "rnn": {"i"}}
_CLASSES = {"lstm": "LSTMCell", "gru": "GRUCell", "rnn": "SimpleCell"}
_NUMBERED = re.compile(r"^(.*)_(\d+)$")


def tree_of(obj: Any, where: str) -> dict[str, Any]:
    """A parameter tree as nested dicts of NumPy arrays: a ``FrozenDict``, a dict of JAX arrays, or a
    variables dict (``{"params": ...}``, the other collections left out)."""
    if not isinstance(obj, Mapping):
        raise FormatError(f"{where}: a Flax parameter tree is a dict of dicts, not {type(obj).__name__}")
    if set(obj) >= {"params"} and isinstance(obj["params"], Mapping):
        obj = obj["params"]
    return _plain(obj, where, 0)


def _plain(node: Any, where: str, depth: int) -> Any:
    if depth > 64:
        raise FormatError(f"{where}: the parameter tree nests more than 64 levels deep")
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise FormatError(f"{where}: a key of the parameter tree is {type(key).__name__}, not text")
            out[key] = _plain(value, f"{where}/{key}" if depth else f"{where}: {key}", depth + 1)
        return out
    if not hasattr(node, "shape") or not hasattr(node, "dtype"):
        raise FormatError(f"{where}: holds {type(node).__name__}, not an array")
    return np.asarray(node)


def _kind(node: Mapping[str, Any]) -> str | None:
    """The cell a dict is, by its parts' names; None if it is none."""
    for kind, gates in CELLS.items():
        if set(node) == {name for pair in gates.values() for name in pair}:
            return kind
    return None


def _units(tree: Mapping[str, Any], where: str) -> tuple[list[tuple[tuple[str, ...], str, Any]], list[str]]:
    """Every module that becomes a layer, as ``(path, what, node)`` (what: a cell kind with ``rnn:`` / ``cell:``
    / ``bi:`` before it, ``dense`` or ``embed``), and the arrays that belong to none."""
    found, unknown = [], []

    def walk(path: tuple[str, ...], node: Any) -> None:
        if not isinstance(node, Mapping):
            unknown.append("/".join(path))
            return
        kind = _kind(node)
        if kind is not None:
            if path and path[-1] == "cell":
                found.append((path[:-1], f"rnn:{kind}", node))
            else:
                found.append((path, f"cell:{kind}", node))
            return
        if set(node) == {"forward_rnn", "backward_rnn"} and all(
                isinstance(node[side], Mapping) and set(node[side]) == {"cell"} for side in node):
            kinds = {_kind(node[side]["cell"]) for side in node}
            if len(kinds) == 1 and None not in kinds:
                found.append((path, f"bi:{kinds.pop()}", node))
                return
        arrays = {k: v for k, v in node.items() if not isinstance(v, Mapping)}
        if arrays and set(arrays) <= {"kernel", "bias"} and "kernel" in arrays and len(arrays) == len(node):
            found.append((path, "dense", node))
            return
        if arrays and set(node) == {"embedding"}:
            found.append((path, "embed", node))
            return
        for key, value in node.items():
            walk((*path, key), value)

    walk((), tree)
    return found, unknown


def _ordered(units: list, names: list[str], only: Sequence[str], where: str) -> list:
    """The units in the order the model runs them, where the names say it or ``only`` does, one pattern
    each in order (see the module docstring); never for cells named by their class."""
    from ..formats import order_by_patterns

    if len(units) <= 1:
        return units
    cells = any(what.startswith("cell:") for _, what, _ in units)
    tops = [path[0] if path else "" for path, _, _ in units]
    numbered = [_NUMBERED.match(top) for top in tops]
    if not cells and len(set(tops)) == len(tops) and all(numbered) and len({m.group(1) for m in numbered}) == 1:
        return [unit for _, unit in sorted(zip((int(m.group(2)) for m in numbered), units), key=lambda p: p[0])]
    order = None if cells else order_by_patterns(names, only, lambda pattern, name: _picks([pattern], name))
    if order is not None:
        return [units[names.index(name)] for name in order]
    listed = ", ".join(names)
    why = ("cells named by their class may be a stack or the two directions of one bidirectional layer" if cells
           else "a Flax tree keeps no order between its modules")
    remedy = "select one module with only=" if cells else "name them in the order the model runs them, one " \
        "pattern each in only="
    hint = "select one module with --only" if cells else "name them in the order the model runs them, one " \
        "--only each (listed here alphabetically, not in the model's order)"
    raise UnsupportedError(f"{where}: holds {len(units)} modules ({listed}) whose names do not say how they "
                           f"connect ({why})", remedy=remedy, hint=hint)


def _picks(patterns: Sequence[str], name: str) -> bool:
    from ..formats import selects

    return selects(patterns, name) or selects(patterns, name.replace("/", "."))


def read(tree: Mapping[str, Any], where: str, *, only: Sequence[str] = (), inventory: bool = False,
         source: Mapping[str, str] | None = None) -> Model:
    """The model of a linen parameter tree (nested dicts of arrays, the ``params`` collection)."""
    from ..formats import check_selection, selects, unconverted_error

    units, unknown = _units(tree, where)
    names = ["/".join(path) or "(root)" for path, _, _ in units]
    check_selection(where, only, names + [n.replace("/", ".") for n in names] + unknown)
    picked = [(u, n) for u, n in zip(units, names) if _picks(only, n)]
    chosen, chosen_names = [u for u, _ in picked], [n for _, n in picked]
    left = [n for n in unknown if selects(only, n)]
    if left and not (inventory and chosen):
        raise unconverted_error(where, [{"name": n, "type": "array", "tensors": {}} for n in left], "Flax")
    if not chosen:
        raise FormatError(f"{where}: holds no Flax cell, Dense or Embed that lstm_convert recognises by its "
                          "parameters' names")
    source = {"framework": "flax", **(source or {})}
    layers = tuple(_layer(path, what, node, where, source)
                   for path, what, node in _ordered(chosen, chosen_names, only, where))
    unconverted = [{"name": n, "type": "array", "why": "not a parameter of a module lstm_convert recognises",
                    "tensors": {}} for n in left]
    return Model(layers, source=dict(source), config={"unconverted": unconverted} if unconverted else {})


def _array(node: Mapping[str, Any], key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if key not in node:
        raise FormatError(f"{where}: lacks {key}")
    value = node[key]
    if isinstance(value, Mapping) or value.dtype.kind != "f":
        raise FormatError(f"{where}/{key}: expected floating-point weights, got "
                          f"{'a dict' if isinstance(value, Mapping) else value.dtype}")
    if tuple(value.shape) != shape:
        raise FormatError(f"{where}/{key}: has shape {tuple(value.shape)}, expected {shape}")
    return value


def _layer(path: tuple[str, ...], what: str, node: Mapping[str, Any], where: str, source: Mapping[str, str]) -> Layer:
    name = ".".join(path) or ("cell" if what.startswith("cell:") else "rnn")
    at = f"{where}: {'/'.join(path) or '(root)'}"
    config = {"flax": {"path": list(path), "module": what}}
    if what == "dense":
        kernel = node["kernel"]
        if kernel.ndim != 2:
            raise FormatError(f"{at}/kernel: has shape {tuple(kernel.shape)}, expected (in, out)")
        kernel = _array(node, "kernel", tuple(kernel.shape), at)
        bias = _array(node, "bias", (kernel.shape[1],), at) if "bias" in node else None
        params = kernel.size + (bias.size if bias is not None else 0)
        return Dense(name, kernel.T, bias, config=config, source={**source, "params": params})
    if what == "embed":
        table = node["embedding"]
        if table.ndim != 2:
            raise FormatError(f"{at}/embedding: has shape {tuple(table.shape)}, expected (num_embeddings, features)")
        return Embedding(name, _array(node, "embedding", tuple(table.shape), at), config=config,
                         source={**source, "params": table.size})
    form, kind = what.split(":")
    sides = {"forward": node["forward_rnn"]["cell"], "reverse": node["backward_rnn"]["cell"]} if form == "bi" \
        else {"forward": node}
    gates, sizes = {}, set()
    for direction, cell in sides.items():
        where_cell = {"bi": f"{at}/{'forward' if direction == 'forward' else 'backward'}_rnn/cell",
                      "rnn": f"{at}/cell" if path else f"{where}: cell"}.get(form, at)
        cell_gates, size = _cell(kind, cell, where_cell)
        gates.update({(0, direction, g): gate for g, gate in cell_gates.items()})
        sizes.add(size)
    if len(sizes) > 1:
        raise FormatError(f"{at}: its forward and backward cells differ in size ({sorted(sizes)})")
    input_size, hidden = sizes.pop()
    biases = len(_BIASED[kind]) * hidden
    params = len(sides) * (len(CELLS[kind]) * (input_size + hidden) * hidden + biases)
    return RecurrentLayer(kind, input_size, hidden, gates, directions=len(sides), name=name, cell=form == "cell",
                          reset_after=True, config=config,
                          source={**source, "layout": f"flax.linen {_CLASSES[kind]}", "params": params})


def _cell(kind: str, node: Mapping[str, Any], at: str) -> tuple[dict[str, Gate], tuple[int, int]]:
    for part, value in node.items():
        wanted = {"kernel", "bias"} if part in _BIASED[kind] else {"kernel"}
        nested = [key for key, v in value.items() if isinstance(v, Mapping)] if isinstance(value, Mapping) else []
        if nested:
            raise FormatError(f"{at}/{part}/{nested[0]}: a map where an array belongs")
        if not isinstance(value, Mapping) or "kernel" not in value or set(value) - wanted:
            raise FormatError(f"{at}/{part}: expected {'kernel and bias' if part in _BIASED[kind] else 'kernel'}"
                              f", got {sorted(value) if isinstance(value, Mapping) else 'an array'}")
    first, recurrent = next(iter(CELLS[kind].values()))
    shape = tuple(node[first]["kernel"].shape)
    if len(shape) != 2:
        raise FormatError(f"{at}/{first}/kernel: has shape {shape}, expected (in, units)")
    input_size, hidden = shape
    gates = {}
    for gate, (i, h) in CELLS[kind].items():
        w_x = _array(node[i], "kernel", (input_size, hidden), f"{at}/{i}")
        w_h = _array(node[h], "kernel", (hidden, hidden), f"{at}/{h}")
        if w_h.dtype != w_x.dtype:
            raise FormatError(f"{at}/{h}/kernel: holds {w_h.dtype}, but {at}/{i}/kernel {w_x.dtype}")
        zeros = np.zeros(hidden, w_x.dtype)
        b_x = _array(node[i], "bias", (hidden,), f"{at}/{i}") if i in _BIASED[kind] else zeros
        b_h = _array(node[h], "bias", (hidden,), f"{at}/{h}") if h in _BIASED[kind] else zeros
        gates[gate] = Gate(w_x.T, w_h.T, b_x, b_h)
    return gates, (input_size, hidden)


# -- writing -------------------------------------------------------------------------------------------


def check_layer(layer: Layer) -> str | None:
    """Why a layer's weights cannot be a linen parameter tree; None when they can."""
    if isinstance(layer, (Dense, Embedding)):
        return None
    if not isinstance(layer, RecurrentLayer):
        return f"{layer.name}: a {layer.kind} layer has no flax.linen module that lstm_convert writes"
    if layer.proj_size or layer.peepholes or layer.clip is not None or layer.input_forget or layer.backward:
        return (f"{layer.name}: projections, peepholes, clipping and coupled gates have no flax.linen cell "
                "(LSTMCell computes none of them)")
    if layer.kind == "gru" and not layer.reset_after:
        return (f"{layer.name}: a GRU with reset_after=False applies its reset gate before the recurrent product; "
                "flax.linen's GRUCell applies it after (PyTorch's form)")
    if not layer.bias:
        return f"{layer.name}: a layer without biases; flax.linen's cells always have them (write zeros elsewhere)"
    return None


def write_tree(model: Model) -> dict[str, Any]:
    """The ``params`` collection of a linen model: one module per layer (``nn.Sequential``'s ``layers_K``
    when there are several, each stacked layer its own), an RNN's cell under ``cell``, a bidirectional layer's
    under ``forward_rnn`` and ``backward_rnn``."""
    layers = [part for layer in model.layers for part in (layer.unstack() if isinstance(layer, RecurrentLayer)
                                                          else [layer])]
    for layer in layers:
        reason = check_layer(layer)
        if reason:
            raise UnsupportedError(reason)
    trees = [_module(layer) for layer in layers]
    paths = [tuple(layer.config.get("flax", {}).get("path", ())) for layer in layers]
    if len(trees) == 1 and not paths[0]:
        return trees[0]
    if not (all(paths) and len(set(paths)) == len(paths)) or any(
            a[:len(b)] == b for a in paths for b in paths if a != b):  # not the paths of a tree read from Flax
        paths = [(f"layers_{k}",) for k in range(len(trees))]
    out: dict[str, Any] = {}
    for path, tree in zip(paths, trees):
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = tree
    return out


def _module(layer: Layer) -> dict[str, Any]:
    if isinstance(layer, Dense):
        kernel = {"kernel": np.ascontiguousarray(layer.weight.T)}
        return {**kernel, "bias": np.array(layer.bias)} if layer.bias is not None else kernel
    if isinstance(layer, Embedding):
        return {"embedding": np.array(layer.weight)}
    cells = {direction: _cell_tree(layer, direction) for direction in layer.direction_names}
    if layer.directions == 2:
        return {"forward_rnn": {"cell": cells["forward"]}, "backward_rnn": {"cell": cells["reverse"]}}
    return cells["forward"] if layer.cell else {"cell": cells["forward"]}


def _cell_tree(layer: RecurrentLayer, direction: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for gate, (i, h) in CELLS[layer.kind].items():
        g = layer.gate(gate, 0, direction)
        biased_x, biased_h = i in _BIASED[layer.kind], h in _BIASED[layer.kind]
        # The bias the cell lacks on one side is added on the other, where the sum computes the same.
        b_x = g.b_x if biased_x else None
        b_h = g.b_h if biased_h else None
        if not biased_x:
            b_h = _sum(g.b_h, g.b_x)
        if not biased_h:
            b_x = _sum(g.b_x, g.b_h)
        out[i] = {"kernel": np.ascontiguousarray(g.W_x.T), **({"bias": b_x} if biased_x else {})}
        out[h] = {"kernel": np.ascontiguousarray(g.W_h.T), **({"bias": b_h} if biased_h else {})}
    return out


def _sum(kept: np.ndarray, added: np.ndarray) -> np.ndarray:
    """``kept + added``, bit for bit ``kept`` where ``added`` is zero (a tree read from Flax, written back)."""
    if not np.any(added):
        return np.array(kept)
    return (kept + added).astype(kept.dtype)

