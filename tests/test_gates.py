"""Gate layouts: split and join are inverse, blocks land on the named gate, bad sizes are named."""

from __future__ import annotations

import numpy as np
import pytest

from lstm_convert.errors import ShapeError, UnsupportedError
from lstm_convert.gates import GATES, LAYOUTS, gate_table, join, layout, split


@pytest.mark.parametrize("lay", list(LAYOUTS.values()), ids=lambda lay: f"{lay.framework}-{lay.kind}")
def test_split_join_inverse_and_labelled(lay, rng):
    hidden, fan_in, count = 3, 5, len(lay.order)
    shape = (fan_in, count * hidden) if lay.gate_axis == 1 else (count * hidden, fan_in)
    stacked = rng.normal(size=shape)
    blocks = split(lay, stacked, hidden, "w")
    assert set(blocks) == set(GATES[lay.kind])
    for k, gate in enumerate(lay.order):
        assert blocks[gate].shape == (hidden, fan_in)
        want = stacked[:, k * hidden:(k + 1) * hidden].T if lay.gate_axis == 1 else stacked[k * hidden:(k + 1) * hidden]
        np.testing.assert_array_equal(blocks[gate], want)
    np.testing.assert_array_equal(join(lay, blocks), stacked)
    bias = rng.normal(size=count * hidden)
    np.testing.assert_array_equal(join(lay, split(lay, bias, hidden, "b")), bias)


def test_known_orders():
    # The published orders: LSTM Keras i, f, c, o and PyTorch i, f, g, o; GRU Keras z, r, h and PyTorch r, z, n.
    assert layout("keras", "lstm").symbols == ("i", "f", "c", "o")
    assert layout("torch", "lstm").symbols == ("i", "f", "g", "o")
    assert layout("torch", "lstm").order == layout("keras", "lstm").order == GATES["lstm"]
    assert layout("keras", "gru").order == ("update", "reset", "candidate")
    assert layout("torch", "gru").order == ("reset", "update", "candidate")
    assert (layout("keras", "gru").symbols, layout("torch", "gru").symbols) == (("z", "r", "h"), ("r", "z", "n"))
    assert layout("onnx", "lstm").symbols == ("i", "o", "f", "c") and layout("onnx", "gru").symbols == ("z", "r", "h")


def test_bad_size_is_named():
    with pytest.raises(ShapeError) as err:
        split(layout("torch", "lstm"), np.zeros((10, 7)), 2, "lstm.weight_ih_l0")
    assert str(err.value) == ("lstm.weight_ih_l0: expected 8 along axis 0 (4 gates x 2 units), "
                              "got shape (10, 7)")
    with pytest.raises(UnsupportedError, match="tflite has no lstm layout"):
        layout("tflite", "lstm")


def test_gate_table_lists_every_gate():
    table = gate_table()
    assert "| cell | c `[:, 2H:3H]` | g `[2H:3H]` |" in table
