"""Haiku parameters: an ``.npz`` of the flattened parameter dict, one array per ``/``-joined key
(``np.savez(path, **{f"{module}/{name}": value ...})``: ``lstm/linear/w``), told apart from a PyTorch-key ``.npz``
by its keys (or named with ``--from haiku``), recognised by :mod:`lstm_convert.adapters.haiku`; read member by
member with NumPy alone; run through Haiku's own modules in ``verify``.
"""

from __future__ import annotations

from pathlib import Path

from . import Format, LayerVerdict, ReadOptions, is_zip, parsing, run_by_layers, verdict_of, zip_errors, zip_names


def _recognise(path: Path, head: bytes) -> bool:
    names = zip_names(path) if is_zip(head) else []
    return bool(names) and all(name.endswith(".npy") for name in names) and all("/" in name for name in names)


def _read(path: Path, options: ReadOptions):
    from ..adapters import haiku
    from .npz import _arrays

    with parsing(path, "Haiku .npz file", zip_errors()):
        arrays = _arrays(path, ())  # every array: a selection applies to modules, which the keys' "/" name
        params = haiku.modules_of(arrays, str(path))
        return haiku.read(params, str(path), only=options.only, kinds=options.kinds, inventory=options.inventory,
                          source={"file_format": "haiku"})


def _write(model, path: Path, before_rename) -> None:
    import numpy as np

    from .._atomic import atomic_write
    from ..adapters import haiku

    arrays = haiku.flat(haiku.write_params(model))

    def save(tmp: Path) -> None:
        with open(tmp, "r+b") as handle:
            np.savez(handle, **arrays)

    atomic_write(path, save, suffix=".npz", before_rename=before_rename)


def check_layer(layer, module: bool) -> LayerVerdict:
    from ..adapters import haiku

    return verdict_of(haiku.check_layer(layer), layer)


def _notes(model, module: bool) -> list[str]:
    out = []
    classes = {layer.kind for layer in model.layers}
    if len(model.layers) > 1 and len(classes) > 1:
        names = " ".join(f"--only {n}" for n in _written_names(model))
        out.append(f"Haiku's names keep no order between modules of different classes: read this file back with {names}")
    for layer in model.layers:
        if layer.kind == "lstm" and getattr(layer, "forget_bias", 0.0) != 1.0:
            out.append(f"{layer.name}: hk.LSTM adds 1 to its forget gate; the bias written is the forget bias minus "
                       f"{1.0 - layer.forget_bias!r} (the function stays; the bias's bits change)")
    return out


def _written_names(model) -> list[str]:
    from ..adapters import haiku

    return haiku.module_names(model)


def _read_notes(model) -> list[str]:
    from ..canonical import RecurrentLayer

    if not any(isinstance(layer, RecurrentLayer) for layer in model.layers):
        return []
    return ["a Haiku parameter dict holds weights only: hk.LSTM's +1 on the forget gate is kept as the layer's "
            "forget_bias; the modules are read as run over whole sequences (hk.dynamic_unroll) from zero states"]


def _run_layers(path: Path, model, x, states: dict | None) -> list | str | None:
    """Layer by layer through Haiku's own modules (``hk.dynamic_unroll`` of ``hk.LSTM`` and ``hk.GRU``,
    ``hk.Linear``, ``hk.Embed``) with the file's own parameters."""
    import importlib.util

    if importlib.util.find_spec("haiku") is None:
        return None
    import haiku as hk
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ..adapters import haiku as adapter
    from ..canonical import Dense, Embedding, RecurrentLayer
    from .npz import _arrays

    jax.config.update("jax_platforms", "cpu")
    params = adapter.modules_of(_arrays(path, ()), str(path))
    names = [layer.config.get("haiku", {}).get("module", "") for layer in model.layers]
    if any("/" in name or not name for name in names):
        return "only top-level Haiku modules are run (nested module names are not rebuilt)"

    def forward(value, initial):
        out = []
        for layer, name in zip(model.layers, names):
            if isinstance(layer, Embedding):
                value = hk.Embed(layer.num_embeddings, layer.embedding_dim, name=name)(value)
                out.append((value, None))
            elif isinstance(layer, Dense):
                value = hk.Linear(layer.out_features, with_bias=layer.bias is not None, name=name)(value)
                out.append((value, None))
            elif isinstance(layer, RecurrentLayer):
                core = (hk.LSTM if layer.kind == "lstm" else hk.GRU)(layer.hidden_size, name=name)
                first = initial[layer.name]
                state = hk.LSTMState(hidden=first[0][0], cell=first[1][0]) if layer.kind == "lstm" else first[0][0]
                seq, final = hk.dynamic_unroll(core, jnp.swapaxes(value, 0, 1), state)
                value = jnp.swapaxes(seq, 0, 1)
                out.append((value, (final.hidden[None], final.cell[None]) if layer.kind == "lstm" else (final[None],)))
            else:
                raise ValueError(f"{layer.name}: a {layer.kind} layer is not run through Haiku")
        return out

    batch = np.asarray(x).shape[0]
    initial = {layer.name: (states[layer.name] if states else [np.zeros((1, batch, layer.hidden_size), layer.dtype)]
                            * len(layer.state_names))
               for layer in model.layers if isinstance(layer, RecurrentLayer)}
    try:
        result = hk.without_apply_rng(hk.transform(forward)).apply(
            {m: {k: jnp.asarray(v) for k, v in values.items()} for m, values in params.items()}, jnp.asarray(x),
            {k: [jnp.asarray(s) for s in v] for k, v in initial.items()})
    except ValueError as exc:
        return str(exc)
    return [(np.asarray(o), tuple(np.asarray(f) for f in s) if s is not None else None) for o, s in result]


FORMAT = Format(
    name="haiku", title="Haiku .npz file", suffixes=(".npz",),
    holds="a Haiku parameter dict as an `.npz` of `/`-joined keys (`lstm/linear/w`): hk.LSTM (its +1 on the forget "
          "gate kept), hk.GRU (its inverted update gate negated), hk.Linear, hk.Embed; read with NumPy (no JAX)",
    recognise=_recognise, read=_read, write=_write, check_layer=check_layer, notes=_notes, read_notes=_read_notes,
    run=run_by_layers("haiku", "haiku", _run_layers,
                      "{name}: a Haiku parameter dict says nothing of what is computed around its weights"
                      ": its modules run one after the other over whole sequences"),
    run_layers=_run_layers,
    runtime="Haiku's own modules, where installed", holder="parameter dict", constants=True,
)
