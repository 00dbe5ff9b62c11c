"""Recurrent variants through every file format: real files from Keras, tf_keras and PyTorch in tmp_path."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from conftest import assert_same_weights, random_torch_lstm, randomize_keras

import lstm_convert as lc
from lstm_convert import files
from lstm_convert.cli import main


@pytest.fixture
def keras_variants(tmp_path, rng):
    """A Keras model holding one of each Keras recurrent form, saved as .keras."""
    model = keras.Sequential([
        keras.Input((6, 7)),
        keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True), name="bi"),
        keras.layers.GRU(4, return_sequences=True, name="gru"),
        keras.layers.RNN(keras.layers.LSTMCell(3), return_sequences=True, name="cell"),
        keras.layers.Dropout(0.1),
        keras.layers.SimpleRNN(2, activation="relu", return_sequences=True, name="simple"),
        keras.layers.Dense(5, name="head"),
    ])
    path = tmp_path / "variants.keras"
    randomize_keras(model, rng).save(path)
    return path, model


def test_keras_variants_to_every_format(keras_variants, tmp_path):
    path, model = keras_variants
    read = files.read(path)
    assert [(layer.kind, getattr(layer, "directions", 1), getattr(layer, "cell", False)) for layer in read] == [
        ("lstm", 2, False), ("gru", 1, False), ("lstm", 1, True), ("rnn", 1, False), ("dense", 1, False)]
    assert_same_weights(read, lc.from_keras(model))
    assert read.count_params("keras") == model.count_params()
    for target in ("v.safetensors", "v.pt", "v_torch.safetensors"):
        extra = ["--to", "torch"] if target == "v_torch.safetensors" else []
        assert main(["convert", str(path), str(tmp_path / target), *extra]) == 0
        kinds = {"simple": "rnn_relu"} if target == "v.pt" else None  # a .pt cannot say it; our safetensors do
        result = lc.verify.verify(path, tmp_path / target, kinds=kinds)
        assert result.ok, result.rows
    state = torch.load(tmp_path / "v.pt", weights_only=True)
    assert "bi.weight_ih_l0_reverse" in state and "cell.weight_ih" in state and "gru.bias_hh_l0" in state
    assert main(["convert", str(tmp_path / "v.safetensors"), str(tmp_path / "back.keras")]) == 0
    back = keras.saving.load_model(tmp_path / "back.keras")
    x = np.random.default_rng(3).normal(size=(2, 6, 7)).astype("float32")
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(model(x)))
    assert main(["convert", str(tmp_path / "v.pt"), str(tmp_path / "from_pt.keras"),
                 "--kind", "simple=rnn_relu"]) == 0
    assert lc.verify.verify(tmp_path / "from_pt.keras", path).ok


class Stack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.GRU(7, 4, num_layers=2, bidirectional=True, batch_first=True)
        self.decoder = torch.nn.LSTM(8, 3, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(3, 2)


def test_torch_stacks_to_keras_file(tmp_path, rng):
    module = Stack()
    for p in module.parameters():
        with torch.no_grad():
            p.copy_(torch.from_numpy(rng.normal(0, 0.5, tuple(p.shape)).astype("float32")))
    torch.save(module.state_dict(), tmp_path / "stack.pt")
    assert main(["convert", str(tmp_path / "stack.pt"), str(tmp_path / "stack.keras")]) == 0
    loaded = keras.saving.load_model(tmp_path / "stack.keras")
    assert [type(layer).__name__ for layer in loaded.layers] == ["Bidirectional", "Bidirectional", "LSTM", "LSTM",
                                                                 "Dense"]
    x = rng.normal(size=(2, 5, 7)).astype("float32")
    with torch.no_grad():
        t = torch.from_numpy(x)
        expected = module.head(module.decoder(module.encoder(t)[0])[0]).numpy()
    np.testing.assert_allclose(np.asarray(loaded(x)), expected, rtol=0, atol=1e-5)
    result = lc.verify.verify(tmp_path / "stack.pt", tmp_path / "stack.keras")
    assert result.ok and [r["layer"] for r in result.rows if r["part"] == "output"] == ["model", "encoder", "decoder", "head"]


def test_projection_through_files(tmp_path, rng):
    module = random_torch_lstm(rng, input_size=7, hidden_size=4, proj_size=2, bidirectional=True)
    torch.save(module.state_dict(), tmp_path / "p.pt")
    files.convert(tmp_path / "p.pt", tmp_path / "p.safetensors")
    files.convert(tmp_path / "p.safetensors", tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert list(back) == list(module.state_dict())
    assert all(torch.equal(back[k], v) for k, v in module.state_dict().items())
    assert lc.verify.verify(tmp_path / "p.pt", tmp_path / "p.safetensors").ok
    with pytest.raises(lc.UnsupportedError, match=r"proj_size=2 \(weight_hr\) has no Keras equivalent"):
        files.convert(tmp_path / "p.pt", tmp_path / "p.keras")
    assert not (tmp_path / "p.keras").exists()


def test_rnn_nonlinearity_must_be_said(tmp_path, rng):
    torch.save(random_torch_lstm(rng, module="RNN").state_dict(), tmp_path / "rnn.pt")
    with pytest.raises(lc.FormatError, match=r"an nn.RNN's nonlinearity \(tanh or relu\) is not in its state dict"):
        files.read(tmp_path / "rnn.pt")
    assert files.read(tmp_path / "rnn.pt", kinds={"": "rnn_relu"}).layers[0].activation == "relu"


def test_legacy_h5_variants(tmp_path, rng):
    import tf_keras  # pip install --no-deps tf_keras (see README)

    model = tf_keras.Sequential([
        tf_keras.layers.Bidirectional(tf_keras.layers.LSTM(3, return_sequences=True), input_shape=(6, 7)),
        tf_keras.layers.GRU(4, return_sequences=True),
        tf_keras.layers.GRU(2, reset_after=False, return_sequences=True),
        tf_keras.layers.RNN(tf_keras.layers.LSTMCell(3)),
    ])
    randomize_keras(model, rng)
    model.save(tmp_path / "old.h5")
    read = files.read(tmp_path / "old.h5")
    assert [(layer.kind, layer.directions, layer.reset_after) for layer in read] == [
        ("lstm", 2, True), ("gru", 1, True), ("gru", 1, False), ("lstm", 1, True)]
    assert read.count_params("keras") == model.count_params()
    from lstm_convert.reference import run
    x = rng.normal(size=(2, 6, 7)).astype("float32")
    np.testing.assert_allclose(run(read, x)[-1][0], model(x).numpy(), rtol=0, atol=1e-5)
    assert main(["convert", str(tmp_path / "old.h5"), str(tmp_path / "new.keras")]) == 0
    new = keras.saving.load_model(tmp_path / "new.keras")
    np.testing.assert_allclose(np.asarray(new(x)), model(x).numpy(), rtol=0, atol=1e-5)
    with pytest.raises(lc.UnsupportedError, match=r"reset_after=False .* no nn.GRU computes"):
        files.convert(tmp_path / "old.h5", tmp_path / "old.pt")
    assert not (tmp_path / "old.pt").exists()


TORCH_MODULES = {
    "gru-bidirectional": {"module": "GRU", "bidirectional": True},
    "rnn-relu-stacked": {"module": "RNN", "nonlinearity": "relu", "num_layers": 2},
    "lstm-no-bias-time-major": {"bias": False, "batch_first": False},
    "lstm-cell": {"module": "LSTMCell"},
    "gru-cell": {"module": "GRUCell"},
    "rnn-cell": {"module": "RNNCell", "nonlinearity": "tanh"},
}


@pytest.mark.parametrize("options", TORCH_MODULES.values(), ids=TORCH_MODULES.keys())
def test_torch_files_to_keras_files_and_back(tmp_path, rng, options):
    module = random_torch_lstm(rng, input_size=7, hidden_size=3, **options)
    torch.save(module.state_dict(), tmp_path / "m.pt")
    kind = ["--kind", f"={'rnn_' + module.nonlinearity}"] if hasattr(module, "nonlinearity") else []
    assert main(["convert", str(tmp_path / "m.pt"), str(tmp_path / "m.keras"), *kind]) == 0
    keras.saving.load_model(tmp_path / "m.keras")
    kinds = {p: f"rnn_{module.nonlinearity}" for p in ("", "rnn", "rnn_l1")} if kind else None
    result = lc.verify.verify(tmp_path / "m.pt", tmp_path / "m.keras", kinds=kinds)
    assert result.runners == ("torch", "keras") and result.ok, result.rows
    assert main(["convert", str(tmp_path / "m.keras"), str(tmp_path / "back.pt")]) == 0
    assert lc.verify.verify(tmp_path / "m.keras", tmp_path / "back.pt", kinds=kinds).ok
