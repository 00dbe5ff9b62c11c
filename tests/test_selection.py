"""Converting part of a model (``only=``, ``--only``): whole models built with the real frameworks, layers the
tool does not convert listed and refused all at once, the selected layers converted and checked against the
source framework on the same inputs."""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest
import torch
from conftest import random_torch_lstm, randomize_keras

import lstm_convert as lc
from lstm_convert import files
from lstm_convert.cli import main


def _cnn_lstm(rng, path):
    """A Keras model with layers the tool does not convert (Conv1DTranspose, GroupNormalization) in front of an
    LSTM and a Dense."""
    model = keras.Sequential([keras.Input((10, 4)), keras.layers.Conv1DTranspose(6, 3, name="conv"),
                              keras.layers.GroupNormalization(groups=2, name="norm"),
                              keras.layers.LSTM(5, return_sequences=True, name="lstm"),
                              keras.layers.Dense(3, name="head")])
    randomize_keras(model, rng)
    model.save(path)
    return model


def test_unconverted_layers_are_refused_all_at_once(tmp_path, rng, capsys):
    _cnn_lstm(rng, tmp_path / "cnn.keras")
    with pytest.raises(lc.UnsupportedError) as err:
        files.read(tmp_path / "cnn.keras")
    message = str(err.value)
    assert "does not convert: conv (Conv1DTranspose: " in message and "; norm (GroupNormalization: " in message
    assert "select the recurrent layers with only=" in message
    assert main(["convert", str(tmp_path / "cnn.keras"), str(tmp_path / "x.pt")]) == 1
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "--only PATTERN" in err_text and "conv (Conv1DTranspose" in err_text
    assert not (tmp_path / "x.pt").exists()


def test_inspect_lists_everything_in_the_file(tmp_path, rng, capsys):
    _cnn_lstm(rng, tmp_path / "cnn.keras")
    assert main(["inspect", str(tmp_path / "cnn.keras"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [layer["name"] for layer in info["layers"]] == ["lstm", "head"]
    unconverted = {entry["name"]: entry for entry in info["unconverted"]}
    assert unconverted["conv"]["type"] == "Conv1DTranspose" and unconverted["conv"]["tensors"]["vars/0"] == [3, 6, 4]
    assert unconverted["norm"]["type"] == "GroupNormalization" and len(unconverted["norm"]["tensors"]) == 2
    assert unconverted["conv"]["why"] == "not a layer lstm_convert converts"
    assert all(v["verdict"] == "impossible" for v in info["conversions"].values())  # the whole file is not
    assert main(["inspect", str(tmp_path / "cnn.keras")]) == 0
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if line.startswith("conv "))
    assert line.split()[1:5] == ["Conv1DTranspose", "not", "converted:", "not"]
    assert "  ! every target: the file holds what lstm_convert does not convert (conv, norm)" in text


def test_selected_layers_compute_what_keras_computes(tmp_path, rng, capsys):
    model = _cnn_lstm(rng, tmp_path / "cnn.keras")
    assert main(["convert", str(tmp_path / "cnn.keras"), str(tmp_path / "part.pt"), "--only", "lstm",
                 "--only", "head"]) == 0
    capsys.readouterr()
    part = files.read(tmp_path / "part.pt")
    assert [layer.name for layer in part.layers] == ["lstm", "head"] and part.input_shape is None
    x = rng.normal(size=(3, 10, 4)).astype("float32")
    features = keras.Model(model.inputs[0], model.get_layer("norm").output)(x)  # what reaches the LSTM
    want = keras.ops.convert_to_numpy(model(x))
    with torch.no_grad():
        got = lc.to_torch(part)(torch.from_numpy(keras.ops.convert_to_numpy(features))).numpy()
    assert got.shape == want.shape == (3, 12, 3)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # verify runs the selected layers of the .keras file through Keras, and the state dict through PyTorch
    assert main(["verify", str(tmp_path / "cnn.keras"), str(tmp_path / "part.pt"), "--only", "lstm",
                 "--only", "head"]) == 0
    out = capsys.readouterr().out
    assert "A: " in out and "(run by keras)" in out and "(run by torch)" in out
    assert "model            output" in out and "MISMATCH" not in out


def test_a_selection_must_be_one_run_of_layers(tmp_path, rng):
    model = keras.Sequential([keras.Input((6, 4)), keras.layers.LSTM(5, return_sequences=True, name="lstm_a"),
                              keras.layers.Conv1D(4, 2, name="conv"), keras.layers.LSTM(3, name="lstm_b")])
    randomize_keras(model, rng)
    model.save(tmp_path / "gap.keras")
    with pytest.raises(lc.UnsupportedError, match=r"'lstm_a' and 'lstm_b' do not follow one another \('conv' lies"):
        files.read(tmp_path / "gap.keras", only=["lstm_*"])
    assert [layer.name for layer in files.read(tmp_path / "gap.keras", only=["lstm_b"]).layers] == ["lstm_b"]
    with pytest.raises(lc.FormatError, match=r"the pattern 'decoder\*' selects nothing; it holds lstm_a, conv, lstm_b"):
        files.read(tmp_path / "gap.keras", only=["decoder*"])


def test_a_mask_from_a_layer_left_out_is_refused(tmp_path, rng):
    model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(9, 4, mask_zero=True,
                                                                                       name="embed"),
                              keras.layers.LSTM(3, name="lstm")])
    randomize_keras(model, rng)
    model.save(tmp_path / "masked.keras")
    with pytest.raises(lc.UnsupportedError, match="'lstm' takes the mask that 'embed' makes, which is not selected"):
        files.read(tmp_path / "masked.keras", only=["lstm"])
    assert len(files.read(tmp_path / "masked.keras", only=["embed", "lstm"]).layers) == 2


class _Front(torch.nn.Module):
    """A conv front end with normalisation, an LSTM and a head, as published speech models have."""

    def __init__(self, rng):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 6, 3)
        self.norm = torch.nn.GroupNorm(2, 6)
        self.rnn = random_torch_lstm(rng, input_size=6, hidden_size=5, batch_first=True)
        self.fc = torch.nn.Linear(5, 2)

    def forward(self, x):
        y = self.norm(self.conv(x.transpose(1, 2))).transpose(1, 2)
        out, _ = self.rnn(y)
        return self.fc(out)


def test_state_dict_modules_selected_by_prefix(tmp_path, rng, capsys):
    module = _Front(rng).eval()
    torch.save(module.state_dict(), tmp_path / "front.pt")
    with pytest.raises(lc.UnsupportedError, match=r"does not convert: conv \(weight \(6, 4, 3\), bias \(6,\)\); "
                                                   r"norm \(weight \(6,\), bias \(6,\)\)"):
        files.read(tmp_path / "front.pt")
    assert main(["inspect", str(tmp_path / "front.pt")]) == 0
    assert "--kind conv=conv1d" in capsys.readouterr().out  # what to say if it is one
    assert main(["convert", str(tmp_path / "front.pt"), str(tmp_path / "rnn.keras"), "--only", "rnn"]) == 0
    capsys.readouterr()
    loaded = keras.saving.load_model(tmp_path / "rnn.keras", compile=False)
    x = torch.from_numpy(rng.normal(size=(2, 7, 6)).astype("float32"))
    with torch.no_grad():
        want = module.rnn(x)[0].numpy()
    got = keras.ops.convert_to_numpy(loaded(x.numpy()))
    assert got.shape == want.shape == (2, 7, 5)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert main(["verify", str(tmp_path / "front.pt"), str(tmp_path / "rnn.keras"), "--only", "rnn"]) == 0
    assert "(run by torch)" in capsys.readouterr().out


@pytest.mark.parametrize("dynamo, lstm, dense", [(False, "*LSTM*", "*MatMul*"), (True, "node_lstm*", "node_MatMul*")],
                         ids=["torchscript-exporter", "dynamo-exporter"])
def test_onnx_export_operators_selected_by_name(tmp_path, rng, dynamo, lstm, dense):
    module = _Front(rng).eval()
    x = torch.from_numpy(rng.normal(size=(2, 7, 4)).astype("float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), tmp_path / "front.onnx", dynamo=dynamo, input_names=["x"])
    with pytest.raises(lc.LSTMConvertError, match="front.onnx: node .*InstanceNormalization"):
        files.read(tmp_path / "front.onnx")
    listed = files.read(tmp_path / "front.onnx", inventory=True)
    assert [layer.kind for layer in listed.layers] == ["lstm", "dense"]
    assert any(entry["type"] == "Conv" for entry in listed.config["unconverted"])
    rnn, fc = files.read(tmp_path / "front.onnx", only=[lstm, dense]).layers  # the LSTM and the Linear after it
    for (name, a), (_, b) in zip(rnn.tensors(), lc.from_torch(module.rnn).tensors(), strict=True):
        assert a.shape == b.shape and np.array_equal(a, b), name
    assert np.array_equal(fc.weight, module.fc.weight.detach().numpy())
    assert np.array_equal(fc.bias, module.fc.bias.detach().numpy())


def test_keras_onnx_export_of_a_cnn_lstm(tmp_path, rng):
    """Keras' own ONNX export (through tf2onnx) of the CNN + LSTM: the LSTM and its head are selected by node name
    and compute what Keras computes from the features that reach the LSTM."""
    pytest.importorskip("tf2onnx")
    from lstm_convert import reference

    model = _cnn_lstm(rng, tmp_path / "cnn.keras")
    x = rng.normal(size=(2, 10, 4)).astype("float32")
    model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.export(str(tmp_path / "cnn.onnx"), format="onnx", verbose=False)
    listed = files.read(tmp_path / "cnn.onnx", inventory=True)
    kinds = [layer.kind for layer in listed.layers]
    assert "lstm" in kinds and listed.config["unconverted"]
    names = [layer.name for layer in listed.layers]
    start = kinds.index("lstm")
    part = files.read(tmp_path / "cnn.onnx", only=names[start:start + 2])  # the names inspect shows
    assert [layer.kind for layer in part.layers] == ["lstm", "dense"]
    features = keras.ops.convert_to_numpy(keras.Model(model.inputs[0], model.get_layer("norm").output)(x))
    got = reference.run(part, features)[-1][0]
    want = keras.ops.convert_to_numpy(model(x))
    assert got.shape == want.shape == (2, 12, 3)
    np.testing.assert_allclose(got, want, atol=1e-5)
