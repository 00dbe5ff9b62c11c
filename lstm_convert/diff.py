"""The difference between two models' canonical forms, gate by gate and role by role: ``lstm-convert diff A B``.

The layers are paired in order (a stacked layer against as many single ones, once stacks are split, when
the two files stack them differently); each pair's tensors are paired by their canonical names below the
layer (``l0.forward.input.W_x``), so that files of any two formats compare. For every tensor: whether it is
bit-identical (same dtype, shape and bytes), else its largest absolute and relative difference (NaN where
the other has a number counts as infinitely different); for every layer, the settings that differ (what
the layer computes: sizes, activations, ``return_sequences``, cell features, dtype) and for the model its
input. Names, provenance and framework settings that do not change the function are not differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._lazy import np
from .canonical import Layer, Model, RecurrentLayer

_IGNORED = ("name", "config", "source")  # of a layer's spec: not what it computes
# Rows that are no difference: a gate's two biases split otherwise but with the same sum (a framework that
# keeps one bias per gate sums them) compute the same function.
_SAME = ("bit-identical", "within atol", "same sum")


@dataclass
class Difference:
    """What :func:`diff` found: ``tensors`` (one row each), ``settings`` (layer, key, A's value, B's value),
    ``structure`` (sentences: layers only one side has); ``identical`` within ``atol``."""

    atol: float
    tensors: list[dict[str, Any]] = field(default_factory=list)
    settings: list[dict[str, Any]] = field(default_factory=list)
    structure: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.structure and not self.settings and all(row["status"] in _SAME for row in self.tensors)

    @property
    def bit_identical(self) -> bool:
        return self.identical and all(row["status"] == "bit-identical" for row in self.tensors)

    def as_dict(self) -> dict[str, Any]:
        return {"identical": self.identical, "bit_identical": self.bit_identical, "atol": self.atol,
                "structure": list(self.structure), "settings": list(self.settings), "tensors": list(self.tensors)}


def diff(a: Model | Layer, b: Model | Layer, *, atol: float = 0.0) -> Difference:
    """Compare two models (or layers) gate by gate and role by role; see the module's docstring."""
    model_a, model_b = (m if isinstance(m, Model) else Model((m,)) for m in (a, b))
    result = Difference(atol=float(atol))
    layers_a, layers_b = _paired(model_a, model_b)
    if len(layers_a) != len(layers_b):
        result.structure.append(f"A has {len(layers_a)} layers ({', '.join(l.name for l in layers_a)}), B has "
                                f"{len(layers_b)} ({', '.join(l.name for l in layers_b)})")
    for key in ("input_shape", "input_dtype", "batch_size"):
        va, vb = getattr(model_a, key), getattr(model_b, key)
        if va is not None and vb is not None and va != vb:
            result.settings.append({"layer": "model", "key": key, "a": _json(va), "b": _json(vb)})
    for la, lb in zip(layers_a, layers_b):
        if la.kind != lb.kind:
            result.structure.append(f"{la.name} is a {la.kind} layer in A, {lb.name} a {lb.kind} layer in B")
            continue
        spec_a, spec_b = _settings(la), _settings(lb)
        for key in sorted(set(spec_a) | set(spec_b)):
            if spec_a.get(key) != spec_b.get(key):
                result.settings.append({"layer": la.name, "key": key, "a": spec_a.get(key), "b": spec_b.get(key)})
        tensors_a, tensors_b = _tensors(la), _tensors(lb)
        for part in list(tensors_a) + [p for p in tensors_b if p not in tensors_a]:
            name = f"{la.name}.{part}"
            if part not in tensors_b or part not in tensors_a:
                side = "A" if part in tensors_a else "B"
                result.tensors.append({"tensor": name, "status": f"only in {side}", "max_abs": None, "max_rel": None})
                continue
            result.tensors.append({"tensor": name, **_compare(tensors_a[part], tensors_b[part], result.atol)})
        _same_sums(result, la.name, tensors_a, tensors_b)
    return result


def _same_sums(result: Difference, layer: str, a: dict, b: dict) -> None:
    """Mark a gate's differing ``b_x`` and ``b_h`` as ``same sum`` where ``b_x + b_h`` agree within atol."""
    rows = {row["tensor"]: row for row in result.tensors}
    for part in a:
        if not part.endswith(".b_x") or part[:-3] + "b_h" not in a or part not in b or part[:-3] + "b_h" not in b:
            continue
        pair = [rows.get(f"{layer}.{part}"), rows.get(f"{layer}.{part[:-3]}b_h")]
        if any(row is None or row["status"] not in ("differs", "bit-identical", "within atol") for row in pair) or \
                all(row["status"] != "differs" for row in pair):
            continue
        sum_a = np.asarray(a[part], np.float64) + np.asarray(a[part[:-3] + "b_h"], np.float64)
        sum_b = np.asarray(b[part], np.float64) + np.asarray(b[part[:-3] + "b_h"], np.float64)
        if sum_a.shape == sum_b.shape and float(np.abs(sum_a - sum_b).max(initial=0.0)) <= max(result.atol, _rounding(sum_a, a[part])):
            for row in pair:
                row["status"] = "same sum"


def _paired(a: Model, b: Model) -> tuple[list, list]:
    """The layers to pair: as the models list them, or split into single layers where they stack differently."""
    if [layer.kind for layer in a.layers] == [layer.kind for layer in b.layers] and all(
            getattr(x, "num_layers", 1) == getattr(y, "num_layers", 1) for x, y in zip(a.layers, b.layers)):
        return list(a.layers), list(b.layers)

    def units(model: Model) -> list:
        return [u for layer in model.layers for u in (layer.unstack() if isinstance(layer, RecurrentLayer) else [layer])]
    return units(a), units(b)


def _settings(layer: Layer) -> dict[str, Any]:
    spec = {k: v for k, v in layer.spec().items() if k not in _IGNORED}
    if isinstance(layer, RecurrentLayer):
        spec["cell_features"] = [f.split(" (")[0] for f in layer.cell_features()]
    return spec


def _tensors(layer: Layer) -> dict[str, Any]:
    """A layer's tensors by their names below the layer's own name."""
    return {name[len(layer.name) + 1:]: array for name, array in layer.tensors()}


def _compare(x: Any, y: Any, atol: float) -> dict[str, Any]:
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        return {"status": "shape", "shape_a": list(x.shape), "shape_b": list(y.shape), "max_abs": None,
                "max_rel": None}
    if x.dtype == y.dtype and np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes():
        return {"status": "bit-identical", "shape": list(x.shape), "max_abs": 0.0, "max_rel": 0.0}
    u, v = x.astype(np.float64), y.astype(np.float64)
    both_nan = np.isnan(u) & np.isnan(v)
    same_inf = np.isinf(u) & (u == v)
    delta = np.where(both_nan | same_inf, 0.0, np.abs(u - v))
    delta = np.where(np.isnan(delta), np.inf, delta)
    scale = np.abs(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(delta == 0, 0.0, delta / np.where(scale > 0, scale, 0.0))
    largest = float(delta.max()) if delta.size else 0.0
    rel = float(np.nan_to_num(relative, nan=np.inf, posinf=np.inf).max()) if relative.size else 0.0
    status = "within atol" if largest <= atol else "differs"
    if x.dtype != y.dtype and largest == 0.0:
        status = "within atol"  # the same values in another dtype: not the same bits
    return {"status": status, "shape": list(x.shape), "max_abs": largest, "max_rel": rel,
            **({"dtypes": [str(x.dtype), str(y.dtype)]} if x.dtype != y.dtype else {})}


def _rounding(total: Any, like: Any) -> float:
    """What summing two biases in the dtype of ``like`` may change: a unit in the last place of the sum."""
    dtype = np.asarray(like).dtype
    if dtype.kind != "f" or not np.size(total):
        return 0.0
    return float(np.spacing(dtype.type(np.abs(total).max())))


def _json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
