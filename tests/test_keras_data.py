""".keras files written as data, without Keras: laid out as Keras lays out its own (every group and dataset,
shapes included), loaded by keras.saving.load_model, and computing what the source model computes."""

from __future__ import annotations

import io
import zipfile

import h5py
import keras
import numpy as np
import pytest

from conftest import randomize_keras
from lstm_convert import files
from lstm_convert.adapters import keras as keras_adapter
from lstm_convert.adapters import keras_data


def _datasets(path) -> dict[str, tuple]:
    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as store:
        out = {}
        store.visititems(lambda name, obj: out.__setitem__(name, obj.shape if isinstance(obj, h5py.Dataset) else None))
        return out


MODELS = {
    "around": lambda: [keras.Input((9, 6)), keras.layers.Conv1D(5, 3, padding="causal", name="conv"),
                       keras.layers.BatchNormalization(name="bn"), keras.layers.LayerNormalization(name="ln"),
                       keras.layers.Activation("tanh", name="act"),
                       keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), name="bi"),
                       keras.layers.GRU(3, reset_after=False, return_sequences=True, name="gru"),
                       keras.layers.SimpleRNN(2, activation="relu", go_backwards=True, name="rnn"),
                       keras.layers.Dense(3, use_bias=False, name="head")],
    "repeated": lambda: [keras.Input((7, 3)), keras.layers.Masking(0.0, name="mask"), keras.layers.LSTM(4, return_sequences=True, name="first"),
                         keras.layers.LSTM(5, return_sequences=True, name="second"),
                         keras.layers.RNN(keras.layers.GRUCell(2), return_sequences=True, name="cell"),
                         keras.layers.Dense(2, name="d1"), keras.layers.Dense(2, activation="softmax", name="d2"),
                         keras.layers.GlobalAveragePooling1D(name="pool")],
    "embedding": lambda: [keras.Input((6,), dtype="int32"),
                          keras.layers.Embedding(11, 4, mask_zero=True, name="embed"),
                          keras.layers.LSTM(3, name="lstm"), keras.layers.Dense(2, name="out")],
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_written_as_keras_writes_it(name, tmp_path, rng):
    source = keras.Sequential(MODELS[name](), name="sequential")
    randomize_keras(source, rng)
    source.save(tmp_path / "source.keras")
    model = files.read(tmp_path / "source.keras")
    ours = tmp_path / "ours.keras"
    keras_data.write(model, ours)
    theirs = tmp_path / "theirs.keras"
    keras_adapter.write(model).save(theirs)  # the same layers, saved by Keras itself
    assert _datasets(ours) == _datasets(theirs)
    loaded = keras.saving.load_model(ours)
    if name == "embedding":
        x = rng.integers(0, 11, size=(3, 6)).astype("int32")
        x[0, 3:] = 0  # padded steps, masked by mask_zero
    else:
        x = rng.normal(size=(3, *source.input_shape[1:])).astype("float32")
        if name == "repeated":
            x[1, 5:] = 0.0  # masked steps
    expected = np.asarray(source(x))
    got = np.asarray(loaded(x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    for layer_ours, layer_keras in zip(loaded.layers, source.layers, strict=True):
        for a, b in zip(layer_ours.get_weights(), layer_keras.get_weights(), strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), layer_keras.name
    assert files.read(ours) == files.read(ours)  # and reads back
    assert ours.read_bytes() == (keras_data.write(model, tmp_path / "again.keras"),
                                 (tmp_path / "again.keras").read_bytes())[1]  # the same bytes every time
