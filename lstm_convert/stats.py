"""Statistics of weights, gate by gate and role by role: what ``lstm-convert inspect --stats`` shows.

For every tensor of the canonical form: its shape, mean, standard deviation, min, max, L2 norm, the fraction
of exact zeros, and how many values are NaN or infinite (the moments are over the finite values), computed
in one pass over the tensor in pieces of at most a million values, each piece's moments merged into the
running ones (Chan's pairwise update, in float64), so a memory-mapped file is read once and never held
whole. Per gate, the bias a framework applies (``b_x + b_h``) summarised, and the spectral norm (largest
singular value) of each recurrent matrix ``W_h``: by Golub-Kahan-Lanczos bidiagonalisation until the
estimate moves less than one part in 10^13 (about 60 steps for a random 1024 x 1024 matrix, a tenth of an
SVD's time), with an exact SVD for small matrices and where the iteration is slow to settle.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from ._lazy import np
from .canonical import Layer, Model, RecurrentLayer

_PIECE = 1 << 20  # values per piece
_SVD_BELOW = 256  # matrices with fewer rows or columns get an exact SVD
_LANCZOS_STEPS = 400  # at most, before an exact SVD; a random 1024 x 1024 matrix settles in about 60
KEYS = ("mean", "std", "min", "max", "l2", "zeros", "nan", "inf")


def tensor_stats(array: Any) -> dict[str, Any]:
    """``shape`` and :data:`KEYS` of one array, in one pass over it (NaN and infinity counted, left out of
    the moments; ``zeros`` is a fraction of all values)."""
    flat = np.asarray(array).reshape(-1)
    count = mean = m2 = 0.0
    low, high, zeros, nans, infs, square = math.inf, -math.inf, 0, 0, 0, 0.0
    for start in range(0, flat.size, _PIECE):
        piece = flat[start:start + _PIECE].astype(np.float64)
        finite = np.isfinite(piece)
        bad = piece.size - int(finite.sum())
        if bad:
            nans += int(np.isnan(piece).sum())
            infs += bad - int(np.isnan(piece).sum())
            piece = piece[finite]
        zeros += int((piece == 0).sum())
        if not piece.size:
            continue
        n = float(piece.size)
        piece_mean = float(piece.mean())
        centred = piece - piece_mean
        piece_m2 = float(centred @ centred)
        delta = piece_mean - mean
        total = count + n
        mean += delta * n / total
        m2 += piece_m2 + delta * delta * count * n / total
        count = total
        square += float(piece @ piece)
        low, high = min(low, float(piece.min())), max(high, float(piece.max()))
    size = int(flat.size)
    return {"shape": list(np.shape(array)), "mean": mean if count else None,
            "std": math.sqrt(m2 / count) if count else None, "min": low if count else None,
            "max": high if count else None, "l2": math.sqrt(square), "zeros": zeros / size if size else 0.0,
            "nan": nans, "inf": infs}


def spectral_norm(matrix: Any) -> float:
    """The largest singular value of a 2-D matrix (see the module's docstring); NaN if it holds NaN or
    infinity."""
    w = np.asarray(matrix, dtype=np.float64)
    if not w.size:
        return 0.0
    if not np.all(np.isfinite(w)):
        return math.nan
    if min(w.shape) < _SVD_BELOW:
        return float(np.linalg.svd(w, compute_uv=False)[0])
    found = _lanczos(w, min(_LANCZOS_STEPS, min(w.shape) - 1))
    return found if found is not None else float(np.linalg.svd(w, compute_uv=False)[0])


def _lanczos(w: Any, limit: int) -> float | None:
    """Golub-Kahan-Lanczos bidiagonalisation of ``w`` from a seeded start, fully reorthogonalised: the largest
    singular value of the small bidiagonal matrix, once it moves less than one part in 10^13 between checks;
    None if it has not settled after ``limit`` steps."""
    m, n = w.shape
    us, vs = np.zeros((limit + 2, m)), np.zeros((limit + 2, n))
    v = np.random.default_rng(0).normal(size=n)
    vs[0] = v / np.linalg.norm(v)
    u = w @ vs[0]
    alphas, betas = [float(np.linalg.norm(u))], []
    if alphas[0] == 0.0:
        return 0.0
    us[0] = u / alphas[0]
    estimate = alphas[0]
    for k in range(limit):
        r = w.T @ us[k] - alphas[-1] * vs[k]
        r -= vs[:k + 1].T @ (vs[:k + 1] @ r)
        beta = float(np.linalg.norm(r))
        if beta <= 1e-14 * estimate:  # the Krylov space is whole: the small matrix's value is exact
            break
        vs[k + 1] = r / beta
        p = w @ vs[k + 1] - beta * us[k]
        p -= us[:k + 1].T @ (us[:k + 1] @ p)
        betas.append(beta)
        alpha = float(np.linalg.norm(p))
        alphas.append(alpha)
        if alpha <= 1e-14 * estimate:
            break
        us[k + 1] = p / alpha
        if k % 4 == 3:
            new = _bidiagonal_top(alphas, betas)
            if abs(new - estimate) <= 1e-13 * new:
                return new
            estimate = new
    else:
        return None
    return _bidiagonal_top(alphas, betas)


def _bidiagonal_top(alphas: list[float], betas: list[float]) -> float:
    b = np.diag(alphas) + (np.diag(betas, 1) if betas else 0.0)
    return float(np.linalg.svd(b, compute_uv=False)[0])


def layer_stats(layer: Layer) -> dict[str, Any]:
    """One layer's statistics: ``tensors`` (one row per canonical tensor, with its gate and role where it
    has them) and, for a recurrent layer, ``gates`` (per stacked layer, direction and gate: the bias it
    applies summarised, and the spectral norm of ``W_h``)."""
    rows = []
    for name, array in layer.tensors():
        row = {"tensor": name, **_parts(layer, name), **tensor_stats(array)}
        rows.append(row)
    out: dict[str, Any] = {"name": layer.name, "kind": layer.kind, "tensors": rows}
    if isinstance(layer, RecurrentLayer):
        gates = []
        for index, direction, gate in layer.keys():
            g = layer.gates[(index, direction, gate)]
            bias = None
            if g.b_x is not None:
                applied = g.b_x.astype(np.float64) + g.b_h.astype(np.float64)
                if gate == "forget" and layer.forget_bias:
                    applied = applied + layer.forget_bias
                bias = {k: v for k, v in tensor_stats(applied).items() if k in ("mean", "min", "max")}
            norm = spectral_norm(g.W_h)
            gates.append({"layer": index, "direction": direction, "gate": gate, "bias": bias,
                          "spectral_norm_W_h": None if math.isnan(norm) else norm})  # None: W_h holds NaN or inf
        out["gates"] = gates
    return out


def model_stats(model: Model | Layer) -> list[dict[str, Any]]:
    """Every layer's :func:`layer_stats`, in order."""
    layers = model.layers if isinstance(model, Model) else (model,)
    return [layer_stats(layer) for layer in layers]


def _parts(layer: Layer, name: str) -> dict[str, Any]:
    """The stacked layer, direction, gate and role a canonical tensor name says (``lstm.l0.forward.input.W_x``)."""
    rest = name[len(layer.name) + 1:].split(".")
    if isinstance(layer, RecurrentLayer) and len(rest) == 4 and rest[0].startswith("l"):
        return {"layer": int(rest[0][1:]), "direction": rest[1], "gate": rest[2], "role": rest[3]}
    return {"role": rest[-1]}


def rows(stats: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(layer name, tensor row)`` for every tensor of :func:`model_stats`."""
    for layer in stats:
        for row in layer["tensors"]:
            yield layer["name"], row
