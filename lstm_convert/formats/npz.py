"""NumPy ``.npz`` state dicts: PyTorch's key names and layouts, as ``np.savez(path, **state_dict)``
writes them (``{k: v.numpy() for k, v in module.state_dict().items()}``), which several published models
ship. Read member by member (each ``.npy`` header checked against its bytes; no pickles); written with ``np.savez``, one ``<key>.npy`` member per
tensor in module order; run through PyTorch modules.

An ``.npz`` has no place for anything but arrays: it keeps the weights, not what a model computes
around them, nor what its keys cannot say (an Embedding's lone ``weight`` reads back as an Embedding
only when ``kinds`` says so). NumPy has no bfloat16, so bfloat16 weights are refused.
"""

from __future__ import annotations

from pathlib import Path

from . import Format, LayerVerdict, ReadOptions, is_zip, parsing, refused, selects, zip_errors, zip_names
from . import torch as torch_format


def _recognise(path: Path, head: bytes) -> bool:
    names = zip_names(path) if is_zip(head) else []  # PyTorch's keys have no "/": those are Haiku's
    return bool(names) and all(name.endswith(".npy") and "/" not in name for name in names)


def _read(path: Path, options: ReadOptions):
    from ..adapters.torch import model_from_state_arrays
    from ..errors import FormatError, LSTMConvertError

    with parsing(path, "NumPy .npz file", zip_errors()):
        arrays = _arrays(path, options.only)
    if not arrays:
        raise FormatError(f"{path}: holds no arrays")
    try:
        return model_from_state_arrays(arrays, kinds=options.kinds, where=str(path), only=options.only,
                                       inventory=options.inventory, source={"framework": "torch", "file_format": "npz"})
    except FormatError:
        raise
    except LSTMConvertError as exc:
        raise exc.prefixed(str(path)) from None


def _arrays(path: Path, only) -> dict:
    """The arrays by key, each ``.npy`` header checked against the bytes its member holds before any array is
    made; an array of a module that is not selected keeps its shape only (a placeholder taking no memory)."""
    import math

    import numpy as np

    from .. import _zip
    from ..errors import FormatError

    arrays = {}
    with _zip.Zip(path, "NumPy .npz file") as archive:
        for name in archive.names:
            if not name.endswith(".npy"):
                raise FormatError(f"{path}: member {name!r} is not an .npy array")
            info = archive.getinfo(name)
            with archive.archive.open(info) as member:
                shape, fortran, dtype = _header(path, name, member)
                offset = member.tell()
            if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
                raise FormatError(f"{path}: {name} holds {dtype}, not numbers")  # pickled objects are never loaded
            expected = math.prod(shape) * dtype.itemsize
            if info.file_size - offset != expected:
                raise FormatError(f"{path}: {name} declares shape {shape} of {dtype} ({expected} bytes) but holds "
                                  f"{info.file_size - offset}")
            key = name[:-len(".npy")]
            if not selects(only, key.rpartition(".")[0]):
                arrays[key] = np.broadcast_to(np.zeros((), np.float32), shape)
                continue
            data = np.frombuffer(archive.read(name), dtype, count=math.prod(shape), offset=offset)
            arrays[key] = data.reshape(shape, order="F" if fortran else "C")
    return arrays


def _header(path: Path, name: str, member) -> tuple:
    """An .npy header: ``(shape, fortran_order, dtype)``; what NumPy's parser raises on a damaged one (it
    evaluates the header's text: ValueError, SyntaxError, a TokenError) becomes the library's error."""
    import tokenize

    import numpy as np

    from ..errors import FormatError

    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(member)
        if version not in readers:
            raise ValueError(f"an .npy version {version} header")
        shape, fortran, dtype = readers[version](member)
    except (ValueError, SyntaxError, tokenize.TokenError, EOFError, TypeError) as exc:
        raise FormatError(f"{path}: {name} has no readable .npy header ({exc})") from None
    return tuple(shape), bool(fortran), dtype


def _write(model, path: Path, before_rename) -> None:
    import numpy as np

    from .._atomic import atomic_write
    from ..adapters.torch import state_arrays

    arrays = state_arrays(model)

    def save(tmp: Path) -> None:
        with open(tmp, "r+b") as handle:  # a file object, so that np.savez adds no suffix
            np.savez(handle, **arrays)

    atomic_write(path, save, suffix=".npz", before_rename=before_rename)


def check_layer(layer, module: bool) -> LayerVerdict:
    if layer.dtype == "bfloat16":
        from ..errors import UnsupportedError

        error = UnsupportedError(f"{layer.name}: NumPy has no bfloat16, so an .npz cannot hold these weights; "
                                 "keep them in a safetensors archive or a PyTorch .safetensors or .pt file")
        return refused(error)
    verdict = torch_format.check_layer(layer, False)
    unkept = [text for text in _unkept(layer) if text not in verdict.needs]
    if verdict.verdict == "impossible" or not unkept:
        return verdict
    return LayerVerdict("weights", needs=(*verdict.needs, *unkept))


def _unkept(layer) -> list[str]:
    """The settings of a layer around the recurrent ones that an .npz cannot keep (it reads back with
    PyTorch's defaults): each as ``setting=value``."""
    defaults = {"conv1d": {"stride": 1, "dilation": 1, "groups": 1, "padding": (0, 0)},
                "batch_norm": {"epsilon": 1e-5}, "layer_norm": {"epsilon": 1e-5}}.get(layer.kind, {})
    shown = {key: list(v) if isinstance(v := getattr(layer, key), tuple) else v for key in defaults}
    return [f"{key}={shown[key]!r}" for key, value in defaults.items() if getattr(layer, key) != value]


def check_model(model, module: bool) -> None:
    torch_format.check_model(model, False)


def _notes(model, module: bool) -> list[str]:
    notes = []
    if model.semantics():
        notes.append(f"the .npz keeps every weight exactly, but not what the model computes around them "
                     f"({'; '.join(model.semantics())})")
    lone = [layer.name for layer in model.layers if layer.kind == "embedding"]
    if lone:
        notes.append(f"{', '.join(lone)}: an Embedding's lone weight reads back as an Embedding only when its "
                     "kind is given (kinds={prefix: 'embedding'})")
    said = [layer.name for layer in model.layers if layer.kind in ("conv1d", "layer_norm")]
    if said:
        notes.append(f"{', '.join(said)}: a convolution or a layer norm reads back only when its kind is given "
                     "(kinds={prefix: 'conv1d'} or 'layer_norm')")
    return notes


def _state(path: Path) -> dict:
    import numpy as np
    import torch

    with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
        return {key: torch.from_numpy(archive[key]) for key in archive.files}


FORMAT = Format(
    name="npz", title="NumPy .npz state dict", suffixes=(".npz",), layouts="torch",
    holds="a PyTorch state dict as `np.savez(**state_dict)` writes it, read with `np.load(allow_pickle=False)`: "
          "arrays only",
    recognise=_recognise, read=_read, write=_write, check_layer=check_layer, check_model=check_model,
    run=lambda path, model, calls: torch_format.run_state(path, model, calls, lambda: _state(path)),
    run_layers=lambda path, model, x, states: torch_format.run_state_layers(model, x, states, lambda: _state(path)),
    notes=_notes, runtime="PyTorch, as a state dict",
)
