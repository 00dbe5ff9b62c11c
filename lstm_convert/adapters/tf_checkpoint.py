"""TensorFlow 1 checkpoints (``tf.compat.v1.train.Saver``) into canonical layers, recognised by variable names.

A checkpoint holds variables by name and nothing else: no layer classes, no order between separate parts
of a model. The cells of ``tf.compat.v1.nn.rnn_cell`` (and of ``tf.contrib.rnn`` before it) name their
variables after themselves, which says what each one is:

=============================  ==============================================================  =========
scope                          variables                                                       forget
=============================  ==============================================================  =========
``lstm_cell`` (LSTMCell,       ``kernel [in + H, 4H]`` multiplying ``concat([x, h])``, gates     1.0
LSTMBlockCell)                 i, j (the candidate), f, o; ``bias [4H]``; peepholes
                               ``w_i_diag``, ``w_f_diag``, ``w_o_diag``; ``projection/kernel
                               [H, P]`` (then ``h`` is ``P`` wide)
``basic_lstm_cell``            the same, without peepholes or projection                         1.0
``lstm_fused_cell``            the same (LSTMBlockFusedCell)                                     1.0
``cudnn_compatible_lstm_cell`` the same, its bias the sum of cuDNN's two; CudnnLSTM's            0.0
                               saveable adds both (``bias_cudnn_0``, ``bias_cudnn_1``), kept
``gru_cell``                   ``gates/kernel [in + H, 2H]`` (r, u), ``gates/bias``,
                               ``candidate/kernel [in + H, H]`` multiplying ``concat([x, r h])``,
                               ``candidate/bias``; ``h' = u h + (1 - u) c`` (GRUBlockCell:
                               ``w_ru``, ``b_ru``, ``w_c``, ``b_c``)
``cudnn_compatible_gru_cell``  ``gates/...`` as above; ``candidate/input_projection`` and
                               ``candidate/hidden_projection`` (reset after the product); the
                               gates' two bias sides as ``bias_cudnn 0`` and ``bias_cudnn 1``
``basic_rnn_cell``             ``kernel [in + H, H]``, ``bias [H]``
``dense`` (tf.layers.dense)    ``kernel [in, out]``, ``bias [out]``
=============================  ==============================================================  =========

TensorFlow 1.0 and 1.1 named the matrices ``weights`` and ``biases``. An LSTM cell adds ``forget_bias`` to
its forget gate at run time without storing it: it is folded into the forget gate's bias (the value is the
class's default unless ``forget_bias`` says otherwise), and the layer's provenance records it. Cells under
``.../fw/`` and ``.../bw/`` are one bidirectional layer; ``.../cell_K/`` (MultiRNNCell,
stack_bidirectional_rnn) are stacked layers, in the order of K. Optimizer slots (a variable under another
variable's name: ``kernel/Adam``), ``global_step`` and ``beta1_power``/``beta2_power`` are training state,
skipped with a note. Separate groups of cells (an encoder and a decoder, a head apart) are refused unless
``only`` names them in the order the model runs them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._lazy import np

from ..canonical import Dense, Gate, Model, RecurrentLayer
from ..errors import FormatError, UnsupportedError
from ..gates import GATES, TF_GRU_GATES, TF_LSTM, split

# Cell scope -> (kind, default forget_bias, the class named in provenance)
CELLS = {
    "lstm_cell": ("lstm", 1.0, "LSTMCell (or LSTMBlockCell)"),
    "basic_lstm_cell": ("lstm", 1.0, "BasicLSTMCell"),
    "lstm_fused_cell": ("lstm", 1.0, "LSTMBlockFusedCell"),
    "cudnn_compatible_lstm_cell": ("lstm", 0.0, "CudnnCompatibleLSTMCell"),
    "gru_cell": ("gru", None, "GRUCell"),
    "cudnn_compatible_gru_cell": ("gru", None, "CudnnCompatibleGRUCell"),
    "basic_rnn_cell": ("rnn", None, "BasicRNNCell"),
}
# The variables of each kind of cell, by their name under the cell's scope (TensorFlow 1.0-1.1 names second).
_ROLES = {
    "lstm": {"kernel": ("kernel", "weights"), "bias": ("bias", "biases"), "w_i_diag": ("w_i_diag",),
             "w_f_diag": ("w_f_diag",), "w_o_diag": ("w_o_diag",),
             "projection": ("projection/kernel", "projection/weights"),
             "bias_x": ("bias_cudnn_0",), "bias_h": ("bias_cudnn_1",)},
    "gru": {"gates": ("gates/kernel", "gates/weights", "w_ru"), "gates_bias": ("gates/bias", "gates/biases", "b_ru"),
            "candidate": ("candidate/kernel", "candidate/weights", "w_c"),
            "candidate_bias": ("candidate/bias", "candidate/biases", "b_c"),
            "gates_bias_x": ("bias_cudnn 0",), "gates_bias_h": ("bias_cudnn 1",),
            "input_projection": ("candidate/input_projection/kernel",),
            "input_projection_bias": ("candidate/input_projection/bias",),
            "hidden_projection": ("candidate/hidden_projection/kernel",),
            "hidden_projection_bias": ("candidate/hidden_projection/bias",)},
    "rnn": {"kernel": ("kernel", "weights"), "bias": ("bias", "biases")},
    "dense": {"kernel": ("kernel",), "bias": ("bias",)},
}
_SIDES = {"bias": "bias_x", "gates_bias": "gates_bias_x"}  # a summed bias, and its input side where stored
_DENSE = re.compile(r"dense(_\d+)?$")
_TRAINING = ("global_step", "beta1_power", "beta2_power")

@dataclass
class _Cell:
    """One cell's variables: its scope, class scope name, and role -> variable name."""

    scope: str
    cls: str
    roles: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "dense" if self.cls == "dense" else CELLS[self.cls][0]


@dataclass
class _Unit:
    """One canonical layer: one cell, or a forward and a backward cell."""

    path: str  # the scope above the cell (or above fw/bw)
    cells: dict[str, _Cell] = field(default_factory=dict)  # "forward" / "reverse"


def read(names: Sequence[str], fetch: Callable[[str], np.ndarray], shapes: Callable[[str], tuple], where: str, *,
         only: Sequence[str] = (), inventory: bool = False, forget_bias: float | None = None,
         source: dict | None = None) -> Model:
    """The model of a checkpoint's variables ``names`` (``fetch(name)`` gives a value, ``shapes(name)`` its
    shape without reading it)."""
    from ..formats import check_selection, selects, unconverted_error

    present = set(names)
    cells: dict[str, _Cell] = {}
    training, unknown = [], []
    for name in names:
        parts = name.split("/")
        at = next((i for i in range(len(parts) - 1, -1, -1) if parts[i] in CELLS or _DENSE.match(parts[i])), None)
        found = None
        if at is not None:
            cls = parts[at] if parts[at] in CELLS else "dense"
            kind = "dense" if cls == "dense" else CELLS[cls][0]
            rest = "/".join(parts[at + 1:])
            role = next((r for r, spelled in _ROLES[kind].items() if rest in spelled), None)
            if role is not None:
                found = ("/".join(parts[:at + 1]), cls, role)
        if found is not None:
            scope, cls, role = found
            cell = cells.setdefault(scope, _Cell(scope, cls))
            if role in cell.roles:
                raise FormatError(f"{where}: {scope} holds both {cell.roles[role]!r} and {name!r} for its {role}")
            cell.roles[role] = name
        elif name.rpartition("/")[0] in present or parts[-1] in _TRAINING:
            training.append(name)  # an optimizer's slot of another variable, or the step counter
        else:
            unknown.append(name)
    units = _units(cells, where)
    groups = _groups(units, where)
    check_selection(where, only, sorted(groups) + sorted(_dotted(g) for g in groups) + unknown)
    chosen = [g for g in groups if _picks(only, g)]
    left = [n for n in unknown if selects(only, n)]
    if left and not (inventory and chosen):
        raise unconverted_error(where, [{"name": n, "type": "variable", "tensors": {"shape": shapes(n)}} for n in left],
                                "TensorFlow")
    if not chosen:
        raise FormatError(f"{where}: holds no recurrent cell or dense layer that lstm_convert recognises by its "
                          f"variable names ({', '.join(sorted(names)[:10])}{' ...' if len(names) > 10 else ''})")
    if inventory and len(chosen) > 1 and not only:  # inspect: every group, and why converting them whole is refused
        order = sorted(chosen)
        unknown_order = [{"name": f"the order of {', '.join(map(_dotted, order))}", "type": "order",
                          "why": "a checkpoint does not say how separate groups of cells connect; name them in "
                                 "the order the model runs them, one --only each"}]
    else:
        order, unknown_order = _order(chosen, only, where), []
    layers = [_layer(unit, fetch, shapes, where, forget_bias, source or {}) for group in order
              for unit in groups[group]]
    model_source = dict(source or {})
    if training:
        model_source["skipped"] = (f"{len(training)} variables of training state (optimizer slots, step "
                                   f"counters): {', '.join(training[:4])}{' ...' if len(training) > 4 else ''}")
    unconverted = unknown_order + [{"name": n, "type": "variable", "why": "not a variable of a cell lstm_convert "
                                    "recognises", "tensors": {"shape": list(shapes(n))}} for n in left]
    return Model(tuple(layers), source=model_source, config={"unconverted": unconverted} if unconverted else {})


def notes(model: Model) -> list[str]:
    """What reading a checkpoint assumed and changed, from the model's provenance."""
    out = ["a TensorFlow checkpoint holds variables only: its cells are read with TensorFlow's defaults (activation "
           "tanh, each run over the whole sequence, one after another, from zero states); state what the model did "
           "otherwise with --set (LAYER.activation=relu, LAYER.return_sequences=false, ...); a cell built with "
           "cell_clip or proj_clip computes what no format lstm_convert writes, and is not read exactly"]
    out += [f"{layer.name}: {layer.source['folded']}" for layer in model.layers if "folded" in layer.source]
    if "skipped" in model.source:
        out.append(f"skipped {model.source['skipped']}")
    return out


def _units(cells: dict[str, _Cell], where: str) -> dict[str, _Unit]:
    units: dict[str, _Unit] = {}
    for scope, cell in cells.items():
        parent, _, _ = scope.rpartition("/")
        above, _, side = parent.rpartition("/")
        if side in ("fw", "bw") and cell.kind != "dense":
            path, direction = above, "forward" if side == "fw" else "reverse"
        else:
            path, direction = parent if cell.kind != "dense" else scope, "forward"
        unit = units.setdefault(path or cell.cls, _Unit(path or cell.cls))
        if direction in unit.cells:
            raise FormatError(f"{where}: {path} holds two cells, {unit.cells[direction].scope} and {scope}; a "
                              "checkpoint's variable names must say which cell is which")
        unit.cells[direction] = cell
    for unit in units.values():
        if list(unit.cells) == ["reverse"]:
            raise FormatError(f"{where}: {unit.path}/bw has no forward cell beside it under {unit.path}/fw")
    return units


_STACKED = re.compile(r"^(.*?)/?cell_(\d+)(/.*)?$")


def _groups(units: dict[str, _Unit], where: str) -> dict[str, list[_Unit]]:
    """Units by the group they run in: the cells of a MultiRNNCell (``.../cell_K/...``) together, in order."""
    numbered: dict[str, dict[int, _Unit]] = {}
    groups: dict[str, list[_Unit]] = {}
    for path, unit in units.items():
        match = _STACKED.match(path)
        if match:
            numbered.setdefault(match.group(1) or "cell", {})[int(match.group(2))] = unit
        else:
            groups[path] = [unit]
    for base, by_index in numbered.items():
        if sorted(by_index) != list(range(len(by_index))):
            raise FormatError(f"{where}: the stacked cells under {base} are numbered {sorted(by_index)}, not "
                              f"0 to {len(by_index) - 1}")
        if base in groups:
            raise FormatError(f"{where}: {base} holds a cell and stacked cells beside it")
        groups[base] = [by_index[k] for k in sorted(by_index)]
    return groups


def _dotted(group: str) -> str:
    """A group's name as its layers are named (``rnn/multi_rnn_cell`` -> ``rnn.multi_rnn_cell``)."""
    return group.replace("/", ".")


def _picks(patterns: Sequence[str], group: str) -> bool:
    """Whether ``patterns`` select a group, by its variable scope or by its layers' name (the name the
    converted file has, so that one --only serves the checkpoint and its conversion in ``verify``)."""
    from ..formats import selects

    return selects(patterns, group) or selects(patterns, _dotted(group))


def _order(chosen: list[str], only: Sequence[str], where: str) -> list[str]:
    """The groups in the order the model runs them: one group, or each named by its own --only pattern."""
    from ..formats import order_by_patterns

    if len(chosen) == 1:
        return chosen
    order = order_by_patterns(chosen, only, lambda pattern, group: _picks([pattern], group))
    if order is None:
        names = ", ".join(_dotted(g) for g in sorted(chosen))
        raise UnsupportedError(
            f"{where}: holds {len(chosen)} separate groups of cells and layers ({names}); a checkpoint does not say "
            "how they connect", remedy="name them in the order the model runs them, one pattern each in only=",
            hint="name them in the order the model runs them, one --only each (the order in which they are listed "
            "here is alphabetical, not the model's)")
    return order


def _value(cell: _Cell, role: str, fetch: Callable, shape: tuple | None, where: str) -> np.ndarray:
    name = cell.roles[role]
    array = fetch(name)
    if array.dtype.kind != "f":
        raise FormatError(f"{where}: {name} holds {array.dtype}, not floating-point weights")
    if shape is not None and tuple(array.shape) != shape:
        raise FormatError(f"{where}: {name} has shape {tuple(array.shape)}, expected {shape}")
    return array


def _needs(cell: _Cell, roles: Sequence[str], where: str) -> None:
    missing = [_ROLES[cell.kind][r][0] for r in roles if r not in cell.roles]
    if missing:
        raise FormatError(f"{where}: {cell.scope} lacks {', '.join(missing)}, which a {cell.cls} always has")


def _dense(cell: _Cell, name: str, fetch: Callable, where: str, source: dict) -> Dense:
    _needs(cell, ["kernel"], where)
    kernel = _value(cell, "kernel", fetch, None, where)
    if kernel.ndim != 2:
        raise FormatError(f"{where}: {cell.roles['kernel']} has shape {tuple(kernel.shape)}, expected [in, out]")
    bias = _value(cell, "bias", fetch, (kernel.shape[1],), where) if "bias" in cell.roles else None
    params = kernel.size + (bias.size if bias is not None else 0)
    return Dense(name, np.ascontiguousarray(kernel.T), bias,
                 source={**source, "layout": "tf.layers.dense (kernel [in, out])", "variables": cell.scope,
                         "params": params})


def _layer(unit: _Unit, fetch: Callable, shapes: Callable, where: str, forget_bias: float | None,
           source: dict) -> Any:
    """The canonical layer of one unit: a dense layer, or a recurrent layer of one or two cells."""
    name = unit.path.replace("/", ".")
    first = unit.cells["forward"]
    if first.kind == "dense":
        return _dense(first, name, fetch, where, source)
    kinds = {cell.kind for cell in unit.cells.values()}
    classes = {cell.cls for cell in unit.cells.values()}
    if len(classes) > 1:
        raise UnsupportedError(f"{where}: {unit.path} has a {first.cls} forward and a "
                               f"{unit.cells['reverse'].cls} backward; one layer takes one kind of cell")
    kind = kinds.pop()
    gates, peepholes, projections = {}, {}, {}
    sizes, notes = set(), []
    for direction, cell in unit.cells.items():
        read_cell = {"lstm": _lstm, "gru": _gru, "rnn": _rnn}[kind]
        cell_gates, extra, size, note = read_cell(cell, fetch, shapes, where, forget_bias)
        sizes.add(size)
        gates.update({(0, direction, g): gate for g, gate in cell_gates.items()})
        peepholes.update({(0, direction, g): p for g, p in extra.get("peepholes", {}).items()})
        if "projection" in extra:
            projections[(0, direction)] = extra["projection"]
        if note:
            notes.append(note)
    if len(sizes) > 1:
        raise FormatError(f"{where}: the forward and backward cells of {unit.path} differ in size ({sorted(sizes)})")
    input_size, hidden, proj = sizes.pop()
    label = "GRUBlockCell" if first.roles.get("gates", "").endswith("/w_ru") else CELLS[first.cls][2]
    stored = sum(math.prod(shapes(name)) for cell in unit.cells.values() for role, name in cell.roles.items()
                 if _SIDES.get(role) not in cell.roles)  # a sum kept beside its two sides counts once
    provenance = {**source, "layout": f"TensorFlow {label}", "params": stored,
                  "variables": ", ".join(c.scope for c in unit.cells.values())}
    if notes:
        provenance["folded"] = notes[0]
    if first.cls.startswith("cudnn_compatible") and not any(r.endswith(("bias_x", "bias_h")) for r in first.roles):
        provenance["summed"] = ("the bias is the sum of cuDNN's input-side and recurrent-side biases (kept as b_x, "
                                "b_h zero)")
    return RecurrentLayer(kind, input_size, hidden, gates, directions=len(unit.cells), name=name,
                           reset_after=kind != "gru" or first.cls == "cudnn_compatible_gru_cell",
                           proj_size=proj, projections=projections, peepholes=peepholes, source=provenance)


def _stacked(cell: _Cell, role: str, fetch: Callable, shapes: Callable, where: str, width: int) -> tuple:
    """A ``[in + R, width]`` kernel cut into its ``x`` rows and its ``h`` rows (R recurrent units)."""
    shape = tuple(shapes(cell.roles[role]))
    if len(shape) != 2 or shape[1] != width:
        raise FormatError(f"{where}: {cell.roles[role]} has shape {list(shape)}, expected [in + units, {width}]")
    return _value(cell, role, fetch, shape, where)


def _lstm(cell: _Cell, fetch: Callable, shapes: Callable, where: str, forget_bias: float | None) -> tuple:
    _needs(cell, ["kernel"], where)
    width = tuple(shapes(cell.roles["kernel"]))
    if len(width) != 2 or width[1] % 4 or not width[1]:
        raise FormatError(f"{where}: {cell.roles['kernel']} has shape {list(width)}, expected [in + units, 4 x units]")
    hidden = width[1] // 4
    extra: dict[str, Any] = {}
    recurrent = hidden
    if "projection" in cell.roles:
        projection = _value(cell, "projection", fetch, None, where)
        if projection.ndim != 2 or projection.shape[0] != hidden or not 0 < projection.shape[1] < hidden:
            raise FormatError(f"{where}: {cell.roles['projection']} has shape {tuple(projection.shape)}, expected "
                              f"[{hidden}, P] with P below {hidden}")
        recurrent = projection.shape[1]
        extra["projection"] = np.ascontiguousarray(projection.T)
    kernel = _stacked(cell, "kernel", fetch, shapes, where, 4 * hidden)
    input_size = kernel.shape[0] - recurrent
    if input_size < 1:
        raise FormatError(f"{where}: {cell.roles['kernel']} has {kernel.shape[0]} rows, which leaves no input for "
                          f"{recurrent} recurrent units")
    w_x = split(TF_LSTM, kernel[:input_size], hidden, cell.roles["kernel"])
    w_h = split(TF_LSTM, kernel[input_size:], hidden, cell.roles["kernel"])
    bias = (_value(cell, "bias", fetch, (4 * hidden,), where) if "bias" in cell.roles
            else np.zeros(4 * hidden, kernel.dtype))
    b_x = {g: np.array(b) for g, b in split(TF_LSTM, bias, hidden, cell.roles.get("bias", "bias")).items()}
    b_h = {g: np.zeros(hidden, kernel.dtype) for g in GATES["lstm"]}
    halves = _halves(cell, "bias", "bias_x", "bias_h", bias, fetch, where)
    if halves is not None:  # cuDNN's saveable keeps both sides beside their sum: exact to two-bias targets
        b_x, b_h = ({g: np.array(b) for g, b in split(TF_LSTM, half, hidden, name).items()}
                    for half, name in zip(halves, (cell.roles["bias_x"], cell.roles["bias_h"])))
    added = CELLS[cell.cls][1] if forget_bias is None else forget_bias
    note = ""
    if added:
        b_x["forget"] = (b_x["forget"] + np.asarray(added, b_x["forget"].dtype)).astype(b_x["forget"].dtype)
        said = "its default" if forget_bias is None else "as stated"
        note = (f"forget_bias {float(added)!r} ({said}; TensorFlow adds it at run time and does not store "
                f"it) folded into the forget gate's bias")
    peep = [r for r in ("w_i_diag", "w_f_diag", "w_o_diag") if r in cell.roles]
    if peep:
        if len(peep) != 3:
            raise FormatError(f"{where}: {cell.scope} has {', '.join(peep)} but not all three peepholes")
        extra["peepholes"] = {g: _value(cell, r, fetch, (hidden,), where)
                              for g, r in (("input", "w_i_diag"), ("forget", "w_f_diag"), ("output", "w_o_diag"))}
    gates = {g: Gate(w_x[g], w_h[g], b_x[g], b_h[g]) for g in GATES["lstm"]}
    return gates, extra, (input_size, hidden, extra["projection"].shape[0] if "projection" in extra else 0), note


def _halves(cell: _Cell, summed: str, first: str, second: str, total: np.ndarray, fetch: Callable,
            where: str) -> tuple | None:
    """The two sides of a bias that cuDNN's saveable stores beside their sum (``bias_cudnn_0`` input-side,
    ``bias_cudnn_1`` recurrent-side), checked to add up to it; None where they are not stored."""
    present = [role for role in (first, second) if role in cell.roles]
    if not present:
        return None
    if len(present) == 1:
        raise FormatError(f"{where}: {cell.scope} has {cell.roles[present[0]]} without the other side of its bias")
    halves = tuple(_value(cell, role, fetch, total.shape, where) for role in (first, second))
    if summed in cell.roles and not np.array_equal(halves[0] + halves[1], total):
        raise FormatError(f"{where}: {cell.roles[first]} and {cell.roles[second]} do not add up to "
                          f"{cell.roles[summed]}: the checkpoint contradicts itself")
    return halves


def _gru(cell: _Cell, fetch: Callable, shapes: Callable, where: str, forget_bias: float | None) -> tuple:
    cudnn = cell.cls == "cudnn_compatible_gru_cell"
    _needs(cell, ["gates"] + (["input_projection", "hidden_projection"] if cudnn else ["candidate"]), where)
    width = tuple(shapes(cell.roles["gates"]))
    if len(width) != 2 or width[1] % 2 or not width[1]:
        raise FormatError(f"{where}: {cell.roles['gates']} has shape {list(width)}, expected [in + units, 2 x units]")
    hidden = width[1] // 2
    gates_kernel = _stacked(cell, "gates", fetch, shapes, where, 2 * hidden)
    input_size = gates_kernel.shape[0] - hidden
    if input_size < 1:
        raise FormatError(f"{where}: {cell.roles['gates']} has {gates_kernel.shape[0]} rows, which leaves no input "
                          f"for {hidden} units")
    dtype = gates_kernel.dtype
    zeros = np.zeros(hidden, dtype)

    def bias(role: str, size: int) -> np.ndarray:
        return _value(cell, role, fetch, (size,), where) if role in cell.roles else np.zeros(size, dtype)

    w_x = split(TF_GRU_GATES, gates_kernel[:input_size], hidden, cell.roles["gates"])
    w_h = split(TF_GRU_GATES, gates_kernel[input_size:], hidden, cell.roles["gates"])
    stored = bias("gates_bias", 2 * hidden)
    b = split(TF_GRU_GATES, stored, hidden, cell.roles.get("gates_bias", "gates/bias"))
    gates = {g: Gate(w_x[g], w_h[g], b[g], zeros) for g in ("reset", "update")}
    halves = _halves(cell, "gates_bias", "gates_bias_x", "gates_bias_h", stored, fetch, where)
    if halves is not None:
        b_x, b_h = (split(TF_GRU_GATES, half, hidden, cell.roles[role])
                    for half, role in zip(halves, ("gates_bias_x", "gates_bias_h")))
        gates = {g: Gate(w_x[g], w_h[g], b_x[g], b_h[g]) for g in ("reset", "update")}
    if cudnn:  # candidate = tanh(x Wx + bx + r (h Wh + bh)): reset after the product
        wx = _value(cell, "input_projection", fetch, (input_size, hidden), where)
        wh = _value(cell, "hidden_projection", fetch, (hidden, hidden), where)
        gates["candidate"] = Gate(wx.T, wh.T, bias("input_projection_bias", hidden),
                                  bias("hidden_projection_bias", hidden))
    else:  # candidate = tanh(concat([x, r h]) W + b): reset before the product
        kernel = _value(cell, "candidate", fetch, (input_size + hidden, hidden), where)
        gates["candidate"] = Gate(kernel[:input_size].T, kernel[input_size:].T, bias("candidate_bias", hidden), zeros)
    return gates, {}, (input_size, hidden, 0), ""


def _rnn(cell: _Cell, fetch: Callable, shapes: Callable, where: str, forget_bias: float | None) -> tuple:
    _needs(cell, ["kernel"], where)
    width = tuple(shapes(cell.roles["kernel"]))
    if len(width) != 2 or not width[1]:
        raise FormatError(f"{where}: {cell.roles['kernel']} has shape {list(width)}, expected [in + units, units]")
    hidden = width[1]
    kernel = _stacked(cell, "kernel", fetch, shapes, where, hidden)
    input_size = kernel.shape[0] - hidden
    if input_size < 1:
        raise FormatError(f"{where}: {cell.roles['kernel']} has {kernel.shape[0]} rows, which leaves no input for "
                          f"{hidden} units")
    bias = (_value(cell, "bias", fetch, (hidden,), where) if "bias" in cell.roles
            else np.zeros(hidden, kernel.dtype))
    gate = Gate(kernel[:input_size].T, kernel[input_size:].T, bias, np.zeros(hidden, kernel.dtype))
    return {"hidden": gate}, {}, (input_size, hidden, 0), ""
