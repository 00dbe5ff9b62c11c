"""Every recurrent variant between real Keras and real PyTorch objects, both ways, against the reference."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from conftest import assert_same_run, random_torch_lstm, run_keras, run_torch

import lstm_convert as lc
from lstm_convert import reference

FEATURES, UNITS, BATCH, STEPS = 7, 3, 3, 6


def _keras(rng, build, features=FEATURES):
    """A built Keras layer or cell with every weight random (biases included)."""
    layer = build()
    cell = type(layer).__name__.endswith("Cell")
    layer.build((None, features) if cell else (None, None, features))
    layer.set_weights([rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in layer.get_weights()])
    return layer


def _data(rng, weights):
    x = rng.normal(size=(BATCH, STEPS, weights.input_size)).astype("float32")
    slots = weights.num_layers * weights.directions
    sizes = {"h": weights.state_size, "c": weights.hidden_size}
    states = [rng.normal(size=(slots, BATCH, sizes[n])).astype("float32") for n in weights.state_names]
    return x, states


KERAS_TO_TORCH = {
    "gru": lambda: keras.layers.GRU(UNITS),
    "gru-no-bias": lambda: keras.layers.GRU(UNITS, use_bias=False),
    "simple-rnn-tanh": lambda: keras.layers.SimpleRNN(UNITS),
    "simple-rnn-relu": lambda: keras.layers.SimpleRNN(UNITS, activation="relu"),
    "bidirectional-lstm": lambda: keras.layers.Bidirectional(keras.layers.LSTM(UNITS)),
    "bidirectional-gru": lambda: keras.layers.Bidirectional(keras.layers.GRU(UNITS, use_bias=False)),
    "rnn-of-lstm-cell": lambda: keras.layers.RNN(keras.layers.LSTMCell(UNITS)),
    "lstm-cell": lambda: keras.layers.LSTMCell(UNITS),
    "gru-cell": lambda: keras.layers.GRUCell(UNITS),
    "simple-rnn-cell": lambda: keras.layers.SimpleRNNCell(UNITS),
}


@pytest.mark.parametrize("build", KERAS_TO_TORCH.values(), ids=KERAS_TO_TORCH.keys())
def test_keras_to_torch_and_back(rng, build):
    layer = _keras(rng, build)
    weights = lc.from_keras(layer)
    module = lc.to_torch(weights)
    x, states = _data(rng, weights)
    expected = run_keras(layer, x, *states)
    assert_same_run(run_torch(module, x, *states), expected)
    seq, finals = reference.forward(weights, x, tuple(states), sequences=True)
    assert_same_run((seq, *finals), expected)
    back = lc.to_keras(weights)
    assert type(back) is type(layer)
    for a, b in zip(layer.get_weights(), back.get_weights(), strict=True):
        assert a.tobytes() == b.tobytes()  # Keras -> canonical -> Keras is bit-exact


TORCH_TO_KERAS = {
    "gru": {"module": "GRU"},
    "gru-bidirectional": {"module": "GRU", "bidirectional": True},
    "rnn-relu": {"module": "RNN", "nonlinearity": "relu"},
    "lstm-bidirectional-no-bias": {"bidirectional": True, "bias": False},
    "lstm-time-major": {"batch_first": False},
    "lstm-cell": {"module": "LSTMCell"},
    "gru-cell": {"module": "GRUCell"},
    "rnn-cell": {"module": "RNNCell"},
}


@pytest.mark.parametrize("options", TORCH_TO_KERAS.values(), ids=TORCH_TO_KERAS.keys())
def test_torch_to_keras_and_back(rng, options):
    module = random_torch_lstm(rng, input_size=FEATURES, hidden_size=UNITS, **options)
    weights = lc.from_torch(module)
    layer = lc.to_keras(weights)
    x, states = _data(rng, weights)
    expected = run_torch(module, x, *states)
    assert_same_run(run_keras(layer, x, *states), expected)
    again = lc.from_keras(layer)
    back = lc.to_torch(again)
    state, original = back.state_dict(), module.state_dict()
    for key, value in original.items():
        if options.get("module") in ("GRU", "GRUCell") or "weight" in key:  # Keras keeps both GRU biases
            assert torch.equal(state[key], value), key
        elif "bias_ih" in key:  # elsewhere Keras keeps their sum, which comes back as bias_ih
            other = key.replace("bias_ih", "bias_hh")
            np.testing.assert_allclose(state[key], value + original[other], rtol=0, atol=1e-6)
            assert not state[other].any()


def test_stacked_lstm_becomes_keras_layers(rng):
    module = random_torch_lstm(rng, input_size=FEATURES, hidden_size=UNITS, num_layers=3, batch_first=True)
    weights = lc.from_torch(module)
    layers = lc.to_keras(weights)
    assert [layer.name for layer in layers] == ["lstm", "lstm_l1", "lstm_l2"]
    assert all(layer.get_config()["return_sequences"] for layer in layers)
    x, (h0, c0) = _data(rng, weights)
    expected = run_torch(module, x, h0, c0)
    out, hs, cs = x, [], []
    for k, layer in enumerate(layers):
        out, h, c = run_keras(layer, out, h0[k:k + 1], c0[k:k + 1])
        hs.append(h[0])
        cs.append(c[0])
    assert_same_run((out, np.stack(hs), np.stack(cs)), expected)


@pytest.mark.parametrize("build", [lambda: keras.layers.LSTM(UNITS, go_backwards=True),
                                   lambda: keras.layers.GRU(UNITS, reset_after=False),
                                   lambda: keras.layers.GRU(UNITS, reset_after=False, go_backwards=True),
                                   lambda: keras.layers.SimpleRNN(UNITS, activation="softsign")],
                         ids=["lstm-go-backwards", "gru-reset-before", "gru-reset-before-backwards", "rnn-softsign"])
def test_keras_only_variants_run_in_the_reference_and_round_trip(rng, build):
    layer = _keras(rng, build)
    weights = lc.from_keras(layer)
    x, states = _data(rng, weights)
    seq, finals = reference.forward(weights, x, tuple(states), sequences=True)
    assert_same_run((seq, *finals), run_keras(layer, x, *states))
    back = lc.to_keras(weights)
    assert back.get_config() | {"name": None} == layer.get_config() | {"name": None}
    with pytest.raises(lc.UnsupportedError, match=f"^{weights.name}: "):
        lc.to_torch(weights)


def test_bidirectional_merge_modes(rng):
    layer = _keras(rng, lambda: keras.layers.Bidirectional(keras.layers.LSTM(UNITS), merge_mode="sum"))
    weights = lc.from_keras(layer)
    assert weights.merge_mode == "sum" and weights.output_size == UNITS
    x, states = _data(rng, weights)
    seq, finals = reference.forward(weights, x, tuple(states), sequences=True)
    assert_same_run((seq, *finals), run_keras(layer, x, *states))
    with pytest.raises(lc.UnsupportedError, match=r"merge_mode='sum', but a bidirectional nn.LSTM concatenates"):
        lc.to_torch(weights)
    assert lc.to_keras(weights).get_config()["merge_mode"] == "sum"


def test_projection_held_and_run(rng, tmp_path):
    module = random_torch_lstm(rng, input_size=FEATURES, hidden_size=4, proj_size=2, num_layers=2)
    weights = lc.from_torch(module)
    assert weights.proj_size == 2 and weights.gate("cell", 1).W_x.shape == (4, 2)
    assert [name for name, _ in weights.tensors() if name.endswith("W_hr")] == [
        "lstm.l0.forward.projection.W_hr", "lstm.l1.forward.projection.W_hr"]
    loaded = lc.load(lc.save(weights, tmp_path / "p.safetensors"))
    assert loaded == weights
    back = lc.to_torch(loaded)
    for key, value in module.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_counts_agree_with_the_frameworks(rng):
    cases = [(lambda: keras.layers.GRU(4), 156), (lambda: keras.layers.GRU(4, reset_after=False), 144),
             (lambda: keras.layers.Bidirectional(keras.layers.LSTM(3)), 264)]
    for build, count in cases:
        layer = _keras(rng, build)
        assert layer.count_params() == count
        assert lc.from_keras(layer).count_params("keras") == count
    module = torch.nn.LSTM(7, 2)
    assert lc.from_torch(module).count_params("torch") == sum(p.numel() for p in module.parameters()) == 88
