"""What a file holds, layer by layer and gate by gate: the data behind ``lstm-convert inspect``.

Parameter counts follow the framework of the file (Keras counts one LSTM bias,
PyTorch two), so they agree with ``model.count_params()`` and
``sum(p.numel() for p in module.parameters())``. For a canonical archive
they follow the framework the weights came from.
"""

from __future__ import annotations

from typing import Any

from .canonical import ROLES, Dense, Embedding, Layer, Model, RecurrentLayer, tensor_name
from .gates import layout

_TYPE = {"lstm": "LSTM", "dense": "Dense", "embedding": "Embedding"}


def describe(model: Model, fmt: str, path: str = "") -> dict[str, Any]:
    """A JSON-compatible description of ``model`` as stored in a file of format ``fmt``."""
    framework = {"keras": "keras", "h5": "keras", "torch": "torch"}.get(fmt) or \
        (model.source.get("framework") if model.source.get("framework") in ("keras", "torch") else "torch")
    layers = [_layer(layer, fmt, framework) for layer in model.layers]
    return {"file": path, "format": fmt, "source": dict(model.source), "counted_as": framework,
            "layers": layers, "total_params": sum(layer["params"] for layer in layers)}


def _layer(layer: Layer, fmt: str, framework: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": layer.name, "type": _TYPE[layer.kind], "dtype": layer.dtype,
                           "params": layer.count_params(framework)}
    if isinstance(layer, Dense):
        out["sizes"] = {"in_features": layer.in_features, "out_features": layer.out_features}
        out["activation"] = layer.activation
        out["bias"] = layer.bias is not None
    elif isinstance(layer, Embedding):
        out["sizes"] = {"num_embeddings": layer.num_embeddings, "embedding_dim": layer.embedding_dim}
    else:
        out["sizes"] = {"input_size": layer.input_size, "hidden_size": layer.hidden_size,
                        "num_layers": layer.num_layers, "directions": layer.directions}
        out["bias"] = layer.bias
        out["activation"] = layer.activation
        out["recurrent_activation"] = layer.recurrent_activation
        out["gates"] = _gates(layer, fmt)
    out["settings"] = dict(layer.config)
    return out


def _gates(layer: RecurrentLayer, fmt: str) -> list[dict[str, Any]]:
    """For every gate, where it sits in the file's own tensors, and its canonical shapes."""
    rows = []
    hidden = layer.hidden_size
    for index, direction, gate in layer.keys():
        g = layer.gates[(index, direction, gate)]
        shapes = {role: list(getattr(g, role).shape) for role in ROLES if getattr(g, role) is not None}
        if fmt in ("keras", "h5", "torch"):
            lay = layout("keras" if fmt in ("keras", "h5") else "torch", layer.kind)
            k = lay.order.index(gate)
            span = f"{k * hidden}:{(k + 1) * hidden}"
            suffix = f"_l{index}{'_reverse' if direction == 'reverse' else ''}" if lay.framework == "torch" else ""
            names = lay.tensors if layer.bias else lay.tensors[:2]
            where = {f"{t}{suffix}": (f"[:, {span}]" if lay.gate_axis == 1 and t != "bias" else f"[{span}]")
                     for t in names}
            symbol = lay.symbols[k]
        else:
            where = {role: tensor_name(layer.name, index, direction, gate, role) for role in shapes}
            symbol = gate
        rows.append({"layer": index, "direction": direction, "gate": gate, "symbol": symbol,
                     "tensors": where, "shapes": shapes})
    return rows
