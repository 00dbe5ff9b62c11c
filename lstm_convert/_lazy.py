"""What stands in for NumPy until values are needed: ``np``, the module imported on first use, and
:class:`Placeholder`, a tensor known by its shape and dtype alone.

``lstm-convert --help`` and ``inspect`` of a safetensors file read no values, and NumPy's import (0.05 to
0.4 s) would be most of their time. The modules on that path write ``from ._lazy import np``; a placeholder
answers what the canonical classes and the layout code ask of a tensor they only check (``shape``,
``ndim``, ``size``, ``dtype``, slicing) and refuses anything that needs values.
"""

from __future__ import annotations

import importlib
import math
from typing import Any


class _Module:
    """A module imported when one of its attributes is first read."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(importlib.import_module(self._name), attr)
        setattr(self, attr, value)  # later reads find it on the instance
        return value


np: Any = _Module("numpy")

ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1, "int16": 2,
             "uint16": 2, "int32": 4, "uint32": 4, "int64": 8, "uint64": 8, "bool": 1}


class DType:
    """A dtype by name, equal to another of the same name (and to NumPy's, compared by name)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    itemsize = property(lambda self: ITEMSIZE[self.name])
    kind = property(lambda self: "f" if "float" in self.name else "b" if self.name == "bool" else
                    "u" if self.name.startswith("u") else "i")

    def __eq__(self, other: object) -> bool:
        return getattr(other, "name", other) == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__


class Placeholder:
    """A read-only tensor of ``shape`` and ``dtype`` whose values were never read: what ``inspect`` builds
    a model of. Basic slicing gives a placeholder of the resulting shape; anything that needs
    values (arithmetic, NumPy functions, iteration) raises TypeError."""

    __slots__ = ("shape", "dtype")
    __array_ufunc__ = None  # NumPy operators refuse a placeholder instead of making an object array

    def __init__(self, shape: tuple[int, ...], dtype: str | DType):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype if isinstance(dtype, DType) else DType(dtype)

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: math.prod(self.shape))

    def __getitem__(self, key: Any) -> Placeholder:
        keys = key if isinstance(key, tuple) else (key,)
        if len(keys) > len(self.shape):
            raise IndexError(f"too many indices for a placeholder of shape {self.shape}")
        shape = []
        for k, size in zip(keys, self.shape):
            if isinstance(k, slice):
                shape.append(len(range(*k.indices(size))))
            elif isinstance(k, int) and -size <= k < size:
                continue
            else:
                raise IndexError(f"index {k!r} of a placeholder of shape {self.shape}")
        return Placeholder((*shape, *self.shape[len(keys):]), self.dtype)

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"a placeholder of shape {self.shape} holds no values (read the file without header_only)")

    def __repr__(self) -> str:
        return f"Placeholder({self.shape}, {self.dtype})"


def zeros_like(array: Any) -> Any:
    """Zeros of ``array``'s shape and dtype (a placeholder for a placeholder)."""
    if isinstance(array, Placeholder):
        return array
    return np.zeros_like(array)


def asarray(array: Any) -> Any:
    """``np.asarray``, passing a placeholder through."""
    return array if isinstance(array, Placeholder) else np.asarray(array)


def concatenate(arrays: list[Any], axis: int = 0) -> Any:
    """``np.concatenate``; of placeholders, a placeholder of the joined shape."""
    if not any(isinstance(a, Placeholder) for a in arrays):
        return np.concatenate(arrays, axis=axis)
    first = arrays[0].shape
    axis = axis % len(first)
    if any(len(a.shape) != len(first) or a.shape[:axis] + a.shape[axis + 1:] != first[:axis] + first[axis + 1:]
           for a in arrays):
        raise ValueError(f"cannot join shapes {[a.shape for a in arrays]} along axis {axis}")
    joined = (*first[:axis], sum(a.shape[axis] for a in arrays), *first[axis + 1:])
    return Placeholder(joined, arrays[0].dtype)


def stack(arrays: list[Any]) -> Any:
    """``np.stack`` along a new first axis; of placeholders, a placeholder."""
    if not any(isinstance(a, Placeholder) for a in arrays):
        return np.stack(arrays)
    return Placeholder((len(arrays), *arrays[0].shape), arrays[0].dtype)


def filled(size: int, like: Any, value: float) -> Any:
    """A vector of ``size`` values ``value`` in ``like``'s dtype (a placeholder beside a placeholder)."""
    if isinstance(like, Placeholder):
        return Placeholder((size,), like.dtype)
    return np.full(size, value, dtype=like.dtype)
