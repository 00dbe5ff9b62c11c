"""Equinox ``.eqx`` files: the leaves ``eqx.tree_serialise_leaves`` writes (one ``.npy`` record per array,
one after the other), read with the skeleton that says which modules they are
(:mod:`lstm_convert.adapters.equinox`): ``--config SKELETON.json`` (``config=`` in the library), or the
skeleton lstm_convert writes into its own files as a last record. Read and written with NumPy alone (no
JAX); run in ``verify`` by Equinox itself, which loads the file with ``eqx.tree_deserialise_leaves``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import Format, LayerVerdict, ReadOptions, parsing, run_by_layers, verdict_of

_MAGIC = b"\x93NUMPY"
_SKELETON = b'{"lstm_convert_equinox_skeleton":'
_MAX_RECORDS = 1 << 16


def _recognise(path: Path, head: bytes) -> bool:
    return head.startswith(_MAGIC)


def _records(path: Path) -> tuple[list[Any], dict | None]:
    """The file's arrays in order, and the skeleton its last record holds if lstm_convert wrote it."""
    import numpy as np

    from ..errors import FormatError
    from .npz import _header

    size = path.stat().st_size
    arrays: list[Any] = []
    skeleton = None
    with open(path, "rb") as handle:
        while handle.tell() < size:
            at = handle.tell()
            if len(arrays) >= _MAX_RECORDS:
                raise FormatError(f"{path}: more than {_MAX_RECORDS} arrays")
            if handle.read(6) != _MAGIC:
                raise FormatError(f"{path}: the record at byte {at} is not a .npy array (no magic number)")
            handle.seek(at)
            shape, fortran, dtype = _header(path, f"the record at byte {at}", handle)
            if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
                raise FormatError(f"{path}: the record at byte {at} holds {dtype}, not numbers")
            nbytes = math.prod(shape) * dtype.itemsize
            if handle.tell() + nbytes > size:
                raise FormatError(f"{path}: the record at byte {at} declares {nbytes} bytes of {dtype} {list(shape)}, "
                                  f"past the end of the file")
            data = np.frombuffer(handle.read(nbytes), dtype).reshape(shape, order="F" if fortran else "C")
            arrays.append(data)
    if arrays and arrays[-1].dtype == np.uint8 and arrays[-1].ndim == 1 and bytes(arrays[-1][:len(_SKELETON)]) \
            == _SKELETON:
        try:
            skeleton = json.loads(bytes(arrays.pop()))["lstm_convert_equinox_skeleton"]
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path}: its skeleton record is damaged ({exc})") from None
    return arrays, skeleton


def _skeleton(config: Any, where: str) -> Any:
    """A skeleton given as a JSON file, or as a list or dict in the library."""
    from ..errors import FormatError

    if isinstance(config, (str, Path)) or hasattr(config, "__fspath__"):
        config = Path(config)
        if not config.is_file() or config.stat().st_size > 1 << 20:
            raise FormatError(f"{config}: not a readable skeleton (a JSON file of at most 1 MiB)")
        try:
            return json.loads(config.read_text("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"{config}: not JSON ({exc})") from None
    return config


def _read(path: Path, options: ReadOptions):
    from ..adapters import equinox
    from ..errors import FormatError

    with parsing(path, "Equinox .eqx file", ()):
        arrays, stored = _records(path)
        given = _skeleton(options.config, str(path)) if options.config is not None else stored
        if given is None:
            raise FormatError(
                f"{path}: an Equinox file holds its arrays only, not which modules they are",
                remedy='pass config= with its skeleton: [{"class": "LSTMCell", "input_size": 5, "hidden_size": 4}, ...]',
                hint='give its skeleton with --config SKELETON.json: [{"class": "LSTMCell", "input_size": 5, '
                     '"hidden_size": 4}, ...], the modules in the order of their leaves')
        skeleton = equinox.skeleton_of(given, str(options.config or path))
        return equinox.read(skeleton, arrays, str(path), source={"file_format": "equinox"})


def _write(model, path: Path, before_rename) -> None:
    import numpy as np

    from .._atomic import atomic_write
    from ..adapters import equinox

    skeleton, leaves = equinox.write_leaves(model)
    record = np.frombuffer(json.dumps({"lstm_convert_equinox_skeleton": skeleton}, sort_keys=True).encode(), np.uint8)

    def save(tmp: Path) -> None:
        with open(tmp, "r+b") as handle:
            for leaf in [*leaves, record]:
                np.save(handle, np.ascontiguousarray(leaf), allow_pickle=False)

    atomic_write(path, save, before_rename=before_rename)


def check_layer(layer, module: bool) -> LayerVerdict:
    from ..adapters import equinox

    return verdict_of(equinox.check_layer(layer), layer)


def _notes(model, module: bool) -> list[str]:
    semantics = [f"{layer.name}: {text}" for layer in model.layers for text in layer.semantics()]
    out = ["the file carries its skeleton as a last record, which eqx.tree_deserialise_leaves with the same "
           "modules never reads; the cells are one step each, for a scan the model does itself"]
    if semantics:
        out.insert(0, "the leaves keep every weight exactly, but not what the model computes around them ("
                   + "; ".join(semantics) + ")")
    return out


def _run_layers(path: Path, model, x, states: dict | None) -> list | str | None:
    """Layer by layer through the Equinox modules that ``eqx.tree_deserialise_leaves`` fills from the file."""
    import importlib.util

    if importlib.util.find_spec("equinox") is None:
        return None
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ..adapters import equinox
    from ..canonical import Dense, Embedding, RecurrentLayer

    jax.config.update("jax_platforms", "cpu")
    skeleton = equinox.skeleton_of(_skeleton_for(path, model), str(path))
    modules = eqx.tree_deserialise_leaves(path, equinox.build(skeleton, jax.random.PRNGKey(0)))
    out, value = [], jnp.asarray(x)
    for layer, module in zip(model.layers, modules):
        if isinstance(layer, (Dense, Embedding)):
            value = jax.vmap(jax.vmap(module))(value)
            out.append((np.asarray(value), None))
            continue
        if not isinstance(layer, RecurrentLayer):
            return f"{layer.name}: a {layer.kind} layer is not run through Equinox"
        batch = value.shape[0]
        initial = states[layer.name] if states else [np.zeros((1, batch, layer.hidden_size), layer.dtype)] * len(
            layer.state_names)
        carry = tuple(jnp.asarray(s[0]) for s in initial) if layer.kind == "lstm" else jnp.asarray(initial[0][0])
        step = jax.vmap(module)
        steps = []
        for t in range(value.shape[1]):
            carry = step(value[:, t], carry)
            steps.append(carry[0] if layer.kind == "lstm" else carry)
        value = jnp.stack(steps, 1)
        finals = tuple(np.asarray(c)[None] for c in carry) if layer.kind == "lstm" else (np.asarray(carry)[None],)
        out.append((np.asarray(value), finals))
    return out


def _skeleton_for(path: Path, model) -> Any:
    """The skeleton of a file being run: its own last record, or the one the model was read with."""
    _, stored = _records(path)
    if stored is not None:
        return stored
    from ..adapters import equinox

    return equinox.write_leaves(model)[0]


FORMAT = Format(
    name="equinox", title="Equinox .eqx file", suffixes=(".eqx",),
    holds="Equinox modules as `eqx.tree_serialise_leaves` writes them: LSTMCell, GRUCell, Linear, Embedding, read "
          "with their skeleton (`--config SKELETON.json`, or the one lstm_convert writes into its files)",
    recognise=_recognise, read=_read, write=_write, check_layer=check_layer, notes=_notes,
    run=run_by_layers("equinox", "equinox", _run_layers, "{name}: its modules run one after the other, each cell "
                      "scanned over the whole sequence"),
    run_layers=_run_layers, architecture=True,
    runtime="Equinox, where installed", holder="file of leaves",
)
