"""The one place that knows each framework's gate order, orientation and bias layout.

Canonical gates are named, never numbered. A framework stacks the gates of a
layer into one tensor per role; a :class:`Layout` says in which order, along
which axis, and how many bias vectors it keeps. Nothing else in the package
hard-codes an order: adapters call :func:`split` and :func:`join`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import ShapeError, UnsupportedError

# Canonical gate names per cell kind, in the order the reference equations use them.
GATES: dict[str, tuple[str, ...]] = {
    "lstm": ("input", "forget", "cell", "output"),
    "gru": ("reset", "update", "candidate"),
    "rnn": ("hidden",),
}


@dataclass(frozen=True)
class Layout:
    """How one framework stores the stacked gate tensors of one kind of layer.

    ``order`` lists the canonical gates in the order of the framework's blocks,
    ``symbols`` the framework's own letters for them. A weight matrix is
    ``(input, G*H)`` when ``gate_axis`` is 1 (Keras: inputs times kernel) and
    ``(G*H, input)`` when it is 0 (PyTorch: kernel times inputs); biases are
    always ``(G*H,)``. ``biases`` is 1 for a single summed bias, 2 for separate
    input-side and recurrent-side biases.
    """

    framework: str
    kind: str
    order: tuple[str, ...]
    symbols: tuple[str, ...]
    gate_axis: int
    biases: int
    tensors: tuple[str, ...]


# Keras 3 LSTM: kernel (input, 4H), recurrent_kernel (H, 4H), bias (4H,); blocks i, f, c, o.
KERAS_LSTM = Layout(
    "keras", "lstm", ("input", "forget", "cell", "output"), ("i", "f", "c", "o"),
    gate_axis=1, biases=1, tensors=("kernel", "recurrent_kernel", "bias"),
)
# PyTorch nn.LSTM: weight_ih (4H, input), weight_hh (4H, H), bias_ih and bias_hh (4H,); blocks i, f, g, o.
TORCH_LSTM = Layout(
    "torch", "lstm", ("input", "forget", "cell", "output"), ("i", "f", "g", "o"),
    gate_axis=0, biases=2, tensors=("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
)

# Keras 3 GRU: kernel (input, 3H), recurrent_kernel (H, 3H); blocks z, r, h. The bias is (2, 3H),
# row 0 input-side and row 1 recurrent-side, with reset_after=True, and (3H,) without.
KERAS_GRU = Layout(
    "keras", "gru", ("update", "reset", "candidate"), ("z", "r", "h"),
    gate_axis=1, biases=1, tensors=("kernel", "recurrent_kernel", "bias"),
)
# PyTorch nn.GRU: weight_ih (3H, input), weight_hh (3H, H), bias_ih and bias_hh (3H,); blocks r, z, n.
TORCH_GRU = Layout(
    "torch", "gru", ("reset", "update", "candidate"), ("r", "z", "n"),
    gate_axis=0, biases=2, tensors=("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
)
# Keras SimpleRNN: kernel (input, H), recurrent_kernel (H, H), bias (H,).
KERAS_RNN = Layout("keras", "rnn", ("hidden",), ("h",), gate_axis=1, biases=1,
                   tensors=("kernel", "recurrent_kernel", "bias"))
# PyTorch nn.RNN: weight_ih (H, input), weight_hh (H, H), bias_ih and bias_hh (H,).
TORCH_RNN = Layout("torch", "rnn", ("hidden",), ("h",), gate_axis=0, biases=2,
                   tensors=("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

# ONNX LSTM: W [D, 4H, input], R [D, 4H, H], B [D, 8H] = [Wb; Rb]; blocks i, o, f, c.
ONNX_LSTM = Layout("onnx", "lstm", ("input", "output", "forget", "cell"), ("i", "o", "f", "c"),
                   gate_axis=0, biases=2, tensors=("W", "R", "B"))
# ONNX GRU: W [D, 3H, input], R [D, 3H, H], B [D, 6H]; blocks z, r, h (as Keras).
ONNX_GRU = Layout("onnx", "gru", ("update", "reset", "candidate"), ("z", "r", "h"),
                  gate_axis=0, biases=2, tensors=("W", "R", "B"))
# ONNX RNN: W [D, H, input], R [D, H, H], B [D, 2H].
ONNX_RNN = Layout("onnx", "rnn", ("hidden",), ("h",), gate_axis=0, biases=2, tensors=("W", "R", "B"))

LAYOUTS: dict[tuple[str, str], Layout] = {
    (lay.framework, lay.kind): lay for lay in (KERAS_LSTM, TORCH_LSTM, ONNX_LSTM, KERAS_GRU, TORCH_GRU, ONNX_GRU,
                                               KERAS_RNN, TORCH_RNN, ONNX_RNN)
}


def layout(framework: str, kind: str) -> Layout:
    """The layout of ``kind`` layers in ``framework``, or UnsupportedError."""
    try:
        return LAYOUTS[(framework, kind)]
    except KeyError:
        raise UnsupportedError(f"{framework} has no {kind} layout known to lstm_convert") from None


def split(lay: Layout, stacked: np.ndarray, hidden: int, name: str) -> dict[str, np.ndarray]:
    """Cut a framework's stacked tensor into canonical per-gate blocks.

    Matrices come back as ``(H, fan_in)`` and biases as ``(H,)``, whatever the
    framework's orientation. The blocks are views of ``stacked``.
    """
    axis = lay.gate_axis if stacked.ndim == 2 else 0
    expected = len(lay.order) * hidden
    if stacked.ndim not in (1, 2) or stacked.shape[axis] != expected:
        want = f"{expected} along axis {axis}" if stacked.ndim in (1, 2) else "a 1-D or 2-D tensor"
        raise ShapeError(f"{name}: expected {want} ({len(lay.order)} gates x {hidden} units), "
                         f"got shape {tuple(stacked.shape)}")
    blocks = {}
    for k, gate in enumerate(lay.order):
        span = slice(k * hidden, (k + 1) * hidden)
        blocks[gate] = stacked[span] if axis == 0 else stacked[:, span].T
    return blocks


def join(lay: Layout, blocks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Stack canonical per-gate blocks into the framework's tensor (a new array)."""
    ordered = [blocks[gate] for gate in lay.order]
    if ordered[0].ndim == 1 or lay.gate_axis == 0:
        return np.concatenate(ordered, axis=0)
    return np.concatenate([b.T for b in ordered], axis=1)


def join_chunks(lay: Layout, blocks: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The framework's tensor as pieces to write one after the other, without joining them in memory.

    Blocks stacked along the first axis (PyTorch, ONNX, every bias) are written as they are; a Keras
    kernel, whose gates are columns, is joined first.
    """
    ordered = [blocks[gate] for gate in lay.order]
    if ordered[0].ndim == 1 or lay.gate_axis == 0:
        return ordered
    return [join(lay, blocks)]


def slice_text(lay: Layout, gate: str) -> str:
    """Where ``gate`` sits in the framework's stacked tensors, e.g. ``[:, 2H:3H]``."""
    k = lay.order.index(gate)
    span = f"{_mul(k)}:{_mul(k + 1)}"
    return f"[:, {span}]" if lay.gate_axis == 1 else f"[{span}]"


def _mul(k: int) -> str:
    return "0" if k == 0 else ("H" if k == 1 else f"{k}H")


def gate_table(kind: str = "lstm") -> str:
    """The README's gate-order table, written from the layouts above."""
    lays = [lay for lay in LAYOUTS.values() if lay.kind == kind]
    head = "| canonical gate | " + " | ".join(
        f"{_TITLES[lay.framework]} `{lay.tensors[0]}`" for lay in lays) + " |"
    rule = "|---" * (len(lays) + 1) + "|"
    rows = [
        f"| {gate} | " + " | ".join(
            f"{lay.symbols[lay.order.index(gate)]} `{slice_text(lay, gate)}`" for lay in lays) + " |"
        for gate in GATES[kind]
    ]
    return "\n".join([head, rule, *rows])


_TITLES = {"keras": "Keras 3", "torch": "PyTorch", "onnx": "ONNX"}
