"""A published model with a recurrent layer, from a package: silero-vad's voice-activity detector, shipped as
TorchScript, ONNX (its LSTM inside If branches, its weights computed from constants) and safetensors, with
convolutions and an STFT around an LSTM decoder."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

from lstm_convert import files

spec = importlib.util.find_spec("silero_vad")
DATA = Path(spec.submodule_search_locations[0]) / "data" if spec else None
pytestmark = pytest.mark.skipif(DATA is None, reason="silero-vad (a test dependency) is not installed")


def test_the_three_files_hold_the_same_lstm():
    jit = files.read(DATA / "silero_vad.jit", only=["_model.decoder.rnn"])
    onnx = files.read(DATA / "silero_vad.onnx", only=["If_0_then_branch__Inline_0__.decoder.rnn.LSTM"])  # as listed
    (lstm,) = jit.layers
    assert (lstm.kind, lstm.cell, lstm.input_size, lstm.hidden_size) == ("lstm", True, 128, 128)
    for (name, a), (_, b) in zip(jit.tensors(), onnx.tensors(), strict=True):  # two readers, one model
        assert a.shape == b.shape and np.array_equal(a, b), name
    listed = files.read(DATA / "silero_vad.jit", inventory=True)
    assert any(entry["name"] == "_model.stft" for entry in listed.config["unconverted"])


def test_the_published_lstm_converts_to_keras_exactly(tmp_path, rng):
    files.convert(DATA / "silero_vad.jit", tmp_path / "decoder.keras", only=["_model.decoder.rnn"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated
        rnn = torch.jit.load(DATA / "silero_vad.jit", map_location="cpu")._model.decoder.rnn  # our own test's file
    loaded = keras.saving.load_model(tmp_path / "decoder.keras", compile=False)
    x = rng.normal(size=(2, 6, 128)).astype("float32")
    with torch.no_grad():  # an nn.LSTMCell, as the detector runs it: one step at a time from zero states
        h = c = torch.zeros(2, 128)
        steps = []
        for t in range(x.shape[1]):
            h, c = rnn(torch.from_numpy(x[:, t]), (h, c))
            steps.append(h.numpy())
    want = np.stack(steps, 1)
    got = keras.ops.convert_to_numpy(loaded(x))
    assert got.shape == want.shape == (2, 6, 128)
    np.testing.assert_allclose(got, want, atol=1e-5)
