"""Run two model files on the same random input and compare what they compute: the model outputs
first, then every layer's output as detail.

Each side runs as its format defines the model, by the format's own runtime when installed (its
``run`` and ``run_layers`` verbs, see :mod:`lstm_convert.formats`): a ``.keras`` file through
``keras.saving.load_model`` (a legacy ``.h5``, or a ``.keras`` from tf.keras 2, through tf_keras), a
PyTorch state dict through the module that :mod:`.adapters.torch_module` writes (from the file's model
record when lstm_convert wrote it, else its layers one after the other over whole sequences), an
``.onnx`` file in onnxruntime; a format without a runtime (the archive) through the float64 reference.
When either side masks, the input has padded steps at the end of some rows and in the middle of
another; a stateful model runs two batches in turn. Different output shapes, or a mask one side
does not apply, fail. The per-layer detail runs every layer over whole sequences from random
initial states, where both sides can be run so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _progress, files, reference
from . import formats as registry
from .canonical import Embedding, Masking, Model, RecurrentLayer
from .errors import FormatError

DEFAULT_ATOL = {"float64": 1e-9, "float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}


@dataclass
class Comparison:
    """Largest absolute differences per layer output; ``ok`` when all are within tolerance."""

    runners: tuple[str, str]
    atol: float
    rtol: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    batch: int = 0
    steps: int = 0
    masked: bool = False

    @property
    def ok(self) -> bool:
        return all(row["ok"] for row in self.rows)


def verify(a: str | Path, b: str | Path, *, atol: float | None = None, rtol: float = 0.0, batch: int = 3,
           steps: int = 5, seed: int = 0, formats: tuple[str | None, str | None] = (None, None),
           kinds: Mapping[str, str] | None = None, only: Sequence[str] = (), config: object = None,
           forget_bias: float | None = None) -> Comparison:
    """Compare the files ``a`` and ``b`` layer by layer; see the module docstring. ``config`` is the
    architecture of ``a`` when it holds only weights, ``forget_bias`` what the LSTM cells of a TensorFlow
    checkpoint ``a`` added at run time (see :func:`lstm_convert.files.read`).

    A stacked layer on one side may be several layers on the other (PyTorch
    ``num_layers=k`` against k Keras layers): outputs are compared where both
    sides end a layer, and final states over the whole span.
    """
    fmt_a, fmt_b = registry.detect(a, formats[0]), registry.detect(b, formats[1])
    _progress.phase("reading A and B", 1, 4)
    model_a, model_b = (files.read(a, fmt_a.name, kinds=kinds, only=only, config=config, forget_bias=forget_bias),
                        files.read(b, fmt_b.name, kinds=kinds, only=only))
    units = _same_structure(model_a, model_b)
    fixed = []
    for path, fmt in ((a, fmt_a), (b, fmt_b)):
        if fmt.input_dims is not None and not only:  # an exporter may have fixed the batch or the sequence length
            dims = fmt.input_dims(Path(path))
            batch = dims[0] if dims and dims[0] else batch
            steps = dims[1] if len(dims) > 1 and dims[1] else steps
            fixed += [f"{Path(path).name} fixes the input at {dims}"] if any(dims[:2]) else []
    for what in ("sequence length", "batch size"):  # a model that fixes its length or batch takes only those
        sizes = {Path(p).name: (m.input_shape[0] if m.input_shape else None) if what == "sequence length"
                 else m.batch_size for p, m in ((a, model_a), (b, model_b))}
        fixing = {name: size for name, size in sizes.items() if size}
        if not fixing:
            continue
        if len(set(fixing.values())) > 1:
            raise FormatError(f"the two files fix different {what}s: {fixing}")
        size = next(iter(fixing.values()))
        steps, batch = (size, batch) if what == "sequence length" else (steps, size)
        who = "both files fix" if len(fixing) == 2 else f"{next(iter(fixing))} fixes"
        fixed.append(f"{who} the {what} at {size}")
    rng = np.random.default_rng(seed)
    first = units[0]
    if isinstance(first, Embedding):  # index 0 is padding only where _padded puts it, when a side masks
        low = 1 if (model_a.masked or model_b.masked) and first.num_embeddings > 1 else 0
        x = rng.integers(low, first.num_embeddings, size=(batch, steps)).astype(np.int64)
    else:
        x = rng.normal(size=(batch, steps, first.input_size)).astype(np.float32)
    model_x = _padded(x, model_a, model_b)
    # A format whose models take no initial states (ONNX: its operators start from zero): then neither side does.
    zero = not (fmt_a.initial_states and fmt_b.initial_states)
    unit_states = []  # per single (unstacked) layer, its initial states
    for unit in units:
        shapes = [(unit.directions, batch, unit.state_size if n == "h" else unit.hidden_size)
                  for n in unit.state_names] if isinstance(unit, RecurrentLayer) else []
        unit_states.append(tuple(np.zeros(shape, np.float32) if zero else rng.normal(size=shape).astype(np.float32)
                                 for shape in shapes))
    _progress.phase(f"running A, a {fmt_a.title} (its framework loaded first)", 2, 4)
    run_a, name_a = _run(Path(a), fmt_a, model_a, x, _grouped(model_a, unit_states))
    _progress.phase(f"running B, a {fmt_b.title}", 3, 4)
    run_b, name_b = _run(Path(b), fmt_b, model_b, x, _grouped(model_b, unit_states))
    detail = [f"{Path(p).name}: {why}" for p, why in ((a, run_a), (b, run_b)) if isinstance(why, str)]
    if detail:  # a side that cannot run layer by layer: the model output alone is compared
        run_a = run_b = []
    if atol is None:
        atol = max(DEFAULT_ATOL.get(layer.dtype, 1e-5) for layer in (*model_a.layers, *model_b.layers))
    result = Comparison((name_a, name_b), atol, rtol)
    result.notes += [f"{n}; only the model outputs are compared" for n in detail]
    if zero:
        stateless = next(f for f in (fmt_a, fmt_b) if not f.initial_states)
        result.notes.append(f"initial states are zero on both sides: {stateless.title}s take none")
    result.notes += fixed
    result.batch, result.steps = batch, steps
    result.masked = model_x is not x
    calls = [model_x]
    if _stateful(model_a) or _stateful(model_b):  # a second batch starts where the first one ended
        calls.append(np.ascontiguousarray(model_x[:, ::-1]))
        result.notes.append("stateful: two batches are run one after the other, the second from the first's states")
    _progress.phase("running the whole models", 4, 4)
    whole_a, runner_a, how_a = _run_model(Path(a), fmt_a, model_a, calls)
    whole_b, runner_b, how_b = _run_model(Path(b), fmt_b, model_b, calls)
    result.runners = (runner_a, runner_b)
    result.notes += how_a + how_b
    if model_a.masked != model_b.masked:  # a mask one side ignores: the two compute different functions
        masking, other = ("A", "B") if model_a.masked else ("B", "A")
        what = "; ".join(t for m in (model_a, model_b) for t in m.semantics() if "mask" in t.lower())
        result.rows.insert(0, {"layer": "model", "part": "mask", "max_abs_diff": float("inf"), "ok": False})
        result.notes.insert(0, f"{masking} skips padded steps ({what}) and {other} does not")
    for unit_a, unit_b in zip(_units(model_a), _units(model_b)):  # cells that compute other things by design
        if isinstance(unit_a, RecurrentLayer) and unit_a.cell_features() != unit_b.cell_features():
            said = {side: ", ".join(u.cell_features()) or "none of these" for side, u in (("A", unit_a), ("B", unit_b))}
            result.rows.insert(0, {"layer": unit_a.name, "part": "cell", "max_abs_diff": float("inf"), "ok": False})
            result.notes.insert(0, f"{unit_a.name}: the cells differ by construction (A: {said['A']}; B: {said['B']}): "
                                   "they compute other functions wherever that matters, whatever random input shows")
    if whole_a.shape != whole_b.shape:
        result.rows.insert(0, {"layer": "model", "part": "output", "max_abs_diff": float("inf"), "ok": False,
                               "shapes": (list(whole_a.shape), list(whole_b.shape))})
        result.notes.insert(0, f"the models' outputs differ in shape: {tuple(whole_a.shape)} (A) vs "
                               f"{tuple(whole_b.shape)} (B)")
    else:
        diff = np.abs(whole_a.astype(np.float64) - whole_b.astype(np.float64))
        largest = float(diff.max()) if diff.size else 0.0
        result.rows.insert(0, {"layer": "model", "part": "output", "max_abs_diff": largest,
                               "ok": bool(np.all(diff <= atol + rtol * np.abs(whole_b.astype(np.float64)))),
                               "shapes": (list(whole_a.shape), list(whole_b.shape))})
    for name, (out_a, st_a), (out_b, st_b) in _aligned(model_a, run_a, model_b, run_b):
        parts = {"output": (out_a, out_b), **{n: (u, v) for n, u, v in zip(("h", "c"), st_a, st_b)}}
        for part, (u, v) in parts.items():
            if u is None or v is None:
                continue  # not an output of one of the files (an ONNX graph shows only some)
            u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
            if u.shape != v.shape:  # a layer that returns one step on one side runs whole on the other
                continue
            diff = float(np.abs(u - v).max())
            ok = bool(np.all(np.abs(u - v) <= atol + rtol * np.abs(v)))
            result.rows.append({"layer": name, "part": part, "max_abs_diff": diff, "ok": ok})
    return result


def _padded(x: np.ndarray, a: Model, b: Model) -> np.ndarray:
    """``x`` with padded steps when either model masks: zeros (indices) or the mask value at the end of
    some rows, and one masked step in the middle of another."""
    masking = next((layer for m in (a, b) for layer in m.layers if isinstance(layer, Masking)), None)
    if not (a.masked or b.masked) or x.shape[1] < 2:
        return x
    x = x.copy()
    pad = 0 if x.ndim == 2 else (masking.mask_value if masking is not None else 0.0)
    steps = x.shape[1]
    for row in range(x.shape[0]):
        kind = row % 3
        if kind == 0:
            x[row, steps - max(1, steps // 3):] = pad  # trailing padding
        elif kind == 1 and steps > 2:
            x[row, steps // 2] = pad  # a masked step in the middle
    return x


def _stateful(model: Model) -> bool:
    return any(isinstance(layer, RecurrentLayer) and layer.stateful for layer in model.layers)


def _run_model(path: Path, fmt: registry.Format, model: Model, calls: list[np.ndarray]) -> tuple[np.ndarray, str, list]:
    """The model's outputs for each input of ``calls`` in turn (joined on the batch axis), as its file
    defines the model, by the format's own runtime; the runner's name, and notes (why the reference ran)."""
    if len(calls) > 1 and not fmt.runs_stateful:
        return _reference(model, calls), "reference", [f"{path.name}: a stateful model is run by the reference"]
    run = fmt.run(path, model, calls) if fmt.run is not None else None
    if run is None:
        return _reference(model, calls), "reference", []
    if run.output is None:
        return _reference(model, calls), "reference", [f"{path.name}: {'; '.join(run.notes)}; run by the float64 "
                                                       "reference"]
    return run.output, run.runner, list(run.notes)


def _reference(model: Model, calls: list[np.ndarray]) -> np.ndarray:
    """The reference's outputs for each input in turn; stateful layers start where the last call ended."""
    outputs, states = [], {}
    for x in calls:
        runs = reference.run(model, x, states)
        states = {layer.name: finals for layer, (_, finals) in zip(model.layers, runs)
                  if isinstance(layer, RecurrentLayer) and layer.stateful}
        outputs.append(runs[-1][0])
    return np.concatenate(outputs)


def _depth(layer: Any) -> int:
    return layer.num_layers if isinstance(layer, RecurrentLayer) else 1


def _units(model: Model) -> list:
    return [unit for layer in model.layers
            for unit in (layer.unstack() if isinstance(layer, RecurrentLayer) else [layer])]


def _same_structure(a: Model, b: Model) -> list:
    """The single layers both models are made of, once stacks are split; FormatError if they differ."""
    def shape(units: list) -> list[tuple]:
        return [(u.kind, getattr(u, "input_size", None), u.output_size, getattr(u, "directions", 1)) for u in units]

    units_a, units_b = _units(a), _units(b)
    if shape(units_a) != shape(units_b):
        raise FormatError(f"the two files hold different layers: {_outline(a)} vs {_outline(b)}")
    return units_a


def _outline(m: Model, shown: int = 6) -> str:
    """The model's layers for a message: the first few, then how many more."""
    parts = [f"{layer.name}: {layer.kind} -> {layer.output_size}" for layer in m.layers[:shown]]
    if len(m.layers) > shown:
        parts.append(f"... {len(m.layers) - shown} more")
    return f"[{', '.join(parts)}]"


def _grouped(model: Model, unit_states: list) -> dict[str, tuple]:
    """Each recurrent layer's initial states: its units' states stacked, as PyTorch orders them."""
    out, k = {}, 0
    for layer in model.layers:
        if isinstance(layer, RecurrentLayer):
            out[layer.name] = tuple(np.concatenate([unit_states[k + i][n] for i in range(layer.num_layers)])
                                    for n in range(len(layer.state_names)))
        k += _depth(layer)
    return out


def _aligned(model_a: Model, run_a: list, model_b: Model, run_b: list):
    """Pairs of results where both sides end a layer at the same depth; final states of the span stacked."""
    def spans(model: Model, runs: list):
        depth = 0
        for layer, (out, finals) in zip(model.layers, runs):
            depth += _depth(layer)
            yield depth, layer.name, out, tuple(finals or ())

    def stack(parts: list) -> tuple:
        if not all(parts) or any(x is None for p in parts for x in p):
            return ()
        return tuple(np.concatenate(s) for s in zip(*parts))

    spans_b = spans(model_b, run_b)
    pending_a, pending_b, depth_b = [], [], 0
    for depth_a, name, out_a, st_a in spans(model_a, run_a):
        pending_a.append(st_a)
        while depth_b < depth_a:
            depth_b, _, out_b, st_b = next(spans_b)
            pending_b.append(st_b)
        if depth_b == depth_a:
            yield name, (out_a, stack(pending_a)), (out_b, stack(pending_b))
            pending_a, pending_b = [], []


def _run(path: Path, fmt: registry.Format, model: Model, x: np.ndarray, states: dict) -> tuple[Any, str]:
    """Every layer's output and final states, layers run one after the other over whole sequences (by the
    format's runtime, else the reference); or a string saying why this file cannot be run so."""
    runs = fmt.run_layers(path, model, x, states) if fmt.run_layers is not None else None
    if runs is None:
        return reference.run(model, x, states, sequences=True), "reference"
    return runs, fmt.name
