"""Import optional frameworks on first use, naming the extra that provides them."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

_EXTRAS = {"torch": "torch", "keras": "keras", "h5py": "h5", "ml_dtypes": "bfloat16", "onnx": "onnx",
           "onnxruntime": "onnx", "matplotlib": "plot", "ai_edge_litert": "tflite", "jax": "jax", "flax": "jax",
           "equinox": "jax", "haiku": "jax"}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS.get(module.split(".")[0], "all")
        raise MissingDependencyError(
            f"{module} is needed for this and is not installed: "
            f"pip install 'lstm-convert[{extra}]'"
        ) from exc
