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

_TYPE = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN", "dense": "Dense", "embedding": "Embedding"}


def describe(model: Model, fmt: str, path: str = "") -> dict[str, Any]:
    """A JSON-compatible description of ``model`` as stored in a file of format ``fmt``."""
    framework = {"keras": "keras", "h5": "keras", "torch": "torch", "onnx": "onnx"}.get(fmt) or \
        (model.source.get("framework") if model.source.get("framework") in ("keras", "torch") else "torch")
    layers = [_layer(layer, fmt, framework) for layer in model.layers]
    return {"file": path, "format": fmt, "source": dict(model.source), "counted_as": framework,
            "layers": layers, "total_params": sum(layer["params"] for layer in layers),
            "conversions": model_conversions(model)}


def model_conversions(model: Model) -> dict[str, dict[str, Any]]:
    """Per target, whether the whole model converts exactly: every layer does, and for Keras they chain."""
    from .adapters.keras import check_chain
    from .errors import UnsupportedError

    out = {}
    for target in TARGETS:
        reasons = [f"{layer.name}: {c[target]['reason']}" for layer in model.layers
                   if not (c := conversions(layer))[target]["exact"]]
        if target == "keras" and not reasons:
            try:
                check_chain(model)
            except UnsupportedError as exc:
                reasons.append(str(exc))
        out[target] = {"exact": not reasons, "reasons": reasons}
    return out


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
        if layer.proj_size:
            out["sizes"]["proj_size"] = layer.proj_size
        out["variant"] = [flag for flag, on in (("cell", layer.cell), ("go_backwards", layer.go_backwards),
                                                ("reset_after=False", layer.kind == "gru" and not layer.reset_after))
                          if on]
        out["bias"] = layer.bias
        out["activation"] = layer.activation
        out["recurrent_activation"] = layer.recurrent_activation
        out["gates"] = _gates(layer, fmt)
    out["settings"] = dict(layer.config)
    out["conversions"] = conversions(layer)
    return out


def _gates(layer: RecurrentLayer, fmt: str) -> list[dict[str, Any]]:
    """For every gate, where it sits in the file's own tensors, and its canonical shapes."""
    rows = []
    hidden = layer.hidden_size
    for index, direction, gate in layer.keys():
        g = layer.gates[(index, direction, gate)]
        shapes = {role: list(getattr(g, role).shape) for role in ROLES if getattr(g, role) is not None}
        if fmt in ("keras", "h5", "torch", "onnx"):
            lay = layout({"h5": "keras"}.get(fmt, fmt), layer.kind)
            k = lay.order.index(gate)
            span = f"{k * hidden}:{(k + 1) * hidden}"
            suffix = f"_l{index}{'_reverse' if direction == 'reverse' else ''}" if lay.framework == "torch" else ""
            names = lay.tensors if layer.bias else lay.tensors[:2]
            where = {f"{t}{suffix}": (f"[:, {span}]" if lay.gate_axis == 1 and t != "bias" else f"[{span}]")
                     for t in names}
            if lay.framework == "onnx":  # [direction, rows]; B holds Wb then Rb
                d = layer.direction_names.index(direction)
                size = len(lay.order) * hidden
                where = {"W": f"[{d}, {span}]", "R": f"[{d}, {span}]"}
                if layer.bias:
                    where["B"] = f"[{d}, {span}] + [{d}, {k * hidden + size}:{(k + 1) * hidden + size}]"
            symbol = lay.symbols[k]
        else:
            where = {role: tensor_name(layer.name, index, direction, gate, role) for role in shapes}
            symbol = gate
        rows.append({"layer": index, "direction": direction, "gate": gate, "symbol": symbol,
                     "tensors": where, "shapes": shapes})
    return rows


# -- representability -------------------------------------------------------------------------------

TARGETS = ("keras", "torch", "onnx", "archive")
# Settings that are not weights which the other framework does not keep: a value other than what the
# other framework does is reported as dropped. (PyTorch always returns full sequences and the states;
# Keras models written here are batch-major.)
_KEPT_ONLY_BY = {"keras": {"return_sequences": True, "stateful": False, "dropout": 0.0, "recurrent_dropout": 0.0,
                           "mask_zero": False},
                 "torch": {"batch_first": True, "dropout": 0.0}}


def conversions(layer: Layer) -> dict[str, dict[str, Any]]:
    """For each target format: whether ``layer`` converts exactly, why not, and what it drops."""
    from .adapters import keras as keras_adapter
    from .adapters import onnx as onnx_adapter
    from .adapters import torch as torch_adapter
    from .errors import UnsupportedError

    checks = {"keras": keras_adapter.check_representable, "torch": torch_adapter.check_representable,
              "onnx": onnx_adapter.check_representable, "archive": lambda _: None}
    out = {}
    for target, check in checks.items():
        try:
            check(layer)
        except UnsupportedError as exc:
            out[target] = {"exact": False, "reason": str(exc).split(": ", 1)[-1]}
            continue
        out[target] = {"exact": True, "drops": _drops(layer, target)}
    return out


def _drops(layer: Layer, target: str) -> list[str]:
    """Settings that are not weights which ``target`` does not keep."""
    if target == "archive":
        return []
    drops = []
    for source in ("keras", "torch"):
        if source == target:
            continue
        usual = _KEPT_ONLY_BY[source]
        recorded = layer.config.get(source, {})
        drops += [f"{k}={v!r}" for k, v in recorded.items() if k in usual and v != usual[k]]
    if target == "torch" and isinstance(layer, Dense) and layer.activation != "linear":
        drops.append(f"activation={layer.activation!r}")
    if target == "onnx" and layer.dtype in ("float16", "bfloat16"):
        drops.append(f"dtype {layer.dtype} (written as float32, exactly)")
    return drops
