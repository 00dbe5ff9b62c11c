"""Keras 3 adapter against real Keras layers (TensorFlow backend), and cross-framework equivalence."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from conftest import (assert_same_run, inputs, random_keras_lstm, random_torch_lstm, randomize_keras, run_keras,
                      run_torch)

import lstm_convert as lc
from lstm_convert import reference
from lstm_convert.cli import main


def test_seed_case():
    inp = keras.Input((18, 7))
    lstm = keras.layers.LSTM(2)
    model = keras.Model(inp, keras.layers.Dense(5)(lstm(inp)))
    kernel, recurrent, bias = lstm.get_weights()
    assert (kernel.shape, recurrent.shape, bias.shape) == ((7, 8), (2, 8), (8,))
    assert lstm.count_params() == 80 and model.count_params() == 95
    weights = lc.from_keras(lstm)
    assert weights.gate_names == ("input", "forget", "cell", "output")
    for gate in weights.gate_names:
        assert weights.gate(gate).W_x.shape == (2, 7)
        assert weights.gate(gate).W_h.shape == (2, 2)
    assert weights.count_params("keras") == 80


def test_gates_land_where_keras_keeps_them(rng):
    layer = random_keras_lstm(rng, units=3)
    kernel, recurrent, bias = layer.get_weights()
    weights = lc.from_keras(layer)
    np.testing.assert_array_equal(weights.gate("cell").W_x, kernel[:, 6:9].T)  # c is block 2
    np.testing.assert_array_equal(weights.gate("forget").W_h, recurrent[:, 3:6].T)
    np.testing.assert_array_equal(weights.gate("output").b_x, bias[9:12])
    assert not weights.gate("output").b_h.any()


@pytest.mark.parametrize("options", [{}, {"use_bias": False}, {"dtype": "float64"}],
                         ids=["bias", "no-bias", "float64"])
def test_keras_round_trip_bit_identical(rng, options):
    layer = random_keras_lstm(rng, return_sequences=True, **options)
    back = lc.to_keras(lc.from_keras(layer))
    assert back.get_config()["return_sequences"] is True
    assert back.dtype == layer.dtype
    for a, b in zip(layer.get_weights(), back.get_weights(), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert lc.from_keras(back) == lc.from_keras(layer)


@pytest.mark.parametrize("use_bias", [True, False])
def test_keras_to_torch_and_reference(rng, use_bias):
    layer = random_keras_lstm(rng, features=7, units=3, use_bias=use_bias)
    weights = lc.from_keras(layer)
    module = lc.to_torch(weights)
    assert isinstance(module, torch.nn.LSTM) and module.batch_first
    x, h0, c0 = inputs(rng)
    expected = run_keras(layer, x, h0, c0)
    assert_same_run(run_torch(module, x, h0, c0), expected)
    seq, (h, c) = reference.forward(weights, x, (h0, c0), sequences=True)
    assert_same_run((seq, h, c), expected)


@pytest.mark.parametrize("bias", [True, False])
def test_torch_to_keras(rng, bias):
    module = random_torch_lstm(rng, bias=bias)
    layer = lc.to_keras(lc.from_torch(module))
    assert isinstance(layer, keras.layers.LSTM)
    x, h0, c0 = inputs(rng)
    assert_same_run(run_keras(layer, x, h0, c0), run_torch(module, x, h0, c0))
    # Keras' single bias is the sum of PyTorch's two.
    if bias:
        summed = (module.bias_ih_l0 + module.bias_hh_l0).detach().numpy()
        np.testing.assert_allclose(layer.get_weights()[2], summed, rtol=0, atol=1e-7)


@pytest.mark.parametrize("activation,recurrent", [("relu", "sigmoid"), ("tanh", "hard_sigmoid")])
def test_reference_follows_keras_activations(rng, activation, recurrent):
    layer = random_keras_lstm(rng, activation=activation, recurrent_activation=recurrent)
    weights = lc.from_keras(layer)
    x, h0, c0 = inputs(rng)
    seq, (h, c) = reference.forward(weights, x, (h0, c0), sequences=True)
    assert_same_run((seq, h, c), run_keras(layer, x, h0, c0))
    with pytest.raises(lc.UnsupportedError, match=r"no PyTorch module computes this layer"):
        lc.to_torch(weights)


def test_write_into_existing_layer(rng):
    source = random_keras_lstm(rng, units=3)
    target = keras.layers.LSTM(3, name="target")
    target.build((None, None, 7))
    assert lc.to_keras(lc.from_keras(source), target) is target
    for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    wrong = keras.layers.LSTM(3, name="wrong")
    wrong.build((None, None, 5))
    before = [w.copy() for w in wrong.get_weights()]
    with pytest.raises(lc.ShapeError, match=r"lstm.*kernel: the target Keras layer 'wrong' holds shape \(5, 12\), expected \(7, 12\)"):
        lc.to_keras(lc.from_keras(source), wrong)
    for a, b in zip(before, wrong.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # nothing half-written
    with pytest.raises(lc.ShapeError, match=r"has units=4, expected units=3"):
        lc.to_keras(lc.from_keras(source), keras.layers.LSTM(4))


def test_refusals_are_specific(rng):
    with pytest.raises(lc.ShapeError, match="the layer is not built"):
        lc.from_keras(keras.layers.LSTM(3, name="raw"))
    conv = keras.layers.Conv1DTranspose(3, 2, name="conv")
    conv.build((None, None, 7))
    with pytest.raises(lc.UnsupportedError, match=r"^conv: Keras layer Conv1DTranspose is not supported \(supported"):
        lc.from_keras(conv)

    def double(t):
        return t * 2

    custom = keras.layers.LSTM(3, activation=double)
    custom.build((None, None, 7))
    with pytest.raises(lc.UnsupportedError, match="is a custom function"):
        lc.from_keras(custom)
    projected = lc.from_torch(random_torch_lstm(rng, proj_size=2))
    with pytest.raises(lc.UnsupportedError, match=r"proj_size=2 \(weight_hr\) has no Keras equivalent; keep it in"):
        lc.to_keras(projected)
    backwards = lc.from_keras(random_keras_lstm(rng, go_backwards=True))
    with pytest.raises(lc.UnsupportedError, match=r"go_backwards=True \(reading the sequence from its end\) is not what "
                                                   r"an nn.LSTM computes on its own; convert the whole model"):
        lc.to_torch(backwards)
    gru = keras.layers.GRU(3, reset_after=False, name="old_gru")
    gru.build((None, None, 7))
    with pytest.raises(lc.UnsupportedError, match=r"^old_gru: a GRU with reset_after=False .* no nn.GRU computes"):
        lc.to_torch(lc.from_keras(gru))


def test_other_keras_backend(tmp_path):
    """The adapter uses only public Keras API, so the PyTorch backend works too (in its own process)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "torch_backend.py"
    script.write_text(
        "import keras, numpy as np, torch, lstm_convert as lc\n"
        "assert keras.backend.backend() == 'torch'\n"
        "rng = np.random.default_rng(7)\n"
        "layer = keras.layers.LSTM(3, return_sequences=True, return_state=True)\n"
        "layer.build((None, None, 5))\n"
        "layer.set_weights([rng.normal(0, .5, w.shape).astype('float32') for w in layer.get_weights()])\n"
        "weights = lc.from_keras(layer)\n"
        "assert weights.source['backend'] == 'torch'\n"
        "back = lc.to_keras(weights)\n"
        "assert all(a.tobytes() == b.tobytes() for a, b in zip(layer.get_weights(), back.get_weights()))\n"
        "x, h0, c0 = (rng.normal(size=s).astype('float32') for s in ((2, 4, 5), (2, 3), (2, 3)))\n"
        "seq, h, c = (np.asarray(t.detach()) for t in layer(x, initial_state=[h0, c0]))\n"
        "with torch.no_grad():\n"
        "    tseq, (th, tc) = lc.to_torch(weights)(torch.from_numpy(x),"
        " (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]))\n"
        "for a, b in ((seq, tseq), (h, th[0]), (c, tc[0])):\n"
        "    np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-5)\n"
        "print('ok')\n")
    env = dict(os.environ, KERAS_BACKEND="torch")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def sample(directory, rng):
    """A .keras file as Keras saves it, for the conformance suite (test_formats.py)."""
    model = keras.Sequential([keras.Input((4, 3)), keras.layers.LSTM(2, return_sequences=True, name="lstm"),
                              keras.layers.Dense(2, name="dense")])
    randomize_keras(model, rng)
    model.save(directory / "sample.keras")
    return directory / "sample.keras"


def test_time_distributed_dense_is_a_dense_on_every_step(tmp_path, rng):
    import warnings

    from lstm_convert import files
    from lstm_convert.verify import verify

    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, return_sequences=True, name="lstm"),
                              keras.layers.TimeDistributed(keras.layers.Dense(2, activation="tanh"), name="td")])
    randomize_keras(model, rng)
    model.save(tmp_path / "td.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(tmp_path / "td.h5")
    for name in ("td.keras", "td.h5"):
        read = files.read(tmp_path / name)
        dense = read.layers[1]
        kernel, bias = model.get_layer("td").get_weights()
        assert (dense.kind, dense.name, dense.activation) == ("dense", "td", "tanh")
        np.testing.assert_array_equal(dense.weight, kernel.T)
        np.testing.assert_array_equal(dense.bias, bias)
    files.convert(tmp_path / "td.keras", tmp_path / "td.pt", module=tmp_path / "td.py")
    result = verify(tmp_path / "td.keras", tmp_path / "td.pt")
    assert result.ok and result.runners == ("keras", "torch"), result.notes
    wrapped = keras.Sequential([keras.Input((5, 2, 3)), keras.layers.TimeDistributed(keras.layers.LSTM(2), name="tl")])
    wrapped.save(tmp_path / "wrapped.keras")
    with pytest.raises(lc.UnsupportedError, match=r"does not convert: tl \(TimeDistributed: layer/cell/vars/0"):
        files.read(tmp_path / "wrapped.keras")
    assert main(["inspect", str(tmp_path / "wrapped.keras")]) == 1  # nothing in it converts
