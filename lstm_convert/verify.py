"""Run two model files on the same random input and initial states, and compare every layer's output.

Each side runs in its own framework when it is installed: a ``.keras`` file
through ``keras.saving.load_model``, a PyTorch state dict through ``nn.LSTM``,
``nn.Linear`` and ``nn.Embedding`` modules that ``load_state_dict(strict=True)``
fills from ``torch.load`` or ``safetensors.torch.load_file``. A canonical
archive and a legacy ``.h5`` (which Keras 3 cannot open) run through the
float64 NumPy reference. Layers run one after the other; recurrent layers
return full sequences, so whole outputs and final states are compared.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import files, reference
from .canonical import Dense, Embedding, Model, RecurrentLayer
from .errors import FormatError

DEFAULT_ATOL = {"float64": 1e-9, "float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}


@dataclass
class Comparison:
    """Largest absolute differences per layer output; ``ok`` when all are within tolerance."""

    runners: tuple[str, str]
    atol: float
    rtol: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row["ok"] for row in self.rows)


def verify(a: str | Path, b: str | Path, *, atol: float | None = None, rtol: float = 0.0, batch: int = 3,
           steps: int = 5, seed: int = 0, formats: tuple[str | None, str | None] = (None, None),
           kinds: Mapping[str, str] | None = None) -> Comparison:
    """Compare the files ``a`` and ``b`` layer by layer; see the module docstring."""
    fmt_a, fmt_b = files.detect(a, formats[0]), files.detect(b, formats[1])
    model_a, model_b = files.read(a, fmt_a, kinds=kinds), files.read(b, fmt_b, kinds=kinds)
    _same_structure(model_a, model_b)
    rng = np.random.default_rng(seed)
    first = model_a.layers[0]
    if isinstance(first, Embedding):
        x = rng.integers(0, first.num_embeddings, size=(batch, steps)).astype(np.int64)
    else:
        x = rng.normal(size=(batch, steps, first.input_size)).astype(np.float32)
    states = {}
    for layer in model_a.layers:
        if isinstance(layer, RecurrentLayer):
            shape = (layer.num_layers * layer.directions, batch, layer.hidden_size)
            states[layer.name] = tuple(rng.normal(size=shape).astype(np.float32) for _ in range(2))
    run_a, name_a = _run(Path(a), fmt_a, model_a, x, states)
    states_b = {lb.name: states[la.name] for la, lb in zip(model_a.layers, model_b.layers) if la.name in states}
    run_b, name_b = _run(Path(b), fmt_b, model_b, x, states_b)
    if atol is None:
        atol = max(DEFAULT_ATOL.get(layer.dtype, 1e-5) for layer in (*model_a.layers, *model_b.layers))
    result = Comparison((name_a, name_b), atol, rtol)
    for side, model, runner in (("A", model_a, name_a), ("B", model_b, name_b)):
        other = model_b if side == "A" else model_a
        for mine, theirs in zip(model.layers, other.layers):
            if runner == "torch" and isinstance(theirs, Dense) and theirs.activation != "linear":
                result.notes.append(f"{mine.name}: a PyTorch state dict holds no activation, and the other side "
                                    f"applies {theirs.activation!r} after its Dense layer")
    for layer, (out_a, st_a), (out_b, st_b) in zip(model_a.layers, run_a, run_b):
        parts = {"output": (out_a, out_b)}
        if st_a is not None and st_b is not None:
            parts |= {"h": (st_a[0], st_b[0]), "c": (st_a[1], st_b[1])}
        for part, (u, v) in parts.items():
            u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
            diff = float(np.abs(u - v).max())
            ok = bool(np.all(np.abs(u - v) <= atol + rtol * np.abs(v)))
            result.rows.append({"layer": layer.name, "part": part, "max_abs_diff": diff, "ok": ok})
    return result


def _same_structure(a: Model, b: Model) -> None:
    def shape(m: Model) -> list[tuple]:
        return [(layer.kind, getattr(layer, "input_size", None), layer.output_size,
                 getattr(layer, "num_layers", 1)) for layer in m.layers]

    if shape(a) != shape(b):
        raise FormatError(f"the two files hold different layers: {_outline(a)} vs {_outline(b)}")


def _outline(m: Model) -> str:
    return "[" + ", ".join(f"{layer.name}: {layer.kind} -> {layer.output_size}" for layer in m.layers) + "]"


def _run(path: Path, fmt: str, model: Model, x: np.ndarray, states: dict) -> tuple[list, str]:
    if fmt == "keras" and importlib.util.find_spec("keras") is not None:
        return _run_keras(path, x, states), "keras"
    if fmt == "torch" and importlib.util.find_spec("torch") is not None:
        return _run_torch(path, model, x, states), "torch"
    return reference.run(model, x, states), "reference"


def _run_keras(path: Path, x: np.ndarray, states: dict) -> list:
    import keras

    from .adapters.keras import INFERENCE_IDENTITY

    loaded = keras.saving.load_model(path, compile=False)
    out = []
    for layer in loaded.layers:
        if type(layer).__name__ in ("InputLayer",) + INFERENCE_IDENTITY:
            continue
        if isinstance(layer, keras.layers.LSTM):
            config = layer.get_config() | {"return_sequences": True, "return_state": True,
                                           "name": f"{layer.name}_verify"}
            runner = keras.layers.LSTM.from_config(config)
            runner.build((None, None, x.shape[-1]))
            runner.set_weights(layer.get_weights())
            h0, c0 = states[layer.name]
            x, h, c = (keras.ops.convert_to_numpy(t) for t in runner(x, initial_state=[h0[0], c0[0]]))
            out.append((x, (h[None], c[None])))
        else:
            x = keras.ops.convert_to_numpy(layer(x))
            out.append((x, None))
    return out


def _run_torch(path: Path, model: Model, x: np.ndarray, states: dict) -> list:
    import torch

    from .adapters.torch import new_module

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    out = []
    tensor = torch.from_numpy(x)
    for layer in model.layers:
        prefix = layer.config.get("torch", {}).get("prefix", f"{layer.name}.")
        own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and "." not in k[len(prefix):]}
        module = new_module(torch, layer, batch_first=True)
        module.load_state_dict(own, strict=True)
        with torch.no_grad():
            if isinstance(layer, RecurrentLayer):
                h0, c0 = (torch.from_numpy(s).to(module.weight_ih_l0.dtype) for s in states[layer.name])
                tensor, (h, c) = module(tensor.to(module.weight_ih_l0.dtype), (h0, c0))
                out.append((tensor.float().numpy(), (h.float().numpy(), c.float().numpy())))
            else:
                tensor = module(tensor if isinstance(layer, Embedding) else tensor.to(module.weight.dtype))
                out.append((tensor.float().numpy(), None))
    return out
