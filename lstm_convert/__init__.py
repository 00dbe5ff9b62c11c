"""lstm_convert: portable, archivable, gate-labelled weights for recurrent layers.

The public API re-exported here imports no framework; each adapter imports
its framework (torch, keras) the first time it is used.
"""

from __future__ import annotations

import os as _os
from collections.abc import Mapping as _Mapping
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from .errors import (ConfigError, FormatError, LSTMConvertError, MissingDependencyError, SettingError, ShapeError,
                     UnsupportedError)

if _TYPE_CHECKING:
    from pathlib import Path

    from .canonical import (Activation, BatchNorm, Conv1D, Dense, Embedding, Flatten, Gate, Layer, LayerNorm, Masking,
                            Model, Pooling, RecurrentLayer)

__version__ = "0.1.0"

# The canonical classes are NumPy's: imported on first use, so that the command line's --help and its
# early signal handling need not wait for NumPy.
_CANONICAL = ("Activation", "BatchNorm", "Conv1D", "Dense", "Embedding", "Flatten", "Gate", "Layer", "LayerNorm",
              "Masking", "Model", "Pooling", "RecurrentLayer")


def __getattr__(name: str) -> _Any:
    import importlib

    if name in _CANONICAL:
        value = getattr(importlib.import_module(".canonical", __name__), name)
        globals()[name] = value
        return value
    # Submodules loaded on first use (``lc.verify.verify``, ``lc.files.convert``), keeping the import light.
    if name in ("files", "verify", "reference", "describe", "batch", "stats", "diff", "plot"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__", "files", "verify", "reference", "describe", "batch", "stats", "diff", "plot"})


__all__ = [
    "from_keras", "from_torch", "from_flax", "from_equinox", "from_haiku", "to_keras", "to_torch", "to_flax",
    "to_equinox", "to_haiku", "save", "load",
    "RecurrentLayer", "Gate", "Dense", "Embedding", "Model",
    "LSTMConvertError", "ConfigError", "ShapeError", "FormatError", "UnsupportedError", "MissingDependencyError", "SettingError",
    "Masking", "Conv1D", "BatchNorm", "LayerNorm", "Activation", "Flatten", "Pooling", "Layer",
]


def from_keras(obj: _Any) -> Layer | Model:
    """Read a built Keras ``LSTM``, ``Dense`` or ``Embedding`` layer, or a model made of them."""
    from .adapters import keras

    return keras.read(obj)


def from_torch(obj: _Any, *, name: str | None = None, kinds: _Mapping[str, str] | None = None) -> Layer | Model:
    """Read an ``nn.LSTM`` (or ``nn.Linear``, ``nn.Embedding``) or its state dict into a layer;
    a module made of them, or a state dict with prefixed keys, into a :class:`Model`.

    ``kinds`` says what a lone 2-D ``weight`` is (``"embedding"`` or ``"linear"``), by module prefix.
    """
    from .adapters import torch

    return torch.read(obj, name=name, kinds=kinds)


def to_keras(weights: Layer | Model, layer: _Any = None, **settings: _Any) -> _Any:
    """A new built Keras layer holding ``weights`` (or fill ``layer``); a model becomes ``keras.Sequential``."""
    from .adapters import keras

    return keras.write(_folded(weights), layer, **settings)


def to_torch(weights: Layer | Model, module: _Any = None, *, state_dict: bool = False,
             batch_first: bool | None = None) -> _Any:
    """A new ``nn.LSTM`` (``nn.Linear``, ``nn.Embedding``) holding a layer, ``module`` filled, or a
    state dict (always for a model without ``module``)."""
    from .adapters import torch

    return torch.write(_folded(weights), module, state_dict=state_dict, batch_first=batch_first)


def from_flax(tree: _Any, *, only: tuple[str, ...] = ()) -> Model:
    """Read a Flax linen parameter tree (``variables`` or ``variables["params"]``: dicts of JAX or NumPy
    arrays) into a :class:`Model`; ``only`` selects modules, in the order the model runs them."""
    from .adapters import flax

    return flax.read(flax.tree_of(tree, "the parameter tree"), "the parameter tree", only=tuple(only))


def to_flax(weights: Layer | Model, *, api: str = "linen") -> dict[str, _Any]:
    """The parameters of a Flax model holding ``weights``, as NumPy arrays: with ``api="linen"`` the
    variables of a linen model (``{"params": ...}``, for ``module.apply``), with ``api="nnx"`` the pure dict of
    an NNX model's ``nnx.Param`` state (for ``nnx.replace_by_pure_dict``). An RNN's cell is under ``cell``,
    several layers are named as ``nn.Sequential`` (``nnx.Sequential``) names them."""
    from .adapters import flax
    from .canonical import Model

    model = _folded(weights if isinstance(weights, Model) else Model((weights,)))
    tree = flax.write_tree(model, api)
    return tree if api == "nnx" else {"params": tree}


def from_equinox(obj: _Any) -> Model:
    """Read an Equinox ``nn.LSTMCell``, ``nn.GRUCell``, ``nn.Linear`` or ``nn.Embedding``, or a list, tuple or
    ``nn.Sequential`` of them, into a :class:`Model` (its cells one step each)."""
    from .adapters import equinox

    return equinox.from_objects(obj)


def to_equinox(weights: Layer | Model, key: _Any = None) -> list[_Any]:
    """New Equinox modules holding ``weights``, one per layer in order (``key`` only seeds the templates
    whose every weight is then replaced)."""
    from .adapters import equinox
    from .canonical import Model

    return equinox.to_objects(_folded(weights if isinstance(weights, Model) else Model((weights,))), key)


def from_haiku(params: _Any, *, only: tuple[str, ...] = (), kinds: _Mapping[str, str] | None = None) -> Model:
    """Read a Haiku parameter dict (``{module: {name: array}}``, as ``transform(...).init`` returns it) into a
    :class:`Model`; ``only`` orders modules of different classes, ``kinds`` says which a module named otherwise
    is (``{"encoder": "lstm"}``)."""
    from .adapters import haiku

    return haiku.read(params, "the parameter dict", only=tuple(only), kinds=kinds)


def to_haiku(weights: Layer | Model) -> dict[str, dict[str, _Any]]:
    """Haiku's parameter dict holding ``weights`` (NumPy arrays), for ``transform(...).apply``: modules named
    as Haiku names them (``lstm/linear``, ``gru``, ``linear``, numbered by class)."""
    from .adapters import haiku
    from .canonical import Model

    return haiku.write_params(weights if isinstance(weights, Model) else Model((weights,)))


def _folded(weights: _Any) -> _Any:
    """``weights`` with an LSTM's forget_bias constant folded into its bias, for a framework without one."""
    from .canonical import Model, RecurrentLayer, folded

    if isinstance(weights, Model):
        return folded(weights)
    if isinstance(weights, RecurrentLayer) and weights.forget_bias:
        return folded(Model((weights,))).layers[0]
    return weights


def save(weights: Layer | Model, path: str | _os.PathLike) -> Path:
    """Write ``weights`` to a canonical safetensors archive; the file appears complete or not at all."""
    from .adapters import archive

    return archive.write(weights, path)


def load(path: str | _os.PathLike) -> Layer | Model:
    """Read a canonical safetensors archive written by :func:`save`: the layer or model saved."""
    from .adapters import archive

    return archive.read(path)


del annotations  # the __future__ import's name is not part of the API
