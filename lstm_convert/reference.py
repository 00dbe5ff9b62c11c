"""Float64 NumPy forward passes of the canonical form: the oracle for tests and ``verify``.

Shapes follow PyTorch's stacked convention so that every layer kind and
direction fits one signature: input ``x`` is ``(batch, time, features)``;
initial and final states are ``(num_layers * directions, batch, size)``,
ordered layer by layer with the forward direction first.
"""

from __future__ import annotations

import numpy as np

from .activations import ACTIVATIONS
from collections.abc import Mapping

from .canonical import (
    PEEPHOLE_GATES,
    Activation,
    BatchNorm,
    Conv1D,
    Dense,
    Embedding,
    Flatten,
    LayerNorm,
    Masking,
    Model,
    Pooling,
    RecurrentLayer,
)
from .errors import ShapeError

State = tuple[np.ndarray, ...]
LayerRun = tuple[np.ndarray, "State | None"]


def forward(layer: RecurrentLayer, x: np.ndarray, initial_state: State | None = None, *,
            mask: np.ndarray | None = None, sequences: bool | None = None) -> tuple[np.ndarray, State]:
    """Run ``layer`` on ``x``; return its output and the final states.

    States are ``(h, c)`` for an LSTM and ``(h,)`` for a GRU or simple RNN; ``h``
    is ``(num_layers * directions, batch, proj_size or H)``, ``c`` has ``H``.
    The output is what the layer returns: the sequence ``(batch, time, size * directions)``,
    or with ``return_sequences=False`` its last step ``(batch, size * directions)`` (``sequences``
    overrides the layer's setting). Directions are concatenated on the last axis as PyTorch and
    Keras' ``Bidirectional(merge_mode="concat")`` do (summed, multiplied or averaged for the other
    merge modes). A layer with ``go_backwards`` reads the sequence from its end and returns outputs
    in the order it produced them, as Keras does.

    ``mask`` ``(batch, time)`` marks the steps to compute, as Keras does: at a masked step the states
    carry over unchanged and the output is the previous step's (zeros before the first step), or zeros
    with ``zero_output_for_mask``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != layer.input_size:
        raise ShapeError(f"{layer.name}: expected input (batch, time, {layer.input_size}), got {x.shape}")
    batch = x.shape[0]
    slots = layer.num_layers * layer.directions
    sizes = {"h": layer.state_size, "c": layer.hidden_size}
    expected = [(slots, batch, sizes[n]) for n in layer.state_names]
    if initial_state is None:
        initial_state = tuple(np.zeros(shape) for shape in expected)
    initial_state = tuple(np.asarray(s, dtype=np.float64) for s in initial_state)
    if [s.shape for s in initial_state] != expected:
        raise ShapeError(f"{layer.name}: expected initial states {layer.state_names} of shapes {expected}, "
                         f"got {[s.shape for s in initial_state]}")
    if mask is None:
        mask = np.ones(x.shape[:2], dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != x.shape[:2]:
        raise ShapeError(f"{layer.name}: expected a mask of shape {x.shape[:2]}, got {mask.shape}")
    final = tuple(np.empty(shape) for shape in expected)
    if layer.go_backwards:
        x, mask = x[:, ::-1], mask[:, ::-1]
    step = _STEPS[layer.kind]
    sequences = layer.return_sequences if sequences is None else sequences
    for index in range(layer.num_layers):
        top = index == layer.num_layers - 1
        # Keras' Bidirectional gives zeros at masked steps exactly when it returns sequences.
        zeros = (sequences if layer.directions == 2 else layer.zero_output_for_mask) if top else layer.directions == 2
        outputs = []
        for d, direction in enumerate(layer.direction_names):
            slot = index * layer.directions + d
            forward_in_time = direction == "forward"
            seq, seq_mask = (x, mask) if forward_in_time else (x[:, ::-1], mask[:, ::-1])
            y, last = _run_direction(layer, index, direction, seq, seq_mask, tuple(s[slot] for s in initial_state),
                                     step, zeros)
            for target, value in zip(final, last):
                target[slot] = value
            if top and not sequences:  # the output of the last step computed
                outputs.append(y[:, -1])
            else:
                outputs.append(y if forward_in_time else y[:, ::-1])
        x = _MERGE[layer.merge_mode](outputs)
    return x, final


def _run_direction(layer, index, direction, x, mask, state, step, zeros):
    """One stacked layer in one direction over the whole sequence; masked steps keep the states."""
    names = layer.gate_names
    gates = [layer.gates[(index, direction, g)] for g in names]
    w_x = np.concatenate([g.W_x for g in gates]).astype(np.float64)
    w_h = np.concatenate([g.W_h for g in gates]).astype(np.float64)
    b_x = b_h = np.zeros(w_x.shape[0])
    if layer.bias:
        b_x = np.concatenate([g.b_x for g in gates]).astype(np.float64)
        b_h = np.concatenate([g.b_h for g in gates]).astype(np.float64)
    hidden = layer.hidden_size
    block = {g: slice(k * hidden, (k + 1) * hidden) for k, g in enumerate(names)}
    if getattr(layer, "forget_bias", 0.0):  # a constant the layer adds to its forget gate (Haiku's hk.LSTM)
        b_x = b_x.copy()
        b_x[block["forget"]] += layer.forget_bias
    ln = None
    if getattr(layer, "layer_norm", None):  # the biases come after the normalisation: kept apart
        ln = {g: (layer.layer_norm[(index, direction, g)].astype(np.float64), (b_x + b_h)[block[g]]) for g in names}
        b_x, b_h = np.zeros_like(b_x), np.zeros_like(b_h)
    params = {"pre_x": x @ w_x.T + b_x,  # (batch, time, G*H): the input side of every step at once
              "w_h": w_h, "b_h": b_h, "block": block, "ln": ln,
              "act": ACTIVATIONS[layer.activation], "rec": ACTIVATIONS[layer.recurrent_activation],
              "reset_after": layer.reset_after, "clip": layer.clip, "input_forget": layer.input_forget,
              "cell_clip": getattr(layer, "cell_clip", None),
              "peep": {g: layer.peepholes[(index, direction, g)].astype(np.float64)
                       for g in PEEPHOLE_GATES} if layer.peepholes else None,
              "w_hr": layer.projections[(index, direction)].astype(np.float64) if layer.proj_size else None}
    out = np.empty(x.shape[:2] + (layer.state_size,))
    previous = np.zeros((x.shape[0], layer.state_size))
    for t in range(x.shape[1]):
        stepped = step(params, params["pre_x"][:, t], state)
        keep = mask[:, t, None]
        state = tuple(np.where(keep, new, old) for new, old in zip(stepped, state))
        previous = np.where(keep, stepped[0], 0.0 if zeros else previous)
        out[:, t] = previous
    return out, state


_LN_EPSILON = 1e-8  # TFLite's MeanStddevNormalization: (x - mean) / sqrt(variance + 1e-8)


def _lstm_step(p, pre_x, state):
    h, c = state
    z = pre_x + h @ p["w_h"].T + p["b_h"]
    block, peep, clip = p["block"], p["peep"], p["clip"]

    def gate(name, cell_state=None):
        pre = z[:, block[name]] + (peep[name] * cell_state if peep is not None and cell_state is not None else 0.0)
        if p["ln"] is not None:  # TFLite's layer-norm LSTM: normalised over the units, scaled, then the bias
            coefficients, bias = p["ln"][name]
            pre = (pre - pre.mean(-1, keepdims=True)) / np.sqrt(pre.var(-1, keepdims=True) + _LN_EPSILON)
            pre = pre * coefficients + bias
        return np.clip(pre, -clip, clip) if clip is not None else pre

    i = p["rec"](gate("input", c))  # peepholes (ONNX) look at the previous cell state for i and f
    f = 1.0 - i if p["input_forget"] else p["rec"](gate("forget", c))
    c = f * c + i * p["act"](gate("cell"))
    if p["cell_clip"] is not None:  # TFLite: the new cell state clipped before anything reads it
        c = np.clip(c, -p["cell_clip"], p["cell_clip"])
    o = p["rec"](gate("output", c))  # and at the new one for o
    h = o * p["act"](c)
    if p["w_hr"] is not None:
        h = h @ p["w_hr"].T
    return h, c


def _gru_step(p, pre_x, state):
    (h,) = state
    block = p["block"]
    w_h, b_h = p["w_h"], p["b_h"]
    rec_h = h @ w_h.T + b_h  # recurrent side of every gate, bias included
    r = p["rec"](pre_x[:, block["reset"]] + rec_h[:, block["reset"]])
    z = p["rec"](pre_x[:, block["update"]] + rec_h[:, block["update"]])
    cand = block["candidate"]
    if p["reset_after"]:  # PyTorch, Keras reset_after=True: reset applied after the matrix product
        n = p["act"](pre_x[:, cand] + r * rec_h[:, cand])
    else:  # Keras reset_after=False: reset applied to h before it
        n = p["act"](pre_x[:, cand] + (r * h) @ w_h[cand].T + b_h[cand])
    return (z * h + (1.0 - z) * n,)


def _rnn_step(p, pre_x, state):
    (h,) = state
    return (p["act"](pre_x + h @ p["w_h"].T + p["b_h"]),)


_STEPS = {"lstm": _lstm_step, "gru": _gru_step, "rnn": _rnn_step}
_MERGE = {"concat": lambda ys: np.concatenate(ys, axis=-1), "sum": lambda ys: sum(ys[1:], ys[0]),
          "mul": lambda ys: np.prod(ys, axis=0), "ave": lambda ys: sum(ys[1:], ys[0]) / len(ys)}


def run(model: Model, x: np.ndarray, initial_states: Mapping[str, State] | None = None, *,
        sequences: bool = False) -> list[LayerRun]:
    """Run a model's layers one after the other in float64, as the model defines them; one
    ``(output, (h, c) or None)`` per layer. The last one's output is the model's output.

    A :class:`Masking` layer or an Embedding with ``mask_zero`` makes a mask that the layers after it
    follow as Keras does: recurrent layers skip masked steps, a layer that returns one step ends the
    mask, Dense layers pass it on. With ``sequences`` every recurrent layer returns its whole sequence
    and no mask is made: each layer's whole output can be compared. ``initial_states`` maps recurrent
    layer names to their ``(h0, c0)``.
    """
    outputs: list[LayerRun] = []
    mask = None
    for layer in model.layers:
        if isinstance(layer, Embedding):
            index = np.asarray(x)
            if index.dtype.kind not in "iu" or index.min() < 0 or index.max() >= layer.num_embeddings:
                raise ShapeError(f"{layer.name}: expected integer indices in [0, {layer.num_embeddings})")
            if layer.mask_zero and not sequences:
                mask = index != 0
            x = layer.weight.astype(np.float64)[index]
            outputs.append((x, None))
        elif isinstance(layer, Masking):
            x = np.asarray(x, dtype=np.float64)
            if not sequences:
                mask = np.any(x != layer.mask_value, axis=-1)
                x = x * mask[..., None]
            outputs.append((x, None))
        elif isinstance(layer, Dense):
            x = np.asarray(x, dtype=np.float64) @ layer.weight.astype(np.float64).T
            if layer.bias is not None:
                x = x + layer.bias.astype(np.float64)
            x = ACTIVATIONS[layer.activation](x)
            outputs.append((x, None))
        elif isinstance(layer, RecurrentLayer):
            x, state = forward(layer, x, (initial_states or {}).get(layer.name), mask=mask,
                               sequences=True if sequences else None)
            if x.ndim == 2:
                mask = None
            outputs.append((x, state))
        else:
            x, mask = around(layer, np.asarray(x, dtype=np.float64), mask)
            outputs.append((x, None))
    return outputs


def around(layer: Conv1D | BatchNorm | LayerNorm | Activation | Flatten | Pooling, x: np.ndarray,
           mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """One of the layers around recurrent ones on ``x`` (float64), and the mask it passes on (as Keras
    does: normalisations and activations pass it, the others end it)."""
    if isinstance(layer, Activation):
        return ACTIVATIONS[layer.activation](x), mask
    if isinstance(layer, (BatchNorm, LayerNorm)):
        if isinstance(layer, BatchNorm):
            mean, variance = layer.mean.astype(np.float64), layer.variance.astype(np.float64)
        else:
            mean, variance = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
        y = (x - mean) / np.sqrt(variance + layer.epsilon)
        if layer.scale is not None:
            y = y * layer.scale.astype(np.float64)
        if layer.offset is not None:
            y = y + layer.offset.astype(np.float64)
        return y, mask
    if x.ndim != 3 or x.shape[2] != layer.input_size:
        raise ShapeError(f"{layer.name}: expected a sequence (batch, time, {layer.input_size}), got {x.shape}")
    if isinstance(layer, Flatten):
        if x.shape[1] != layer.steps:
            raise ShapeError(f"{layer.name}: built for {layer.steps} steps, got {x.shape[1]}")
        return x.reshape(x.shape[0], -1), None
    if isinstance(layer, Pooling):
        if layer.mode == "max":
            return x.max(axis=1), None
        if mask is None:
            return x.mean(axis=1), None
        weights = mask[..., None].astype(np.float64)
        return (np.where(mask[..., None], x, 0.0)).sum(axis=1) / weights.sum(axis=1), None
    return _conv1d(layer, x), None


def _conv1d(layer: Conv1D, x: np.ndarray) -> np.ndarray:
    left, right = layer.pads(x.shape[1])
    x = np.pad(x, ((0, 0), (left, right), (0, 0)))
    steps = layer.output_length(x.shape[1] - left - right)
    k, dilation, stride = layer.kernel_size, layer.dilation, layer.stride
    weight = layer.weight.astype(np.float64)  # (out, in / groups, k)
    per_in, per_out = layer.in_channels // layer.groups, layer.out_channels // layer.groups
    y = np.zeros((x.shape[0], steps, layer.out_channels))
    for group in range(layer.groups):
        xs = x[..., group * per_in:(group + 1) * per_in]
        ws = weight[group * per_out:(group + 1) * per_out]
        for tap in range(k):
            start = tap * dilation
            taken = xs[:, start:start + stride * (steps - 1) + 1:stride]  # (batch, steps, per_in)
            y[..., group * per_out:(group + 1) * per_out] += taken @ ws[:, :, tap].T
    if layer.bias is not None:
        y = y + layer.bias.astype(np.float64)
    return ACTIVATIONS[layer.activation](y)
