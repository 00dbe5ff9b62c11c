"""The canonical archive: one safetensors file, one tensor per gate and role.

Tensor names say layer, stacked index, direction, gate and role::

    <layer name>.l<k>.<forward|reverse>.<gate>.<W_x|W_h|b_x|b_h>
    e.g. lstm.l0.forward.forget.W_h

The ``__metadata__`` header (string values only, as safetensors requires):

=================  ========================================================
key                value
=================  ========================================================
``format``         ``lstm_convert``
``format_version`` schema version, currently ``1``
``content``        ``layer``
``layers``         JSON list of layer specs (``RecurrentLayer.spec()``)
``source``         the framework the weights came from (``keras``, ``torch``)
=================  ========================================================

Reading checks that the tensors are exactly those the specs call for, with
the declared dtype and shapes. Needs numpy and safetensors only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write
from .._optional import require
from ..canonical import Gate, RecurrentLayer, tensor_name
from ..errors import FormatError, LSTMConvertError

FORMAT = "lstm_convert"
FORMAT_VERSION = "1"


def write(layer: RecurrentLayer, path: str | os.PathLike) -> Path:
    """Save ``layer`` as a canonical archive at ``path`` (replaced atomically)."""
    from safetensors.numpy import save_file

    tensors = {name: np.ascontiguousarray(array) for name, array in layer.tensors()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "content": "layer",
        "layers": json.dumps([layer.spec()], sort_keys=True),
        "source": layer.source.get("framework", "unknown"),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read(path: str | os.PathLike) -> RecurrentLayer:
    """Load a canonical archive written by :func:`write`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(path, framework="np") as handle:
            metadata = handle.metadata() or {}
            specs = _specs(path, metadata)
            names = set(handle.keys())
            layers = [_layer(path, spec, handle, names) for spec in specs]
    except SafetensorError as exc:
        raise FormatError(f"{path}: not a readable safetensors file ({exc})") from None
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    if names:
        raise FormatError(f"{path}: tensors not described by the metadata: {sorted(names)}")
    if len(layers) != 1:
        raise FormatError(f"{path}: expected one layer, found {len(layers)}")
    return layers[0]


def _specs(path: Path, metadata: dict[str, str]) -> list[dict[str, Any]]:
    if metadata.get("format") != FORMAT:
        raise FormatError(f"{path}: not an lstm_convert archive (metadata format is "
                          f"{metadata.get('format')!r}, expected {FORMAT!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise FormatError(f"{path}: archive format_version {metadata.get('format_version')!r} is not "
                          f"supported by this version of lstm_convert (it reads {FORMAT_VERSION!r})")
    try:
        specs = json.loads(metadata["layers"])
    except (KeyError, ValueError) as exc:
        raise FormatError(f"{path}: metadata 'layers' is missing or not JSON ({exc})") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise FormatError(f"{path}: metadata 'layers' must be a JSON list of objects")
    return specs


_SPEC_KEYS = ("name", "kind", "input_size", "hidden_size", "num_layers", "directions", "bias",
              "activation", "recurrent_activation", "dtype", "config", "source")


def _layer(path: Path, spec: dict[str, Any], handle: Any, names: set[str]) -> RecurrentLayer:
    missing = [key for key in _SPEC_KEYS if key not in spec]
    if missing:
        raise FormatError(f"{path}: layer spec lacks {missing}")
    dtype = spec["dtype"]
    if dtype == "bfloat16":
        require("ml_dtypes")  # registers the bfloat16 dtype with numpy
    gates = {}
    for index in range(spec["num_layers"]):
        for direction in ("forward", "reverse")[: spec["directions"]]:
            for gate in _gate_names(path, spec):
                arrays = {}
                for role in ("W_x", "W_h", "b_x", "b_h"):
                    if role.startswith("b") and not spec["bias"]:
                        continue
                    name = tensor_name(spec["name"], index, direction, gate, role)
                    if name not in names:
                        raise FormatError(f"{path}: tensor {name} is missing")
                    names.discard(name)
                    array = handle.get_tensor(name)
                    if str(array.dtype) != dtype:
                        raise FormatError(f"{path}: tensor {name} has dtype {array.dtype}, "
                                          f"expected {dtype}")
                    arrays[role] = array
                gates[(index, direction, gate)] = Gate(**arrays)
    fields = {key: spec[key] for key in _SPEC_KEYS if key != "dtype"}
    try:
        return RecurrentLayer(gates=gates, **fields)
    except LSTMConvertError as exc:
        raise FormatError(f"{path}: {exc}") from None


def _gate_names(path: Path, spec: dict[str, Any]) -> tuple[str, ...]:
    from ..gates import GATES

    if spec["kind"] not in GATES:
        raise FormatError(f"{path}: unknown layer kind {spec['kind']!r}")
    return GATES[spec["kind"]]
