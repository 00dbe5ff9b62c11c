"""The representability check: per layer and target, exact or impossible and why, before anything is written."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import randomize_keras

import lstm_convert as lc
from lstm_convert import describe, files
from lstm_convert.cli import main


@pytest.fixture
def keras_only(tmp_path, rng):
    """A .keras model whose recurrent layers Keras can hold and PyTorch cannot."""
    model = keras.Sequential([
        keras.Input((5, 7)),
        keras.layers.LSTM(3, go_backwards=True, return_sequences=True, name="backwards"),
        keras.layers.GRU(4, reset_after=False, return_sequences=True, name="old_gru"),
        keras.layers.Bidirectional(keras.layers.SimpleRNN(2, return_sequences=True), merge_mode="sum", name="bisum"),
        keras.layers.LSTM(2, activation="relu", stateful=False, dropout=0.25, name="relu"),
    ])
    path = tmp_path / "keras_only.keras"
    randomize_keras(model, rng).save(path)
    return path, model


def test_inspect_reports_every_layer_and_target(keras_only, capsys):
    path, _ = keras_only
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    verdicts = {layer["name"]: layer["conversions"] for layer in info["layers"]}
    assert all(v["keras"]["exact"] and v["archive"]["exact"] for v in verdicts.values())
    reasons = {name: v["torch"].get("reason", "") for name, v in verdicts.items()}
    # reversed input and merge modes: a state dict keeps the weights, the module of --module computes them
    assert verdicts["backwards"]["torch"]["verdict"] == "weights"
    assert "go_backwards=True" in verdicts["backwards"]["torch"]["needs"]
    assert "merge_mode='sum'" in verdicts["bisum"]["torch"]["needs"]
    assert reasons["old_gru"].startswith("a GRU with reset_after=False (reset applied before the recurrent matrix")
    assert reasons["relu"].startswith("activation is 'relu', but nn.LSTM only computes tanh")
    assert verdicts["relu"]["keras"]["verdict"] == "exact"
    assert info["conversions"]["torch"]["verdict"] == "impossible" and len(info["conversions"]["torch"]["reasons"]) == 2
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    # columns in the registry's order: archive, keras, torch, npz, onnx
    assert "backwards        exact      exact      weights*   weights*   exact" in text
    assert "  ! torch: old_gru: a GRU with reset_after=False" in text


def test_check_writes_nothing(keras_only, tmp_path, capsys):
    path, model = keras_only
    assert main(["convert", "--check", str(path), str(tmp_path / "x.pt")]) == 1
    assert "impossible; nothing written" in capsys.readouterr().out
    assert main(["convert", "--check", str(path), str(tmp_path / "x.safetensors")]) == 0
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "x.safetensors").exists()
    # What Keras can hold, the archive and Keras files keep exactly.
    assert main(["convert", str(path), str(tmp_path / "x.safetensors")]) == 0
    assert main(["convert", str(tmp_path / "x.safetensors"), str(tmp_path / "back.keras")]) == 0
    back = keras.saving.load_model(tmp_path / "back.keras")
    x = np.random.default_rng(5).normal(size=(2, 5, 7)).astype("float32")
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(model(x)))
    assert back.layers[3].get_config()["dropout"] == 0.25  # settings kept where the target has them
    assert lc.verify.verify(path, tmp_path / "x.safetensors").ok
    with pytest.raises(lc.UnsupportedError, match="^old_gru: a GRU with reset_after=False"):
        files.convert(path, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_what_a_state_dict_cannot_compute_is_named(tmp_path, rng, capsys):
    import torch

    module = torch.nn.LSTM(7, 3, batch_first=False, num_layers=2, dropout=0.5)
    weights = lc.from_torch(module)
    assert describe.conversions(weights)["keras"]["verdict"] == "exact"  # dropout: the identity at inference
    torch.save(module.state_dict(), tmp_path / "m.pt")
    assert main(["convert", str(tmp_path / "m.pt"), str(tmp_path / "m.safetensors")]) == 0
    capsys.readouterr()
    layer = keras.layers.LSTM(3, stateful=False, return_sequences=False)
    layer.build((None, None, 7))
    verdict = describe.conversions(lc.from_keras(layer))["torch"]
    assert verdict["verdict"] == "weights" and verdict["needs"] == ["return_sequences=False"]
    assert describe.conversions(lc.from_keras(layer), module=True)["torch"]["verdict"] == "exact"


def test_merge_mode_none_is_refused(rng):
    layer = keras.layers.Bidirectional(keras.layers.LSTM(2), merge_mode=None, name="two_outputs")
    layer.build((None, None, 7))
    with pytest.raises(lc.UnsupportedError, match=r"^two_outputs: Bidirectional merge_mode=None returns the two"):
        lc.from_keras(layer)
