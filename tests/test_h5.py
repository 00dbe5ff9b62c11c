"""Legacy Keras .h5 model files: read with h5py alone, against Keras' own legacy writer and tf_keras."""

from __future__ import annotations

import warnings

import keras
import numpy as np

from lstm_convert import files


def _keras():
    """tf_keras, which writes the legacy files people have, where installed; else Keras 3's legacy writer."""
    try:
        import tf_keras
    except ImportError:
        return keras
    return tf_keras


def sample(directory, rng):
    """A legacy .h5 as tf.keras 2 saves it, for the conformance suite (test_formats.py)."""
    k = _keras()
    model = k.Sequential([k.Input((4, 3)), k.layers.GRU(2, return_sequences=True, name="gru"),
                          k.layers.Dense(2, name="dense")])
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in layer.get_weights()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(directory / "sample.h5")
    return directory / "sample.h5"


def test_weights_read_as_keras_holds_them(tmp_path, rng):
    path = sample(tmp_path, rng)
    loaded = _keras().models.load_model(path, compile=False)
    model = files.read(path)
    kernel, recurrent, bias = loaded.layers[0].get_weights()
    gru = model.layers[0]
    # Keras GRU blocks z, r, h; the (2, 3H) bias keeps the input-side row and the recurrent-side row apart.
    np.testing.assert_array_equal(gru.gate("reset").W_x, kernel[:, 2:4].T)
    np.testing.assert_array_equal(gru.gate("candidate").W_h, recurrent[:, 4:6].T)
    np.testing.assert_array_equal(gru.gate("update").b_h, bias[1, 0:2])
    assert model.layers[1].activation == "linear" and gru.return_sequences
