"""Flax parameters: ``.msgpack`` files as ``flax.serialization.to_bytes`` writes a linen parameter tree (or
a variables dict, whose ``params`` are read) and as ``msgpack_serialize`` writes an NNX state's pure dict,
read and written with ``msgpack`` alone (no JAX), the tree recognised by :mod:`lstm_convert.adapters.flax`;
run through ``flax.linen``'s or ``flax.nnx``'s own cells in ``verify``.

The file is a msgpack map of maps; each array is msgpack extension type 1 holding ``(shape, dtype name,
bytes)`` (C order), and an array past 1 GiB a map ``{"__msgpack_chunked_array__": true, "shape": ...,
"chunks": ...}`` of flat pieces. Like a state dict, it keeps the weights and not what the model computes
around them (a cell's ``activation_fn``, ``nn.RNN``'s ``return_carry`` and ``reverse``, masks).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import Format, LayerVerdict, ReadOptions, run_by_layers, parsing, refused

_NDARRAY, _COMPLEX, _SCALAR = 1, 2, 3
_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
           "uint32", "uint64", "bool")
_CHUNKED = "__msgpack_chunked_array__"


def _recognise(path: Path, head: bytes) -> bool:
    """A msgpack map whose first key is text, with an array extension (type 1) in its first 64 KiB."""
    if not head or not (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        return False
    at = 1 if head[0] <= 0x8F else (3 if head[0] == 0xDE else 5)
    if at >= len(head) or not (0xA1 <= head[at] <= 0xBF or head[at] == 0xD9):
        return False
    with open(path, "rb") as handle:
        start = handle.read(1 << 16)
    for marker, skip in ((0xC7, 2), (0xC8, 3), (0xC9, 5)):  # ext 8, 16, 32: the type after the length
        at = start.find(bytes([marker]))
        while at != -1:
            if at + skip < len(start) and start[at + skip] == _NDARRAY:
                return True
            at = start.find(bytes([marker]), at + 1)
    return False


def _msgpack():
    from .._optional import require

    return require("msgpack")


def _array(code: int, data: bytes, where: str) -> Any:
    """One extension value: an array ``(shape, dtype name, bytes)``, checked before it is made."""
    msgpack = _msgpack()
    from .._lazy import np
    from ..errors import FormatError

    if code not in (_NDARRAY, _SCALAR):
        raise FormatError(f"{where}: holds msgpack extension type {code}, not an array (a complex number or "
                          "another type flax.serialization does not write for weights)")
    try:
        value = msgpack.unpackb(data, raw=True)
    except (ValueError, TypeError, msgpack.exceptions.UnpackException) as exc:
        raise FormatError(f"{where}: an array whose encoding is damaged ({exc})") from None
    if not (isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], (list, tuple))
            and isinstance(value[1], bytes) and isinstance(value[2], bytes)):
        raise FormatError(f"{where}: an array extension that is not (shape, dtype, bytes)")
    shape, name, buffer = value
    if not all(type(n) is int and n >= 0 for n in shape) or len(shape) > 32:
        raise FormatError(f"{where}: an array of shape {list(shape)[:8]}, not sizes")
    dtype = name.decode("ascii", "replace")
    if dtype not in _DTYPES:
        raise FormatError(f"{where}: an array of dtype {dtype!r}, not one of {', '.join(_DTYPES)}")
    if dtype == "bfloat16":
        from .._optional import require

        numpy = np.dtype(require("ml_dtypes").bfloat16)
    else:
        numpy = np.dtype(dtype)
    if math.prod(shape) * numpy.itemsize != len(buffer):
        raise FormatError(f"{where}: an array of shape {list(shape)} {dtype} ({math.prod(shape) * numpy.itemsize} "
                          f"bytes) holding {len(buffer)}")
    return np.frombuffer(buffer, numpy.newbyteorder("<")).reshape(shape)


def load(path: Path) -> dict[str, Any]:
    """The tree a ``.msgpack`` file holds, as nested dicts of arrays (chunked arrays joined)."""
    msgpack = _msgpack()
    from ..errors import FormatError

    data = path.read_bytes()
    where = str(path)
    try:
        tree = msgpack.unpackb(data, raw=False, strict_map_key=False,  # NNX's nnx.Sequential keys its layers 0, 1
                               ext_hook=lambda code, payload: _array(code, payload, where))
    except FormatError:
        raise
    except (ValueError, TypeError, msgpack.exceptions.UnpackException) as exc:
        raise FormatError(f"{where}: not a readable msgpack file ({exc})") from None
    if not isinstance(tree, dict):
        raise FormatError(f"{where}: holds a msgpack {type(tree).__name__}, not a map of parameters")
    return _joined(tree, where, 0)


def _joined(node: Any, where: str, depth: int) -> Any:
    """``node`` with flax.serialization's chunked arrays joined back into one."""
    from .._lazy import np
    from ..errors import FormatError

    if depth > 64:
        raise FormatError(f"{where}: nests more than 64 maps deep")
    if not isinstance(node, dict):
        return node
    if node.get(_CHUNKED) is True:
        shape, chunks = node.get("shape"), node.get("chunks")
        if not (isinstance(shape, dict) and isinstance(chunks, dict)):
            raise FormatError(f"{where}: a chunked array without its shape and chunks")
        sizes = [shape.get(str(k)) for k in range(len(shape))]
        pieces = [chunks.get(str(k)) for k in range(len(chunks))]
        if not all(type(n) is int and n >= 0 for n in sizes) or not pieces or not all(
                isinstance(p, np.ndarray) and p.ndim == 1 and p.dtype == pieces[0].dtype for p in pieces):
            raise FormatError(f"{where}: a chunked array whose shape or chunks are damaged")
        if sum(p.size for p in pieces) != math.prod(sizes):
            raise FormatError(f"{where}: a chunked array of shape {sizes} whose chunks hold "
                              f"{sum(p.size for p in pieces)} values")
        return np.concatenate(pieces).reshape(sizes)
    return {key: _joined(value, f"{where}/{key}" if depth else f"{where}: {key}", depth + 1)
            for key, value in node.items()}


def _read(path: Path, options: ReadOptions):
    from ..adapters import flax

    with parsing(path, "Flax .msgpack file", ()):
        tree = flax.tree_of(load(path), str(path))
        return flax.read(tree, str(path), only=options.only, inventory=options.inventory,
                         source={"file_format": "flax"})


def dumps(tree: Any) -> bytes:
    """``tree`` (nested dicts of arrays) as ``flax.serialization.to_bytes`` writes it."""
    msgpack = _msgpack()
    from .._dtypes import name as dtype_name

    def ext(value: Any) -> Any:
        if hasattr(value, "dtype") and hasattr(value, "shape"):
            from .._lazy import np

            array = np.ascontiguousarray(value)
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            payload = msgpack.packb((list(array.shape), dtype_name(array.dtype), array.tobytes()), use_bin_type=True)
            return msgpack.ExtType(_NDARRAY, payload)
        raise TypeError(f"cannot serialise {type(value).__name__}")

    return msgpack.packb(_sorted(tree), default=ext, use_bin_type=True)


def _sorted(node: Any) -> Any:
    """Maps with their keys sorted, as a tree that went through ``jax.tree_util`` (any trained one) has them."""
    if not isinstance(node, dict):
        return node
    return {key: _sorted(node[key]) for key in sorted(node, key=lambda k: (isinstance(k, str), k))}


def _write(model, path: Path, before_rename) -> None:
    from .._atomic import atomic_write
    from ..adapters import flax

    api = flax.api_of(model)  # NNX's state is written bare, as msgpack_serialize(nnx.to_pure_dict(state)) writes it
    tree = flax.write_tree(model, api)
    data = dumps(tree if api == "nnx" else {"params": tree})

    def save(tmp: Path) -> None:
        with open(tmp, "r+b") as handle:
            handle.write(data)

    atomic_write(path, save, before_rename=before_rename)


def check_layer(layer, module: bool) -> LayerVerdict:
    from ..adapters import flax
    from ..errors import UnsupportedError

    api = "nnx" if str(getattr(layer, "config", {}).get("flax", {}).get("cell", "")).startswith("flax.nnx") else "linen"
    reason = flax.check_layer(layer, api)
    if reason:
        return refused(UnsupportedError(reason))
    needs = list(layer.semantics())
    if getattr(layer, "activation", "tanh") not in ("tanh", "linear") and layer.kind in ("lstm", "gru", "rnn"):
        needs.append(f"activation={layer.activation!r} (the cell's activation_fn)")
    if getattr(layer, "recurrent_activation", "sigmoid") != "sigmoid":
        needs.append(f"recurrent_activation={layer.recurrent_activation!r} (the cell's gate_fn)")
    return LayerVerdict("weights" if needs else "exact", needs=tuple(needs))


def _notes(model, module: bool) -> list[str]:
    from ..canonical import RecurrentLayer

    semantics = [f"{layer.name}: {text}" for layer in model.layers for text in check_layer(layer, False).needs]
    out = []
    if semantics:
        out.append("the parameter tree keeps every weight exactly, but not what the model computes around them ("
                   + "; ".join(semantics) + "): build the Flax modules to match")
    if any(isinstance(layer, RecurrentLayer) and layer.kind == "lstm" for layer in model.layers):
        out.append("an LSTM's two biases are one in Flax: b_x is added into the recurrent-side bias (exactly "
                   "where b_x is zero, as in a tree read from Flax)")
    if len(model.layers) > 1:
        out.append("the layers are written as nn.Sequential names them (layers_0, layers_1, ...)")
    return out


def _read_notes(model) -> list[str]:
    from ..canonical import RecurrentLayer

    out = []
    if any(isinstance(layer, RecurrentLayer) for layer in model.layers):
        out.append("a Flax tree holds weights only: its cells are read with Flax's defaults (gate_fn sigmoid, "
                   "activation_fn tanh, SimpleCell without residual), each over the whole sequence from zero "
                   "states; state what the model did otherwise with --set (LAYER.activation=relu, ...)")
    if "skipped" in model.source:
        out.append(f"skipped {model.source['skipped']}")
    return out


# -- running, for verify --------------------------------------------------------------------------------


def _run_layers(path: Path, model, x, states: dict | None) -> list | str | None:
    """Layer by layer through ``flax.linen`` modules applied to the file's own tree (``states``: each recurrent
    layer's initial states, zeros when None)."""
    import importlib.util

    if importlib.util.find_spec("flax") is None:
        return None
    import jax
    import jax.numpy as jnp
    from flax import linen

    from .._lazy import np
    from ..adapters import flax as adapter
    from ..canonical import Dense, Embedding, RecurrentLayer

    jax.config.update("jax_platforms", "cpu")
    tree = adapter.tree_of(load(path), str(path))
    cells = {"lstm": linen.LSTMCell, "gru": linen.GRUCell, "rnn": linen.SimpleCell}
    out, value = [], jnp.asarray(x)
    for layer in model.layers:
        node = tree
        for key in layer.config.get("flax", {}).get("path", []):
            node = node[key]
        if isinstance(layer, Embedding):
            value = linen.Embed(layer.num_embeddings, layer.embedding_dim).apply({"params": node}, value)
            out.append((np.asarray(value), None))
            continue
        if isinstance(layer, Dense):
            value = linen.Dense(layer.out_features, use_bias=layer.bias is not None).apply({"params": node}, value)
            out.append((np.asarray(value), None))
            continue
        if not isinstance(layer, RecurrentLayer):
            return f"{layer.name}: a {layer.kind} layer is not run through flax"
        nnx = str(layer.config.get("flax", {}).get("cell", "")).startswith("flax.nnx")
        cell = cells[layer.kind]
        initial = states[layer.name] if states else [np.zeros((layer.directions, value.shape[0], layer.hidden_size),
                                                              layer.dtype)] * len(layer.state_names)
        sides = [("forward", node["forward_rnn"]["cell"] if layer.directions == 2 else node.get("cell", node))]
        if layer.directions == 2:
            sides.append(("reverse", node["backward_rnn"]["cell"]))
        outputs, finals = [], [[] for _ in layer.state_names]
        for k, (direction, params) in enumerate(sides):
            carry = tuple(jnp.asarray(s[k]) for s in initial)
            carry = (carry[1], carry[0]) if layer.kind == "lstm" else carry[0]  # flax's LSTM carry is (c, h)
            if nnx:
                seq, carry = _nnx_run(layer, params, value, carry, direction == "reverse")
            elif layer.cell:
                module = cell(features=layer.hidden_size)
                steps = []
                for t in range(value.shape[1]):
                    carry, y = module.apply({"params": params}, carry, value[:, t])
                    steps.append(y)
                seq = jnp.stack(steps, 1)
            else:
                rnn = linen.RNN(cell(features=layer.hidden_size), return_carry=True, reverse=direction == "reverse",
                                keep_order=True)
                carry, seq = rnn.apply({"params": {"cell": params}}, value, initial_carry=carry)
            outputs.append(seq)
            got = (carry[1], carry[0]) if layer.kind == "lstm" else (carry,)
            for slot, final in zip(finals, got):
                slot.append(np.asarray(final))
        value = jnp.concatenate(outputs, -1) if len(outputs) > 1 else outputs[0]
        out.append((np.asarray(value), tuple(np.stack(f) for f in finals)))
    return out


def _nnx_run(layer, params, value, carry, reverse: bool):
    """One direction of a layer read from an NNX tree, through the NNX class that wrote it (its state set from
    the file's own tree); ``(outputs, final carry)``."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ..adapters.flax import nnx_class

    cls = getattr(nnx, nnx_class(layer).split()[-1])
    module = cls(layer.fan_in(0), layer.hidden_size, rngs=nnx.Rngs(0))
    state = nnx.state(module, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_map(jnp.asarray, params))
    nnx.update(module, state)
    if layer.cell:
        steps = []
        for t in range(value.shape[1]):
            carry, y = module(carry, value[:, t])
            steps.append(y)
        return jnp.stack(steps, 1), carry
    carry, seq = nnx.RNN(module, return_carry=True, reverse=reverse, keep_order=True)(value, initial_carry=carry)
    return seq, carry


FORMAT = Format(
    name="flax", title="Flax .msgpack file", suffixes=(".msgpack",),
    holds="a Flax linen parameter tree (`flax.serialization.to_bytes`) or an NNX state's pure dict "
          "(`msgpack_serialize`): LSTMCell, OptimizedLSTMCell, GRUCell, SimpleCell in `RNN` or `Bidirectional`, "
          "Dense / Linear, Embed; read and written with msgpack (no JAX)",
    recognise=_recognise, read=_read, write=_write, check_layer=check_layer, notes=_notes,
    run=run_by_layers("flax", "flax", _run_layers,
                      "{name}: a Flax tree says nothing of what is computed around its weights"
                      ": its layers run one after the other over whole sequences"),
    run_layers=_run_layers,
    runtime="Flax's own cells (linen or NNX), where installed", holder="parameter tree", read_notes=_read_notes,
)
