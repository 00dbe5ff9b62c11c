"""One module per framework or file format, each a symmetric ``read`` / ``write`` pair."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UnsupportedError

if TYPE_CHECKING:
    from ..canonical import RecurrentLayer


def cell_features_reason(layer: RecurrentLayer, target: str) -> str | None:
    """Why ``target`` (say "Haiku module") cannot hold ``layer``'s projection or cell features; None if it has
    none of them."""
    features = (["a projection"] if layer.proj_size else []) + layer.cell_features()
    return f"{layer.name}: {', '.join(features)} of this layer: no {target} computes them" if features else None


def refuse_cell_features(layer: RecurrentLayer, target: str) -> None:
    """UnsupportedError if ``layer`` has cell features (:meth:`RecurrentLayer.cell_features`: read from ONNX or TensorFlow)
    that ``target`` (say ``nn.LSTM``, or Keras) lacks."""
    features = layer.cell_features()
    if features and layer.cell_clip is not None:
        raise UnsupportedError(f"{layer.name}: {', '.join(features)} of this layer have no {target} equivalent; keep "
                               f"it in a safetensors archive or a .tflite file, or drop the clip with --set "
                               f"{layer.name}.cell_clip=none if the cell state never reaches it")
    if features:
        raise UnsupportedError(f"{layer.name}: {', '.join(features)} of this layer have no {target} "
                               "equivalent; keep it in a safetensors archive, or in ONNX")
