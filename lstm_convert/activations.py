"""Activation functions by canonical name, in float64 NumPy.

A name means one function. Keras' ``hard_sigmoid`` changed definition between
Keras 2 (``clip(0.2 x + 0.5, 0, 1)``) and Keras 3 (``relu6(x + 3) / 6``), so
the canonical form records which one a layer used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so that exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
    "hard_sigmoid_keras3": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hard_sigmoid_keras2": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),
}
