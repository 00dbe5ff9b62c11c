"""What a file holds, layer by layer and gate by gate: the data behind ``lstm-convert inspect``.

Parameter counts follow the framework of the file (Keras counts one LSTM bias,
PyTorch two), so they agree with ``model.count_params()`` and
``sum(p.numel() for p in module.parameters())``. For a canonical archive
they follow the framework the weights came from.
"""

from __future__ import annotations

from typing import Any

from .canonical import ROLES, Dense, Embedding, Layer, Masking, Model, RecurrentLayer, tensor_name
from .gates import layout

_TYPE = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN", "dense": "Dense", "embedding": "Embedding",
         "masking": "Masking"}


def describe(model: Model, fmt: str, path: str = "") -> dict[str, Any]:
    """A JSON-compatible description of ``model`` as stored in a file of format ``fmt``."""
    framework = {"keras": "keras", "h5": "keras", "torch": "torch", "onnx": "onnx"}.get(fmt) or \
        (model.source.get("framework") if model.source.get("framework") in ("keras", "torch") else "torch")
    layers = [_layer(layer, fmt, framework) for layer in model.layers]
    return {"file": path, "format": fmt, "source": dict(model.source), "counted_as": framework,
            "layers": layers, "total_params": sum(layer["params"] for layer in layers),
            "semantics": model.semantics(), "input": model.input_spec(),
            "skipped": list(model.config.get("keras", {}).get("skipped", [])),
            "conversions": model_conversions(model)}


def model_conversions(model: Model, *, module: bool = False) -> dict[str, dict[str, Any]]:
    """Per target, the verdict for the whole model: ``exact`` when the target computes the model's
    function, ``weights`` when a state dict keeps every weight exactly but what the model computes
    around them needs the module that ``--module`` writes (``module=True`` asks about that), and
    ``impossible`` with the reasons."""
    out = {}
    for target in TARGETS:
        verdicts = {layer.name: conversions(layer, module=module)[target] for layer in model.layers}
        reasons = [f"{name}: {v['reason']}" for name, v in verdicts.items() if v["verdict"] == "impossible"]
        if not reasons:
            reasons = [str(exc) for exc in _model_refusals(model, target, module)]
        needs = [f"{name}: {n}" for name, v in verdicts.items() for n in v.get("needs", [])]
        verdict = "impossible" if reasons else ("weights" if needs else "exact")
        out[target] = {"exact": verdict == "exact", "verdict": verdict, "reasons": reasons, "needs": needs}
    return out


def _model_refusals(model: Model, target: str, module: bool) -> list[Exception]:
    """What stops ``target`` from computing the whole model, beyond each layer on its own."""
    from .adapters import keras as keras_adapter
    from .adapters import onnx as onnx_adapter
    from .adapters import torch_module
    from .errors import UnsupportedError

    checks = {"keras": [keras_adapter.check_chain, keras_adapter.check_model],
              "onnx": [onnx_adapter.check_model], "torch": [torch_module.check] if module else [],
              "archive": []}[target]
    found = []
    for check in checks:
        try:
            check(model)
        except UnsupportedError as exc:
            found.append(exc)
            break
    return found


def _layer(layer: Layer, fmt: str, framework: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": layer.name, "type": _TYPE[layer.kind], "dtype": layer.dtype,
                           "params": layer.count_params(framework)}
    if isinstance(layer, Dense):
        out["sizes"] = {"in_features": layer.in_features, "out_features": layer.out_features}
        out["activation"] = layer.activation
        out["bias"] = layer.bias is not None
    elif isinstance(layer, Embedding):
        out["sizes"] = {"num_embeddings": layer.num_embeddings, "embedding_dim": layer.embedding_dim}
    elif isinstance(layer, Masking):
        out["sizes"] = {"features": layer.size, "mask_value": layer.mask_value}
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
    out["semantics"] = layer.semantics()
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


def conversions(layer: Layer, *, module: bool = False) -> dict[str, dict[str, Any]]:
    """For each target format, the verdict for ``layer``: ``exact``, ``weights`` (a state
    dict keeps the weights; ``needs`` lists what the layer computes beyond them, which the module of
    ``--module`` does; with ``module=True`` that module is asked about) or ``impossible`` (``reason``)."""
    from .adapters import keras as keras_adapter
    from .adapters import onnx as onnx_adapter
    from .adapters import torch as torch_adapter
    from .adapters import torch_module
    from .errors import UnsupportedError

    def torch_check(item: Layer) -> None:
        torch_adapter.check_representable(item)
        if module or item.semantics():
            torch_module.check(Model((item,)))

    checks = {"keras": keras_adapter.check_representable, "torch": torch_check,
              "onnx": onnx_adapter.check_representable, "archive": lambda _: None}
    out = {}
    for target, check in checks.items():
        try:
            check(layer)
        except UnsupportedError as exc:
            reason = str(exc).split(": ", 1)[-1]
            if target == "torch" and layer.semantics():
                try:
                    torch_adapter.check_representable(layer)
                    reason = f"the state dict keeps the weights, but the module cannot: {reason}"
                except UnsupportedError:
                    pass
            out[target] = {"exact": False, "verdict": "impossible", "reason": reason, "needs": []}
            continue
        needs = layer.semantics() if target == "torch" and not module else []
        out[target] = {"exact": not needs, "verdict": "weights" if needs else "exact", "needs": needs,
                       "notes": _notes(layer, target)}
    return out


def _notes(layer: Layer, target: str) -> list[str]:
    """What a conversion changes that does not change what the model computes."""
    if target == "onnx" and layer.dtype in ("float16", "bfloat16"):
        return [f"dtype {layer.dtype} is written as float32, exactly"]
    return []
