"""What a file holds, layer by layer and gate by gate: the data behind ``lstm-convert inspect``.

Parameter counts follow the framework of the file (Keras counts one LSTM bias,
PyTorch two), so they agree with ``model.count_params()`` and
``sum(p.numel() for p in module.parameters())``. For a canonical archive
they follow the framework the weights came from.
"""

from __future__ import annotations

from typing import Any

from . import formats
from .canonical import AROUND, ROLES, Conv1D, Dense, Embedding, Layer, Masking, Model, RecurrentLayer, tensor_name
from .gates import layout, places

_TYPE = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN", "dense": "Dense", "embedding": "Embedding",
         "masking": "Masking", "conv1d": "Conv1D", "batch_norm": "BatchNorm", "layer_norm": "LayerNorm",
         "activation": "Activation", "flatten": "Flatten", "pooling": "Pooling"}


def describe(model: Model, fmt: str, path: str = "") -> dict[str, Any]:
    """A JSON-compatible description of ``model`` as stored in a file of format ``fmt``."""
    form = formats.get(fmt)
    framework = form.counted_as(model)
    layers = [_layer(layer, *_stored(layer, form, model)) for layer in model.layers]
    return {"file": path, "format": fmt, "source": dict(model.source), "counted_as": framework,
            "layers": layers, "total_params": sum(layer["params"] for layer in layers),
            "semantics": model.semantics(), "input": model.input_spec(),
            "skipped": list(model.config.get("keras", {}).get("skipped", [])),
            "unconverted": [dict(entry) for entry in model.config.get("unconverted", [])],
            "conversions": model_conversions(model)}


def model_conversions(model: Model, *, module: bool = False) -> dict[str, dict[str, Any]]:
    """Per writable format, the verdict for the whole model: ``exact`` when the target computes the
    model's function, ``weights`` when a state dict keeps every weight exactly but what the model computes
    around them needs the module that ``--module`` writes (``module=True`` asks about that), and
    ``impossible`` with the reasons."""
    out = {form.name: form.check(model, module=module).as_dict() for form in formats.writable()}
    unconverted = model.config.get("unconverted", [])
    if unconverted:  # the file holds more than these layers: converting it whole is refused
        reason = (f"the file holds what lstm_convert does not convert ({', '.join(e['name'] for e in unconverted)}); "
                  "select the layers to convert (only=, --only PATTERN)")
        for verdict in out.values():
            verdict.update(exact=False, verdict="impossible", reasons=[reason, *verdict["reasons"]])
    return out


def _stored(layer: Layer, form: formats.Format, model: Model) -> tuple[str | None, int]:
    """The layout of ``layer``'s tensors in a file of format ``form``, and its parameters as counted there:
    the format's, unless the reader recorded another one in the layer's provenance (``source["gates_layout"]``,
    a CuDNN layer in a legacy Keras file)."""
    stored = layer.source.get("gates_layout") if form.layouts is not None else None
    if stored is not None and isinstance(layer, RecurrentLayer):
        return stored, layer.count_params(stored)
    return form.layouts, form.params(layer, model)


def _layer(layer: Layer, layouts: str | None, params: int) -> dict[str, Any]:
    out: dict[str, Any] = {"name": layer.name, "type": _TYPE[layer.kind], "dtype": layer.dtype,
                           "params": params}
    for key in ("layout", "folded", "summed"):  # a legacy layout, and constants folded in, as its reader says
        if key in layer.source:
            out[key] = layer.source[key]
    if isinstance(layer, Dense):
        out["sizes"] = {"in_features": layer.in_features, "out_features": layer.out_features}
        out["activation"] = layer.activation
        out["bias"] = layer.bias is not None
    elif isinstance(layer, Embedding):
        out["sizes"] = {"num_embeddings": layer.num_embeddings, "embedding_dim": layer.embedding_dim}
    elif isinstance(layer, Masking):
        out["sizes"] = {"features": layer.size, "mask_value": layer.mask_value}
    elif isinstance(layer, AROUND):
        out["sizes"] = {"in": layer.input_size, "out": layer.output_size}
        for key in layer._SETTINGS:
            value = getattr(layer, key)
            if key not in ("size", "activation") and value is not None:
                out["sizes"][key] = list(value) if isinstance(value, tuple) else value
        if isinstance(layer, Conv1D):
            out["sizes"]["kernel_size"] = layer.kernel_size
        if "activation" in layer._SETTINGS:
            out["activation"] = layer.activation
        out["tensors"] = {name: list(array.shape) for name, array in layer.tensors()}
    else:
        out["sizes"] = {"input_size": layer.input_size, "hidden_size": layer.hidden_size,
                        "num_layers": layer.num_layers, "directions": layer.directions}
        if layer.proj_size:
            out["sizes"]["proj_size"] = layer.proj_size
        out["variant"] = [flag for flag, on in (("cell", layer.cell), ("go_backwards", layer.go_backwards),
                                                ("reset_after=False", layer.kind == "gru" and not layer.reset_after))
                          if on]
        out["cell_features"] = layer.cell_features()
        out["bias"] = layer.bias
        out["activation"] = layer.activation
        out["recurrent_activation"] = layer.recurrent_activation
        out["gates"] = _gates(layer, layouts)
    out["settings"] = dict(layer.config)
    out["semantics"] = layer.semantics()
    out["conversions"] = conversions(layer)
    return out


def _gates(layer: RecurrentLayer, layouts: str | None) -> list[dict[str, Any]]:
    """For every gate, where it sits in the file's own tensors (canonical names in the archive), and its
    canonical shapes."""
    rows = []
    lay = layout(layouts, layer.kind) if layouts is not None else None
    for index, direction, gate in layer.keys():
        g = layer.gates[(index, direction, gate)]
        shapes = {role: list(getattr(g, role).shape) for role in ROLES if getattr(g, role) is not None}
        if lay is not None:
            where = places(lay, layer, index, direction, gate)
            symbol = lay.symbols[lay.order.index(gate)]
        else:
            where = {role: tensor_name(layer.name, index, direction, gate, role) for role in shapes}
            symbol = gate
        rows.append({"layer": index, "direction": direction, "gate": gate, "symbol": symbol,
                     "tensors": where, "shapes": shapes})
    return rows


# -- representability -------------------------------------------------------------------------------


def targets() -> tuple[str, ...]:
    """The formats a model can be written to, in the registry's order."""
    return tuple(form.name for form in formats.writable())


def conversions(layer: Layer, *, module: bool = False) -> dict[str, dict[str, Any]]:
    """For each writable format, the verdict for ``layer``: ``exact``, ``weights`` (a state dict keeps the
    weights; ``needs`` lists what the layer computes beyond them, which the module of ``--module`` does;
    with ``module=True`` that module is asked about) or ``impossible`` (``reason``)."""
    return {form.name: form.check_layer(layer, module and form.module_source is not None).as_dict()
            for form in formats.writable()}
