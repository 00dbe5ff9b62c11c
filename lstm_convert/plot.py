"""Pictures of recurrent weights, gate by gate: what ``lstm-convert plot`` and ``diff --plot`` draw.

For each recurrent layer, stacked layer and direction, one row per gate of four panels: the heatmaps of
``W_x`` and ``W_h`` (rows: the gate's units; columns: inputs, or the units of ``h``), the bias the gate
applies per unit (``b_x`` and ``b_h`` as bars side by side), and the histogram of the gate's weights. One
colour scale is shared by every heatmap of a layer (symmetric about zero, so that white is zero), and the
histograms share their bins and the bias bars their axis, so that panels compare across gates and a
change to one gate changes that gate's panels alone. matplotlib (the ``plot`` extra) is imported here only.
"""

from __future__ import annotations

import math
from typing import Any

from ._lazy import np
from .canonical import Layer, Model, RecurrentLayer
from .errors import SettingError, ShapeError

COLUMNS = ("W_x", "W_h", "bias", "histogram")
_ROW_INCHES, _WIDTH_INCHES, _DPI = 2.0, 13.0, 100  # binary fractions: whole pixels
SUFFIXES = (".png", ".svg", ".pdf")
# What makes two renderings of one figure differ: the writer's version and the time (left out).
_UNDATED = {".png": {"Software": None}, ".svg": {"Date": None, "Creator": None},
            ".pdf": {"CreationDate": None, "Creator": None, "Producer": None}}


def figure(model: Model | Layer, *, title: str | None = None, difference: bool = False) -> Any:
    """A matplotlib ``Figure`` of every recurrent layer of ``model`` (see the module's docstring); its axes
    are labelled ``"<layer> l<k> <direction> <gate> <panel>"`` (``Axes.get_label()``). With ``difference``
    the values are differences (B - A), and the panels say so."""
    from ._optional import require

    require("matplotlib")
    from matplotlib.figure import Figure

    layers = [layer for layer in (model.layers if isinstance(model, Model) else (model,))
              if isinstance(layer, RecurrentLayer)]
    if not layers:
        raise SettingError("nothing to plot: the model has no recurrent layer")
    blocks = [(layer, index, direction) for layer in layers for index in range(layer.num_layers)
              for direction in layer.direction_names]
    rows = sum(len(layer.gate_names) for layer, _, _ in blocks)
    from matplotlib.ticker import MaxNLocator

    height = _ROW_INCHES * rows + 1.25
    fig = Figure(figsize=(_WIDTH_INCHES, height), dpi=_DPI)
    grid = fig.add_gridspec(rows, len(COLUMNS) + 1, width_ratios=[3, 3, 2, 2, 0.15], hspace=0.9, wspace=0.35,
                            left=0.07, right=0.95, top=1 - 0.9 / height, bottom=0.45 / height)
    row = 0
    what = "difference (B - A)" if difference else "value"
    for layer in layers:
        scale = _scale(layer)
        edges = np.linspace(-scale, scale, 41)
        bias_range = _bias_range(layer)
        image = None
        first_row = row
        for index in range(layer.num_layers):
            for direction in layer.direction_names:
                for gate in layer.gate_names:
                    g = layer.gates[(index, direction, gate)]
                    stem = f"{layer.name} l{index} {direction} {gate}"
                    for col, (role, matrix) in enumerate((("W_x", g.W_x), ("W_h", g.W_h))):
                        ax = fig.add_subplot(grid[row, col], label=f"{stem} {role}")
                        image = ax.imshow(np.asarray(matrix, np.float64), cmap="RdBu_r", vmin=-scale, vmax=scale,
                                          aspect="auto", interpolation="nearest")
                        ax.set_title(f"{stem}: {role} {tuple(matrix.shape)}", fontsize=8)
                        ax.set_ylabel("unit", fontsize=7)
                        ax.set_xlabel("input" if role == "W_x" else "h unit", fontsize=7)
                        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
                        ax.tick_params(labelsize=6)
                    ax = fig.add_subplot(grid[row, 2], label=f"{stem} bias")
                    units = np.arange(layer.hidden_size)
                    if g.b_x is not None:
                        ax.bar(units - 0.2, np.asarray(g.b_x, np.float64), width=0.4, label="b_x", color="#3b6ea5")
                        ax.bar(units + 0.2, np.asarray(g.b_h, np.float64), width=0.4, label="b_h", color="#d1495b")
                        ax.legend(fontsize=6, loc="upper right")
                    ax.set_ylim(*bias_range)
                    ax.axhline(0.0, color="black", linewidth=0.5)
                    ax.set_title(f"{stem}: bias per unit" if g.b_x is not None else f"{stem}: no bias", fontsize=8)
                    ax.set_xlabel("unit", fontsize=7)
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                    ax.set_ylabel(what, fontsize=7)
                    ax.tick_params(labelsize=6)
                    ax = fig.add_subplot(grid[row, 3], label=f"{stem} histogram")
                    values = np.concatenate([np.asarray(g.W_x, np.float64).ravel(), np.asarray(g.W_h, np.float64).ravel()])
                    ax.hist(np.clip(values[np.isfinite(values)], -scale, scale), bins=edges, color="#555555")
                    ax.set_xlim(-scale, scale)
                    ax.set_title(f"{stem}: weights ({values.size})", fontsize=8)
                    ax.set_xlabel(what, fontsize=7)
                    ax.set_ylabel("count", fontsize=7)
                    ax.tick_params(labelsize=6)
                    row += 1
        bar = fig.add_subplot(grid[first_row:row, 4], label=f"{layer.name} colour scale")
        fig.colorbar(image, cax=bar)
        bar.set_ylabel(f"{layer.name}: {what}", fontsize=7)
        bar.tick_params(labelsize=6)
    fig.suptitle(title or ("the difference between two models' weights, B - A" if difference else
                           "recurrent weights, gate by gate"), fontsize=11, y=1 - 0.25 / height)
    return fig


def difference(a: Model | Layer, b: Model | Layer) -> Model:
    """A model of B's recurrent layers whose every tensor is B - A (in float64), for :func:`figure`; a
    ShapeError when their recurrent layers do not pair (see :mod:`lstm_convert.diff`)."""
    import dataclasses

    from .canonical import Gate
    from .diff import _paired

    model_a, model_b = (m if isinstance(m, Model) else Model((m,)) for m in (a, b))
    pairs = [(x, y) for x, y in zip(*_paired(model_a, model_b)) if isinstance(x, RecurrentLayer)]
    rec_b = [y for y in _paired(model_a, model_b)[1] if isinstance(y, RecurrentLayer)]
    if not pairs or len(pairs) != len(rec_b) or any(x.keys() != y.keys() or x.kind != y.kind for x, y in pairs):
        raise ShapeError("the two models' recurrent layers do not pair gate by gate; lstm-convert diff says how "
                         "they differ")
    layers = []
    for x, y in pairs:
        gates = {}
        for key in y.keys():
            ga, gb = x.gates[key], y.gates[key]
            if any(getattr(ga, r) is not None and getattr(ga, r).shape != getattr(gb, r).shape for r in ("W_x", "W_h")):
                raise ShapeError(f"{y.name}: the gate {key} has other shapes in A and B")
            roles = {}
            for role in ("W_x", "W_h", "b_x", "b_h"):
                u, v = getattr(ga, role), getattr(gb, role)
                if u is None and v is None:
                    roles[role] = None
                    continue
                u = np.zeros(np.shape(v)) if u is None else np.asarray(u, np.float64)  # no bias: zeros
                v = np.zeros(np.shape(u)) if v is None else np.asarray(v, np.float64)
                roles[role] = v - u
            gates[key] = Gate(**roles)
        layers.append(dataclasses.replace(y, gates=gates, peepholes={}, projections={}, proj_size=0, layer_norm={},
                                          bias=x.bias or y.bias))
    return Model(tuple(layers))


def save(fig: Any, path, *, before_rename=None) -> None:
    """Write ``fig`` to ``path`` (its suffix says PNG, SVG or PDF) atomically."""
    from pathlib import Path

    from ._atomic import atomic_write

    path = Path(path)
    kind = path.suffix.lower()
    if kind not in SUFFIXES:
        raise SettingError(f"{path}: a picture is written as {', '.join(SUFFIXES)}, not {path.suffix or 'no suffix'}")

    def write(tmp: Path) -> None:
        with open(tmp, "r+b") as handle:
            fig.savefig(handle, format=kind[1:], metadata=_UNDATED[kind])

    atomic_write(path, write, suffix=kind, before_rename=before_rename)


def _scale(layer: RecurrentLayer) -> float:
    """The largest finite |weight| of the layer's matrices: the shared colour scale's end (1 if all zero)."""
    largest = 0.0
    for g in layer.gates.values():
        for matrix in (g.W_x, g.W_h):
            values = np.abs(np.asarray(matrix, np.float64))
            values = values[np.isfinite(values)]
            if values.size:
                largest = max(largest, float(values.max()))
    return largest or 1.0


def _bias_range(layer: RecurrentLayer) -> tuple[float, float]:
    low = high = 0.0
    for g in layer.gates.values():
        for bias in (g.b_x, g.b_h):
            if bias is not None:
                values = np.asarray(bias, np.float64)
                values = values[np.isfinite(values)]
                if values.size:
                    low, high = min(low, float(values.min())), max(high, float(values.max()))
    pad = 0.1 * (high - low) or 1.0
    return low - pad, high + pad


def pixels_of(fig: Any) -> tuple[Any, dict[str, tuple[int, int, int, int]]]:
    """The figure rendered (an RGBA array) and each panel's box in it (``x0, y0, x1, y1`` from the top left),
    by the panel's label: what the tests check a picture by."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba()).copy()
    height = image.shape[0]
    boxes = {}
    for ax in fig.axes:
        box = ax.get_window_extent(canvas.get_renderer())
        boxes[ax.get_label()] = (int(math.floor(box.x0)), int(math.floor(height - box.y1)),
                                 int(math.ceil(box.x1)), int(math.ceil(height - box.y0)))
    return image, boxes
