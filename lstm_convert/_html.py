"""The gate tables of a layer and a model as HTML, for notebooks (``_repr_html_``)."""

from __future__ import annotations

from html import escape
from typing import Any

from ._lazy import Placeholder, np

_STYLE = "border-collapse:collapse;font-family:monospace;font-size:12px"
_CELL = "border:1px solid #ccc;padding:2px 6px;text-align:left"


def _row(cells: list[str], head: bool = False) -> str:
    tag = "th" if head else "td"
    return "<tr>" + "".join(f'<{tag} style="{_CELL}">{cell}</{tag}>' for cell in cells) + "</tr>"


def _shape(array: Any) -> str:
    return "&mdash;" if array is None else escape(str(tuple(np.shape(array)) if not isinstance(array, Placeholder)
                                                       else tuple(array.shape)))


def _spread(array: Any) -> str:
    """Mean &plusmn; std of an array's values, or nothing for a placeholder (a header-only read)."""
    if array is None or isinstance(array, Placeholder) or not np.size(array):
        return ""
    values = np.asarray(array, np.float64)
    values = values[np.isfinite(values)]
    return f"{values.mean():.3g} &plusmn; {values.std():.3g}" if values.size else "no finite value"


def layer_html(layer: Any) -> str:
    """A recurrent layer: its sizes and features, then one row per stacked layer, direction and gate with
    the shapes of ``W_x``, ``W_h``, ``b_x``, ``b_h`` and the spread of each matrix's values."""
    from .canonical import RecurrentLayer

    if not isinstance(layer, RecurrentLayer):
        return f"<p><code>{escape(repr(layer))}</code></p>"
    said = [f"input_size {layer.input_size}", f"hidden_size {layer.hidden_size}"]
    said += [f"num_layers {layer.num_layers}"] * (layer.num_layers > 1) + ["bidirectional"] * (layer.directions == 2)
    said += [f"proj_size {layer.proj_size}"] * bool(layer.proj_size)
    said += [f"activation {layer.activation}", f"recurrent_activation {layer.recurrent_activation}",
             f"dtype {layer.dtype}", *layer.cell_features(), *layer.semantics()]
    rows = [_row(["layer", "direction", "gate", "W_x", "W_h", "b_x", "b_h", "W_x values", "W_h values"], head=True)]
    for index, direction, gate in layer.keys():
        g = layer.gates[(index, direction, gate)]
        rows.append(_row([str(index), escape(direction), f"<b>{escape(gate)}</b>", _shape(g.W_x), _shape(g.W_h),
                          _shape(g.b_x), _shape(g.b_h), _spread(g.W_x), _spread(g.W_h)]))
    head = (f"<p><b>{escape(layer.name)}</b>: {escape(layer.kind.upper())}, {escape(', '.join(said))}; tensors "
            f"<code>{escape(layer.name)}.l&lt;k&gt;.&lt;direction&gt;.&lt;gate&gt;.&lt;role&gt;</code></p>")
    return head + f'<table style="{_STYLE}">' + "".join(rows) + "</table>"


def model_html(model: Any) -> str:
    """A model: one row per layer (type, sizes, parameters as PyTorch counts them), then each recurrent
    layer's gate table."""
    from .canonical import RecurrentLayer

    framework = model.source.get("framework")
    framework = framework if framework in ("keras", "torch") else "torch"
    title = {"keras": "Keras", "torch": "PyTorch"}[framework]
    rows = [_row(["layer", "type", "in", "out", f"params as {title} counts them"], head=True)]
    for layer in model.layers:
        rows.append(_row([f"<b>{escape(layer.name)}</b>", escape(type(layer).__name__ if not isinstance(
            layer, RecurrentLayer) else layer.kind.upper()), str(getattr(layer, "input_size", "")),
            str(getattr(layer, "output_size", "")), str(layer.count_params(framework))]))
    spec = model.input_spec()
    shape = "input " + escape(f"{tuple(spec['input_shape']) if spec.get('input_shape') else '(any)'} "
                              f"{spec.get('input_dtype') or ''}".strip())
    parts = [f"<p><b>Model</b> of {len(model.layers)} layers, {model.count_params(framework)} parameters as "
             f"{title} counts them; {shape}</p>",
             f'<table style="{_STYLE}">' + "".join(rows) + "</table>"]
    parts += [layer_html(layer) for layer in model.layers if isinstance(layer, RecurrentLayer)]
    return "".join(parts)
