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
        if lay.row_major_blocks:  # cuDNN: the block's bytes, row by row, are the (H, fan_in) matrix
            want = stacked[:, k * hidden:(k + 1) * hidden].flatten().reshape(hidden, fan_in)
        elif lay.gate_axis == 1:
            want = stacked[:, k * hidden:(k + 1) * hidden].T
        else:
            want = stacked[k * hidden:(k + 1) * hidden]
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


def test_cudnn_blocks_as_tf_keras_converts_them(rng):
    # tf_keras' legacy loader turns a CuDNNLSTM's input-kernel block k into LSTM's as
    # k.T.reshape(k.shape, order="F") and a recurrent block into its transpose; LSTM's block is W.T.
    lay = layout("cudnn", "lstm")
    hidden, fan_in = 3, 5
    kernel = rng.normal(size=(fan_in, 4 * hidden))
    recurrent = rng.normal(size=(hidden, 4 * hidden))
    for k, gate in enumerate(lay.order):
        block = kernel[:, k * hidden:(k + 1) * hidden]
        np.testing.assert_array_equal(split(lay, kernel, hidden, "k")[gate].T, block.T.reshape(block.shape, order="F"))
        block = recurrent[:, k * hidden:(k + 1) * hidden]
        np.testing.assert_array_equal(split(lay, recurrent, hidden, "r")[gate].T, block.T)


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


@pytest.mark.parametrize("lay", list(LAYOUTS.values()), ids=lambda lay: f"{lay.framework}-{lay.kind}")
@pytest.mark.parametrize("reset_after", [True, False])
def test_biases_are_stored_as_the_layout_says(lay, reset_after, rng):
    from lstm_convert.gates import SEPARATE, SUMMED, bias_storage, join_bias, split_bias

    hidden, count = 3, len(lay.order)
    b_x = {g: rng.normal(size=hidden) for g in lay.order}
    b_h = {g: rng.normal(size=hidden) for g in lay.order}
    stored = join_bias(lay, b_x, b_h, reset_after=reset_after)
    storage = bias_storage(lay, reset_after)
    assert len(stored) == (2 if storage == SEPARATE else 1)
    got_x, got_h = split_bias(lay, stored, hidden, "b", reset_after=reset_after)
    for gate in lay.order:
        if storage == SUMMED:  # one vector: the sum, read back as b_x with zeros in b_h
            np.testing.assert_allclose(got_x[gate], b_x[gate] + b_h[gate], rtol=1e-15)
            assert not got_h[gate].any()
        else:
            np.testing.assert_array_equal(got_x[gate], b_x[gate])
            np.testing.assert_array_equal(got_h[gate], b_h[gate])
    # Where the input-side bias of the first block sits, by the framework's own description.
    first = lay.order[0]
    if lay.framework == "onnx":  # B = [Wb; Rb]
        assert stored[0].shape == (2 * count * hidden,)
        np.testing.assert_array_equal(stored[0][count * hidden:count * hidden + hidden], b_h[first])
    elif lay.framework == "keras" and lay.kind == "gru" and reset_after:  # rows: input-side, recurrent-side
        assert stored[0].shape == (2, count * hidden)
        np.testing.assert_array_equal(stored[0][1, :hidden], b_h[first])


def test_onnx_peepholes_and_activation_slots():
    from lstm_convert.gates import activation_attributes, join_peepholes, split_peepholes

    lay = layout("onnx", "lstm")
    stored = np.arange(6.0)  # P = [i, o, f], two units each
    vectors = split_peepholes(lay, stored, 2, "P")
    assert {g: list(v) for g, v in vectors.items()} == {"input": [0, 1], "output": [2, 3], "forget": [4, 5]}
    np.testing.assert_array_equal(join_peepholes(lay, vectors), stored)
    with pytest.raises(ShapeError, match="expected 6 peephole values"):
        split_peepholes(lay, np.zeros(4), 2, "P")
    # ONNX LSTM activations are f (the gates), g (the cell input), h (the output)
    assert activation_attributes(lay, ["sigmoid", "tanh", "tanh"]) == {"recurrent_activation": "sigmoid",
                                                                       "activation": "tanh"}
    with pytest.raises(UnsupportedError, match="the slots of activation hold 'tanh' and 'relu'"):
        activation_attributes(lay, ["sigmoid", "tanh", "relu"])
