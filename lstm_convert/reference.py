"""Float64 NumPy forward passes of the canonical form: the oracle for tests and ``verify``.

Shapes follow PyTorch's stacked convention so that every layer kind and
direction fits one signature: input ``x`` is ``(batch, time, features)``;
initial and final states are ``(num_layers * directions, batch, H)``, ordered
layer by layer with the forward direction first.
"""

from __future__ import annotations

import numpy as np

from .activations import ACTIVATIONS
from collections.abc import Mapping

from .canonical import Dense, Embedding, Model, RecurrentLayer
from .errors import ShapeError

State = tuple[np.ndarray, np.ndarray]
LayerRun = tuple[np.ndarray, "State | None"]


def forward(layer: RecurrentLayer, x: np.ndarray, initial_state: State | None = None
            ) -> tuple[np.ndarray, State]:
    """Run ``layer`` on ``x``; return the output sequence and the final ``(h, c)``.

    The output is ``(batch, time, H * directions)``, directions concatenated
    on the last axis as PyTorch and Keras' ``Bidirectional(merge_mode="concat")`` do.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != layer.input_size:
        raise ShapeError(f"{layer.name}: expected input (batch, time, {layer.input_size}), got {x.shape}")
    batch = x.shape[0]
    states = layer.num_layers * layer.directions
    expected = (states, batch, layer.hidden_size)
    if initial_state is None:
        h0 = c0 = np.zeros(expected)
    else:
        h0, c0 = (np.asarray(s, dtype=np.float64) for s in initial_state)
        for label, s in (("h0", h0), ("c0", c0)):
            if s.shape != expected:
                raise ShapeError(f"{layer.name}: expected initial {label} of shape {expected}, got {s.shape}")
    act = ACTIVATIONS[layer.activation]
    rec = ACTIVATIONS[layer.recurrent_activation]
    h_n, c_n = np.empty(expected), np.empty(expected)
    for index in range(layer.num_layers):
        outputs = []
        for d, direction in enumerate(layer.direction_names):
            slot = index * layer.directions + d
            seq = x if direction == "forward" else x[:, ::-1]
            y, h_n[slot], c_n[slot] = _lstm_direction(layer, index, direction, seq,
                                                      h0[slot], c0[slot], act, rec)
            outputs.append(y if direction == "forward" else y[:, ::-1])
        x = np.concatenate(outputs, axis=2)
    return x, (h_n, c_n)


def _lstm_direction(layer, index, direction, x, h, c, act, rec):
    names = layer.gate_names
    gates = [layer.gates[(index, direction, g)] for g in names]
    w_x = np.concatenate([g.W_x for g in gates]).astype(np.float64)
    w_h = np.concatenate([g.W_h for g in gates]).astype(np.float64)
    bias = np.zeros(w_x.shape[0])
    if layer.bias:
        bias = np.concatenate([g.b_x.astype(np.float64) + g.b_h.astype(np.float64) for g in gates])
    pre_x = x @ w_x.T + bias  # (batch, time, 4H): the input side of every step at once
    hidden = layer.hidden_size
    block = {g: slice(k * hidden, (k + 1) * hidden) for k, g in enumerate(names)}
    out = np.empty(x.shape[:2] + (hidden,))
    for t in range(x.shape[1]):
        z = pre_x[:, t] + h @ w_h.T
        i, f, o = (rec(z[:, block[g]]) for g in ("input", "forget", "output"))
        c = f * c + i * act(z[:, block["cell"]])
        h = o * act(c)
        out[:, t] = h
    return out, h, c


def run(model: Model, x: np.ndarray, initial_states: Mapping[str, State] | None = None) -> list[LayerRun]:
    """Run a model's layers one after the other in float64; one ``(output, (h, c) or None)`` per layer.

    Recurrent layers return full sequences and Dense acts on every time step,
    so each layer's whole output can be compared. ``initial_states`` maps
    recurrent layer names to their ``(h0, c0)``.
    """
    outputs: list[LayerRun] = []
    for layer in model.layers:
        if isinstance(layer, Embedding):
            index = np.asarray(x)
            if index.dtype.kind not in "iu" or index.min() < 0 or index.max() >= layer.num_embeddings:
                raise ShapeError(f"{layer.name}: expected integer indices in [0, {layer.num_embeddings})")
            x = layer.weight.astype(np.float64)[index]
            outputs.append((x, None))
        elif isinstance(layer, Dense):
            x = np.asarray(x, dtype=np.float64) @ layer.weight.astype(np.float64).T
            if layer.bias is not None:
                x = x + layer.bias.astype(np.float64)
            x = ACTIVATIONS[layer.activation](x)
            outputs.append((x, None))
        else:
            x, state = forward(layer, x, (initial_states or {}).get(layer.name))
            outputs.append((x, state))
    return outputs
