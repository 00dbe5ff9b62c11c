"""lstm_convert: portable, archivable, gate-labelled weights for recurrent layers.

The public API re-exported here imports no framework; each adapter imports
its framework (torch, keras) the first time it is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .canonical import Gate, RecurrentLayer
from .errors import (FormatError, LSTMConvertError, MissingDependencyError, ShapeError,
                     UnsupportedError)

__version__ = "0.1.0"

__all__ = [
    "from_keras", "from_torch", "to_keras", "to_torch", "save", "load",
    "RecurrentLayer", "Gate",
    "LSTMConvertError", "ShapeError", "FormatError", "UnsupportedError", "MissingDependencyError",
]


def from_keras(obj: Any) -> RecurrentLayer:
    """Read a built ``keras.layers.LSTM`` into the canonical form."""
    from .adapters import keras

    return keras.read(obj)


def from_torch(obj: Any, *, name: str = "lstm") -> RecurrentLayer:
    """Read a ``torch.nn.LSTM`` or its state dict into the canonical form."""
    from .adapters import torch

    return torch.read(obj, name=name)


def to_keras(weights: RecurrentLayer, layer: Any = None, **settings: Any) -> Any:
    """Return a built ``keras.layers.LSTM`` holding ``weights`` (or fill ``layer``)."""
    from .adapters import keras

    return keras.write(weights, layer, **settings)


def to_torch(weights: RecurrentLayer, module: Any = None, *, state_dict: bool = False,
             batch_first: bool | None = None) -> Any:
    """Return an ``nn.LSTM`` holding ``weights``, fill ``module``, or return a state dict."""
    from .adapters import torch

    return torch.write(weights, module, state_dict=state_dict, batch_first=batch_first)


def save(weights: RecurrentLayer, path: str | os.PathLike) -> Path:
    """Write ``weights`` to a canonical safetensors archive; the file appears complete or not at all."""
    from .adapters import safetensors

    return safetensors.write(weights, path)


def load(path: str | os.PathLike) -> RecurrentLayer:
    """Read a canonical safetensors archive written by :func:`save`."""
    from .adapters import safetensors

    return safetensors.read(path)
