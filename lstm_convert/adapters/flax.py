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
``nnx.LSTMCell``                     as linen's, the forget part named ``if_``                           i f g o
``nnx.OptimizedLSTMCell``            ``dense_i`` ``kernel (in, 4H)``, no bias; ``dense_h`` ``kernel       i f g o
                                     (H, 4H)`` and ``bias (4H,)``: the gates as column blocks
``nnx.GRUCell``                      ``dense_i`` ``kernel (in, 3H)`` and ``bias``; ``dense_h`` ``kernel   r z n
                                     (H, 3H)``, no bias: no recurrent candidate bias
``nnx.SimpleCell``                   ``dense_i`` ``kernel`` and ``bias``; ``dense_h`` ``kernel``            h
===================================  ================================================================  =========

An NNX cell of two parts is told by its recurrent kernel ``(H, G*H)``: four gates, three or one. NNX trees
(``nnx.to_pure_dict(nnx.state(model, nnx.Param))``) are written back as NNX trees, other sources as linen's
unless ``api="nnx"`` is asked for; ``nnx.Sequential`` keys its layers ``0``, ``1``, ... under ``layers``, and
its ``rngs`` state is no weight and is left out.

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
from . import cell_features_reason
from ..gates import join, layout, split

# A cell's dense parts, by gate: (input-side name, recurrent-side name), with which of them has a bias.
CELLS = {
    "lstm": {"input": ("ii", "hi"), "forget": ("if", "hf"), "cell": ("ig", "hg"), "output": ("io", "ho")},
    "gru": {"reset": ("ir", "hr"), "update": ("iz", "hz"), "candidate": ("in", "hn")},
    "rnn": {"hidden": ("i", "h")},
}
_BIASED = {"lstm": {"hi", "hf", "hg", "ho"}, "gru": {"ir", "iz", "in", "hn"}, "rnn": {"i"}}
_CLASSES = {"lstm": "LSTMCell", "gru": "GRUCell", "rnn": "SimpleCell"}
_NUMBERED = re.compile(r"^(.*)_(\d+)$")
# A cell made inline in a compact module is named by its class, wherever the nn.RNN around it sits.
_BY_CLASS = re.compile(r"^(LSTMCell|OptimizedLSTMCell|GRUCell|SimpleCell|MGUCell|ConvLSTMCell)_\d+$")


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
        out: dict[str, Any] = {}
        for key, value in node.items():
            if type(key) is int:  # nnx.Sequential's layers are keyed 0, 1, ...
                key = str(key)
            if not isinstance(key, str) or key in out:
                raise FormatError(f"{where}: a key of the parameter tree is {key!r}, not text, or appears twice")
            at = f"{where}/{key}" if depth else f"{where}: {key}"
            out[key] = {} if key == "rngs" and isinstance(value, Mapping) else _plain(value, at, depth + 1)
        return out
    if not hasattr(node, "shape") or not hasattr(node, "dtype"):
        raise FormatError(f"{where}: holds {type(node).__name__}, not an array")
    return np.asarray(node)


def _kind(node: Mapping[str, Any]) -> str | None:
    """The cell a dict is, by its parts' names (linen's ``lstm``, ``gru``, ``rnn``; NNX's ``nnx-lstm``, whose
    forget part is ``if_``, and ``nnx-packed``, its cells of two Linear parts); None if it is none."""
    for kind, gates in CELLS.items():
        names = {name for pair in gates.values() for name in pair}
        if set(node) == names:
            return kind
        if kind == "lstm" and set(node) == names - {"if"} | {"if_"}:
            return "nnx-lstm"
    if set(node) == {"dense_i", "dense_h"}:
        return "nnx-packed"
    return None


# NNX's cells of two Linear parts, by their number of gates: the kind, which part has the bias, the class.
# The gates' column blocks are gates.NNX_LSTM, NNX_GRU and NNX_RNN.
_PACKED = {4: ("lstm", "dense_h", "OptimizedLSTMCell"), 3: ("gru", "dense_i", "GRUCell"),
           1: ("rnn", "dense_i", "SimpleCell")}


def _as_linen(style: str, node: Mapping[str, Any], at: str) -> tuple[str, dict[str, Any], str]:
    """``(kind, the cell in linen's form, the class that wrote it)`` of a cell of any style. An NNX cell of
    two parts is told by its recurrent kernel ``(H, G*H)``: G gates (4, 3 or 1), each a block of columns."""
    if style in CELLS:
        return style, dict(node), f"flax.linen {_CLASSES[style]}"
    if style == "nnx-lstm":
        return "lstm", {("if" if k == "if_" else k): v for k, v in node.items()}, "flax.nnx LSTMCell"
    parts = {}
    for part in ("dense_i", "dense_h"):
        value = node[part]
        if not isinstance(value, Mapping) or "kernel" not in value or set(value) - {"kernel", "bias"} or any(
                isinstance(v, Mapping) for v in value.values()):
            raise FormatError(f"{at}/{part}: expected a kernel (and a bias), got "
                              f"{sorted(value) if isinstance(value, Mapping) else 'an array'}")
        parts[part] = value
    recurrent = parts["dense_h"]["kernel"].shape
    if len(recurrent) != 2 or not recurrent[0] or recurrent[1] % recurrent[0] or recurrent[1] // recurrent[0] \
            not in _PACKED:
        raise FormatError(f"{at}/dense_h/kernel: has shape {tuple(recurrent)}, expected (H, 4H), (H, 3H) or (H, H): "
                          "an NNX OptimizedLSTMCell, GRUCell or SimpleCell")
    hidden = recurrent[0]
    kind, biased, cls = _PACKED[recurrent[1] // hidden]
    lay = layout("nnx", kind)
    other = "dense_i" if biased == "dense_h" else "dense_h"
    if "bias" not in parts[biased] or "bias" in parts[other]:
        raise FormatError(f"{at}: an NNX {cls} has a bias on {biased} only; this one has it on "
                          f"{', '.join(p for p in parts if 'bias' in parts[p]) or 'neither'}")
    width = len(lay.order) * hidden
    rows = parts["dense_i"]["kernel"].shape[0] if parts["dense_i"]["kernel"].ndim == 2 else 0
    blocks_i = split(lay, _array(parts["dense_i"], "kernel", (rows, width), f"{at}/dense_i"), hidden,
                     f"{at}/dense_i/kernel")
    blocks_h = split(lay, _array(parts["dense_h"], "kernel", (hidden, width), f"{at}/dense_h"), hidden,
                     f"{at}/dense_h/kernel")
    biases = split(lay, _array(parts[biased], "bias", (width,), f"{at}/{biased}"), hidden, f"{at}/{biased}/bias")
    out: dict[str, Any] = {}
    for gate in lay.order:
        i, h = CELLS[kind][gate]
        out[i] = {"kernel": blocks_i[gate].T}
        out[h] = {"kernel": blocks_h[gate].T}
        out[i if biased == "dense_i" else h]["bias"] = biases[gate]
    if kind == "gru":  # NNX's GRU has no recurrent-side candidate bias: linen's is zero
        out["hn"]["bias"] = np.zeros(hidden, biases["candidate"].dtype)
    return kind, out, f"flax.nnx {cls}"


def _units(tree: Mapping[str, Any], where: str) -> tuple[list, list[str], list[str]]:
    """Every module that becomes a layer, as ``(path, what, node)`` (what: a cell style with ``rnn:`` / ``cell:``
    / ``bi:`` before it, ``dense`` or ``embed``), the arrays that belong to none, and NNX's ``rngs`` left out."""
    found, unknown, skipped = [], [], []

    def walk(path: tuple[str, ...], node: Any) -> None:
        if not isinstance(node, Mapping):
            unknown.append("/".join(path))
            return
        if path and path[-1] == "rngs":  # NNX's random-number state, not weights
            skipped.append("/".join(path))
            return
        kind = _kind(node)
        if kind is not None:
            if path and path[-1] == "cell":
                found.append((path[:-1], f"rnn:{kind}", node))
            else:
                found.append((path, f"cell:{kind}", node))
            return
        if set(node) - {"rngs"} == {"forward_rnn", "backward_rnn"} and all(
                isinstance(node[side], Mapping) and set(node[side]) - {"rngs"} == {"cell"}
                and isinstance(node[side]["cell"], Mapping) for side in ("forward_rnn", "backward_rnn")):
            kinds = {_kind(node[side]["cell"]) for side in ("forward_rnn", "backward_rnn")}
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
    return found, unknown, skipped


def _ordered(units: list, names: list[str], only: Sequence[str], where: str) -> list:
    """The units in the order the model runs them, where the names say it or ``only`` does, one pattern
    each in order (see the module docstring); never for cells named by their class."""
    from ..formats import order_by_patterns

    if len(units) <= 1:
        return units
    paths = [path for path, _, _ in units]
    common = 0  # the modules' first key after the path they share: nn.Sequential's layers_K, NNX's layers/K
    while all(len(p) > common for p in paths) and len({p[common] for p in paths}) == 1:
        common += 1
    tops = [p[common] if len(p) > common else "" for p in paths]
    cells = any(what.startswith("cell:") and _BY_CLASS.match(top) for (_, what, _), top in zip(units, tops))
    numbered = [_NUMBERED.match(top) or re.fullmatch(r"()(\d+)", top) for top in tops]
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

    units, unknown, skipped = _units(tree, where)
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
    if skipped:
        source["skipped"] = f"NNX's random-number state ({', '.join(skipped[:4])}{' ...' if len(skipped) > 4 else ''})"
    layer_source = {k: v for k, v in source.items() if k != "skipped"}
    layers = tuple(_layer(path, what, node, where, layer_source)
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
    form, style = what.split(":")
    sides = {"forward": node["forward_rnn"]["cell"], "reverse": node["backward_rnn"]["cell"]} if form == "bi" \
        else {"forward": node}
    gates, sizes, labels = {}, set(), set()
    params = 0
    for direction, cell in sides.items():
        where_cell = {"bi": f"{at}/{'forward' if direction == 'forward' else 'backward'}_rnn/cell",
                      "rnn": f"{at}/cell" if path else f"{where}: cell"}.get(form, at)
        kind, linen_cell, label = _as_linen(style, cell, where_cell)
        cell_gates, size = _cell(kind, linen_cell, where_cell)
        gates.update({(0, direction, g): gate for g, gate in cell_gates.items()})
        sizes.add(size)
        labels.add(label)
        params += sum(v.size for part in cell.values() if isinstance(part, Mapping) for v in part.values())
    if len(sizes) > 1:
        raise FormatError(f"{at}: its forward and backward cells differ in size ({sorted(sizes)})")
    if len(labels) > 1:
        raise FormatError(f"{at}: its forward and backward cells are of different classes ({', '.join(sorted(labels))})")
    input_size, hidden = sizes.pop()
    (label,) = labels
    config["flax"]["cell"] = label
    return RecurrentLayer(kind, input_size, hidden, gates, directions=len(sides), name=name, cell=form == "cell",
                          reset_after=True, config=config, source={**source, "layout": label, "params": params})


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


def check_layer(layer: Layer, api: str = "linen") -> str | None:
    """Why a layer's weights cannot be a linen (or NNX) parameter tree; None when they can."""
    if isinstance(layer, (Dense, Embedding)):
        return None
    if not isinstance(layer, RecurrentLayer):
        return f"{layer.name}: a {layer.kind} layer has no flax.linen module that lstm_convert writes"
    if (reason := cell_features_reason(layer, "flax.linen cell")) is not None:
        return reason
    if layer.kind == "gru" and not layer.reset_after:
        return (f"{layer.name}: a GRU with reset_after=False applies its reset gate before the recurrent product; "
                "flax.linen's GRUCell applies it after (PyTorch's form)")
    if not layer.bias:
        return f"{layer.name}: a layer without biases; flax.linen's cells always have them (write zeros elsewhere)"
    if api == "nnx" and layer.kind == "gru" and nnx_class(layer) == "flax.nnx GRUCell":
        try:
            for direction in layer.direction_names:
                _nnx_cell_tree(layer, direction)
        except UnsupportedError as exc:
            return str(exc)
    return None


def api_of(model: Model) -> str:
    """``nnx`` when every recurrent layer was read from an NNX tree, else ``linen``."""
    cells = [layer.config.get("flax", {}).get("cell", "") for layer in model.layers if isinstance(layer, RecurrentLayer)]
    return "nnx" if cells and all(c.startswith("flax.nnx") for c in cells) else "linen"


def write_tree(model: Model, api: str | None = None) -> dict[str, Any]:
    """The parameters of a linen model (``api`` ``linen``: its ``params`` collection) or of an NNX one (``nnx``:
    ``nnx.to_pure_dict(nnx.state(model, nnx.Param))``); by default as the layers were read (:func:`api_of`).
    One module per layer (``nn.Sequential``'s ``layers_K``, NNX's ``layers/K``, when there are several, each
    stacked layer its own, unless the layers keep the paths they were read from), an RNN's cell under
    ``cell``, a bidirectional layer's under ``forward_rnn`` and ``backward_rnn``."""
    api = api or api_of(model)
    if api not in ("linen", "nnx"):
        raise UnsupportedError(f"the Flax API is 'linen' or 'nnx', not {api!r}")
    layers = [part for layer in model.layers for part in (layer.unstack() if isinstance(layer, RecurrentLayer)
                                                          else [layer])]
    for layer in layers:
        reason = check_layer(layer, api)
        if reason:
            raise UnsupportedError(reason)
    trees = [_module(layer, api) for layer in layers]
    paths = [tuple(layer.config.get("flax", {}).get("path", ())) for layer in layers]
    if len(trees) == 1 and not paths[0]:
        return trees[0]
    if not (all(paths) and len(set(paths)) == len(paths)) or any(
            a[:len(b)] == b for a in paths for b in paths if a != b):  # not the paths of a tree read from Flax
        paths = [(f"layers_{k}",) if api == "linen" else ("layers", str(k)) for k in range(len(trees))]
    out: dict[Any, Any] = {}
    for path, tree in zip(paths, trees):
        if api == "nnx":  # nnx.Sequential keys its layers by number
            path = tuple(int(key) if key.isdigit() else key for key in path)
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = tree
    return out


def _module(layer: Layer, api: str) -> dict[str, Any]:
    if isinstance(layer, Dense):
        kernel = {"kernel": np.ascontiguousarray(layer.weight.T)}
        return {**kernel, "bias": np.array(layer.bias)} if layer.bias is not None else kernel
    if isinstance(layer, Embedding):
        return {"embedding": np.array(layer.weight)}
    write = _cell_tree if api == "linen" else _nnx_cell_tree
    cells = {direction: write(layer, direction) for direction in layer.direction_names}
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


# The NNX class each kind of layer is written as, unless it was read from another one.
_NNX_DEFAULT = {"lstm": "flax.nnx LSTMCell", "gru": "flax.nnx GRUCell", "rnn": "flax.nnx SimpleCell"}


def nnx_class(layer: RecurrentLayer) -> str:
    read = layer.config.get("flax", {}).get("cell", "")
    return read if read.startswith("flax.nnx") and read != "flax.nnx" else _NNX_DEFAULT[layer.kind]


def _nnx_cell_tree(layer: RecurrentLayer, direction: str) -> dict[str, Any]:
    """One direction's cell as NNX holds it: LSTMCell per gate (``if_``), the others as two Linear parts,
    ``dense_i`` and ``dense_h``, their gates as column blocks (see :data:`_PACKED`)."""
    linen = _cell_tree(layer, direction)
    cls = nnx_class(layer)
    if cls == "flax.nnx LSTMCell":
        return {("if_" if key == "if" else key): value for key, value in linen.items()}
    lay = layout("nnx", layer.kind)
    _, biased, _ = next(entry for entry in _PACKED.values() if entry[0] == layer.kind)
    names = {gate: CELLS[layer.kind][gate] for gate in lay.order}
    parts: dict[str, Any] = {
        "dense_i": {"kernel": join(lay, {g: linen[i]["kernel"].T for g, (i, _) in names.items()})},
        "dense_h": {"kernel": join(lay, {g: linen[h]["kernel"].T for g, (_, h) in names.items()})}}
    if layer.kind == "gru" and np.any(linen["hn"]["bias"]):
        raise UnsupportedError(f"{layer.name}: flax.nnx's GRUCell has no recurrent-side candidate bias, and this "
                               "layer's (b_h of its candidate gate, PyTorch's bias_hh_l0[2H:]) is not zero; write "
                               "it as linen's GRUCell (api='linen'), which has one")
    side = 0 if biased == "dense_i" else 1
    parts[biased]["bias"] = join(lay, {g: linen[pair[side]]["bias"] for g, pair in names.items()})
    return parts


def _sum(kept: np.ndarray, added: np.ndarray) -> np.ndarray:
    """``kept + added``, bit for bit ``kept`` where ``added`` is zero (a tree read from Flax, written back)."""
    if not np.any(added):
        return np.array(kept)
    return (kept + added).astype(kept.dtype)

