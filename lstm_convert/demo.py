"""The built-in example: the seed model ``Input((18, 7))``, ``LSTM(2)``, ``Dense(5)``.

Builds it in Keras with seeded random weights (every gate different, non-zero
biases), converts the LSTM to PyTorch and to a canonical archive, and measures
how closely PyTorch, the archive and the float64 reference reproduce Keras on
random input and random initial states. Returns figures; ``cli`` prints them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import _progress, from_keras, from_torch, load, save, to_keras, to_torch
from ._optional import require
from .reference import forward

TIME_STEPS, FEATURES, UNITS, CLASSES = 18, 7, 2, 5


def run(out_dir: str | os.PathLike, seed: int = 0, batch: int = 4) -> dict[str, Any]:
    _progress.phase("loading Keras and PyTorch", 1, 3)
    keras = require("keras")
    torch = require("torch")
    _progress.phase("building and converting the seed model", 2, 3)
    rng = np.random.default_rng(seed)

    inputs = keras.Input((TIME_STEPS, FEATURES))
    lstm = keras.layers.LSTM(UNITS, name="lstm")
    dense = keras.layers.Dense(CLASSES, name="dense")
    model = keras.Model(inputs, dense(lstm(inputs)), name="seed")  # named: the same file in any process
    for layer in (lstm, dense):
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])

    model.save(Path(out_dir) / "seed.keras")
    weights = from_keras(lstm)
    module = to_torch(weights)  # batch_first=True, like Keras
    archive = save(weights, Path(out_dir) / "seed_lstm.safetensors")
    restored = load(archive)

    _progress.phase("running it in Keras, PyTorch and the reference", 3, 3)
    x = rng.normal(size=(batch, TIME_STEPS, FEATURES)).astype("float32")
    h0, c0 = (rng.normal(size=(batch, UNITS)).astype("float32") for _ in range(2))
    runner = to_keras(weights, return_sequences=True, return_state=True)
    k_seq, k_h, k_c = (np.asarray(a) for a in runner(x, initial_state=[h0, c0]))
    with torch.no_grad():
        t_seq, (t_h, t_c) = module(torch.from_numpy(x), (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]))
        kernel, bias = dense.get_weights()
        linear = torch.nn.Linear(UNITS, CLASSES)  # Dense kernel (in, out) is Linear weight (out, in)
        linear.load_state_dict({"weight": torch.from_numpy(kernel.T.copy()), "bias": torch.from_numpy(bias)})
        t_model = linear(module(torch.from_numpy(x))[0][:, -1]).numpy()
    r_seq, (r_h, r_c) = forward(restored, x, (h0[None], c0[None]), sequences=True)

    def diffs(seq: np.ndarray, h: np.ndarray, c: np.ndarray) -> dict[str, float]:
        return {"output": float(np.abs(seq - k_seq).max()), "h": float(np.abs(h - k_h).max()),
                "c": float(np.abs(c - k_c).max())}

    return {
        "keras_tensors": {v.path.split("/")[-1]: tuple(v.shape) for v in lstm.weights},
        "keras_params": {"lstm": lstm.count_params(), "dense": dense.count_params(),
                         "total": model.count_params()},
        "canonical_params": {"keras": weights.count_params("keras"),
                             "torch": weights.count_params("torch")},
        "weights": weights,
        "torch_module": repr(module),
        "torch_tensors": {k: tuple(v.shape) for k, v in module.state_dict().items()},
        "archive": str(archive),
        "keras_file": str(Path(out_dir) / "seed.keras"),
        "archive_tensors": [(name, a.shape) for name, a in restored.tensors()],
        "archive_identical": restored == weights,
        "torch_roundtrip_identical": from_torch(to_torch(from_torch(module))) == from_torch(module),
        "batch": batch,
        "agreement": {
            "PyTorch nn.LSTM vs Keras": diffs(t_seq.numpy(), t_h.numpy()[0], t_c.numpy()[0]),
            "reference (float64, from the archive) vs Keras": diffs(r_seq, r_h[0], r_c[0]),
        },
        "model_agreement": float(np.abs(t_model - np.asarray(model(x))).max()),
    }
