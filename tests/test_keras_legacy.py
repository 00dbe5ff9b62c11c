"""Legacy Keras weights: CuDNNLSTM / CuDNNGRU, Keras 1 and Keras 2.0-2.2 .h5 files, read with h5py alone.

CuDNN files are written by tf_keras' own CuDNN layers (they build on a CPU, but run only on a GPU);
Keras 1 files are written with h5py exactly as Keras 1 wrote them. The reference is tf_keras' legacy
loader, which still converts both into LSTM and GRU layers (``load_weights``); the converted files are
run in Keras 3, PyTorch and onnxruntime on the same seeded inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import h5py
import keras
import numpy as np
import onnxruntime
import pytest
import torch

import lstm_convert as lc
from lstm_convert import files
from lstm_convert.cli import main
from lstm_convert.errors import FormatError, UnsupportedError

from conftest import assert_same_run, inputs, run_keras, run_torch

tf_keras = pytest.importorskip("tf_keras")
cudnn = pytest.importorskip("tf_keras.src.layers")


def _random(model, rng):
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in layer.get_weights()])
    return model


def _save(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    return path


def _reference(layers, path):
    """A tf_keras model of ``layers`` holding the weights of ``path`` as tf_keras' legacy loader converts them."""
    model = tf_keras.Sequential(layers)
    model.load_weights(path)
    return model


# -- CuDNN -----------------------------------------------------------------------------------------


def test_cudnn_lstm_keeps_both_biases_and_runs_as_tf_keras_converts_it(tmp_path, rng):
    model = _random(tf_keras.Sequential([tf_keras.Input((6, 3)), cudnn.CuDNNLSTM(4, return_sequences=True,
                                                                                 name="lstm")]), rng)
    path = _save(model, tmp_path / "cudnn.h5")
    kernel, recurrent, bias = model.layers[0].get_weights()
    reference = _reference([tf_keras.Input((6, 3)), tf_keras.layers.LSTM(4, return_sequences=True)], path)

    layer = files.read(path).layers[0]
    assert (layer.kind, layer.input_size, layer.hidden_size) == ("lstm", 3, 4)
    assert layer.source["layout"] == "CuDNNLSTM"
    # Both biases kept as the file holds them: the input-side half, then the recurrent-side half, in i, f, c, o.
    for k, gate in enumerate(("input", "forget", "cell", "output")):
        assert layer.gates[(0, "forward", gate)].b_x.tobytes() == bias[k * 4:(k + 1) * 4].tobytes()
        assert layer.gates[(0, "forward", gate)].b_h.tobytes() == bias[16 + k * 4:16 + (k + 1) * 4].tobytes()
    module = lc.to_torch(layer)
    assert module.bias_hh_l0.detach().numpy().tobytes() == bias[16:].tobytes()  # exact to PyTorch
    x, h0, c0 = inputs(rng, batch=2, steps=6, features=3, units=4)
    import tensorflow as tf

    expected = run_keras(reference.layers[0], x, tf.constant(h0), tf.constant(c0))
    assert_same_run(run_torch(module, x, h0, c0), expected)
    assert_same_run(run_keras(lc.to_keras(layer), x, h0, c0), expected)


def test_cudnn_model_with_bidirectional_gru_and_go_backwards(tmp_path, rng):
    model = _random(tf_keras.Sequential([
        tf_keras.Input((7, 5)),
        tf_keras.layers.Bidirectional(cudnn.CuDNNGRU(3, return_sequences=True)),
        cudnn.CuDNNLSTM(4, go_backwards=True),
        tf_keras.layers.Dense(2),
    ]), rng)
    path = _save(model, tmp_path / "cudnn.h5")
    reference = _reference([
        tf_keras.Input((7, 5)),
        tf_keras.layers.Bidirectional(tf_keras.layers.GRU(3, return_sequences=True, reset_after=True)),
        tf_keras.layers.LSTM(4, go_backwards=True),
        tf_keras.layers.Dense(2),
    ], path)
    x = rng.normal(size=(3, 7, 5)).astype("float32")
    expected = np.asarray(reference(x))
    assert expected.shape == (3, 2)

    read = files.read(path)
    assert [layer.source.get("layout") for layer in read.layers] == ["CuDNNGRU", "CuDNNLSTM", None]
    assert read.layers[0].reset_after and read.layers[0].directions == 2
    files.convert(path, tmp_path / "m.keras")
    got = np.asarray(keras.saving.load_model(tmp_path / "m.keras", compile=False)(x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    files.convert(path, tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # verify computes the file the same way: tf_keras' loader converting the weights, since CuDNN needs a GPU
    result = lc.verify.verify(path, tmp_path / "m.onnx")
    assert result.ok and result.runners[0].startswith("tf_keras")


def test_cudnn_bias_of_another_size_is_refused_naming_it(tmp_path, rng):
    model = _random(tf_keras.Sequential([tf_keras.Input((6, 3)), cudnn.CuDNNLSTM(4, name="lstm")]), rng)
    path = _save(model, tmp_path / "cudnn.h5")
    with h5py.File(path, "r+") as f:
        del f["model_weights/lstm/lstm/bias:0"]
        f["model_weights/lstm/lstm/bias:0"] = np.zeros(16, "float32")  # an LSTM's (4H,), not CuDNN's (8H,)
    with pytest.raises(FormatError, match=r"lstm\.bias: expected 32 values \(input-side then recurrent-side"):
        files.read(path)


# -- Keras 1 ---------------------------------------------------------------------------------------

_KERAS1_LSTM = {"init": "glorot_uniform", "inner_init": "orthogonal", "forget_bias_init": "one",
                "activation": "tanh", "W_regularizer": None, "U_regularizer": None, "b_regularizer": None,
                "dropout_W": 0.0, "dropout_U": 0.0, "go_backwards": False, "stateful": False, "unroll": False,
                "trainable": True, "consume_less": "cpu", "input_length": None}


def keras1_file(path, layers, weights, version=None):
    """An .h5 model file as Keras 1 saved it: a Sequential's configuration is a list of layers, each layer's
    weights are named ``<layer>_<role>[_<gate>]:0`` (TensorFlow backend), one dataset per weight."""
    with h5py.File(path, "w") as f:
        if version is not None:
            f.attrs["keras_version"] = version.encode()
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": [
            {"class_name": c, "config": config} for c, config in layers]}).encode()
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [config["name"].encode() for _, config in layers]
        for _, config in layers:
            held = weights.get(config["name"], [])
            layer = group.create_group(config["name"])
            layer.attrs["weight_names"] = [name.encode() for name, _ in held]
            for name, value in held:
                layer.create_dataset(name, data=value)
    return path


def _per_gate(rng, name, gates, fan_in, units):
    return [(f"{name}_{role}_{g}:0", rng.normal(0, 0.5, shape).astype("float32")) for g in gates
            for role, shape in (("W", (fan_in, units)), ("U", (units, units)), ("b", (units,)))]


def _keras1_model(rng, inner_activation="hard_sigmoid"):
    layers = [
        ("LSTM", {**_KERAS1_LSTM, "name": "lstm_1", "output_dim": 4, "return_sequences": True, "input_dim": 3,
                  "batch_input_shape": [None, 6, 3], "input_dtype": "float32", "inner_activation": inner_activation}),
        ("Dropout", {"name": "dropout_1", "p": 0.5, "trainable": True}),
        ("GRU", {**_KERAS1_LSTM, "name": "gru_1", "output_dim": 3, "return_sequences": False, "input_dim": 4,
                 "inner_activation": inner_activation}),
        ("Dense", {"name": "dense_1", "output_dim": 2, "activation": "linear", "bias": True, "input_dim": 3,
                   "init": "glorot_uniform", "trainable": True}),
    ]
    weights = {"lstm_1": _per_gate(rng, "lstm_1", "icfo", 3, 4), "gru_1": _per_gate(rng, "gru_1", "zrh", 4, 3),
               "dense_1": [("dense_1_W:0", rng.normal(0, 0.5, (3, 2)).astype("float32")),
                           ("dense_1_b:0", rng.normal(0, 0.5, 2).astype("float32"))]}
    return layers, weights


def _keras1_reference(path, recurrent_activation):
    return _reference([
        tf_keras.Input((6, 3)),
        tf_keras.layers.LSTM(4, return_sequences=True, recurrent_activation=recurrent_activation),
        tf_keras.layers.Dropout(0.5),
        tf_keras.layers.GRU(3, reset_after=False, recurrent_activation=recurrent_activation),
        tf_keras.layers.Dense(2),
    ], path)


def test_keras1_per_gate_weights_and_hard_sigmoid(tmp_path, rng):
    layers, weights = _keras1_model(rng)
    path = keras1_file(tmp_path / "k1.h5", layers, weights)  # Keras 1.0: no keras_version attribute
    reference = _keras1_reference(path, "hard_sigmoid")  # tf_keras' hard_sigmoid is Keras 1's, 0.2 x + 0.5
    x = rng.normal(0, 2, size=(3, 6, 3)).astype("float32")  # wide enough to reach the clipped ends
    expected = np.asarray(reference(x))

    model = files.read(path)
    lstm, gru, dense = model.layers
    assert lstm.recurrent_activation == gru.recurrent_activation == "hard_sigmoid_keras2"
    assert not gru.reset_after and lstm.source["layout"] == "Keras 1 LSTM (one tensor per gate)"
    assert lstm.gates[(0, "forward", "cell")].W_x.tobytes() == weights["lstm_1"][3][1].T.tobytes()  # W_c
    files.convert(path, tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.shape == expected.shape == (3, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    files.convert(path, tmp_path / "m.safetensors")
    assert lc.verify.verify(path, tmp_path / "m.safetensors").ok
    # Keras 3 redefined hard_sigmoid (x/6 + 0.5), and PyTorch's recurrent layers have none: refused, saying so
    with pytest.raises(UnsupportedError, match="Keras 2's hard_sigmoid"):
        files.convert(path, tmp_path / "m.keras")
    with pytest.raises(UnsupportedError, match="hard_sigmoid"):
        files.convert(path, tmp_path / "m.pt")
    assert not (tmp_path / "m.keras").exists() and not (tmp_path / "m.pt").exists()


def test_keras1_file_with_version_and_sigmoid_is_exact_to_keras3_and_torch(tmp_path, rng):
    layers, weights = _keras1_model(rng, inner_activation="sigmoid")
    reference = _keras1_reference(keras1_file(tmp_path / "bare.h5", layers, weights), "sigmoid")
    path = keras1_file(tmp_path / "k1.h5", layers, weights, version="1.2.2")
    x = rng.normal(size=(2, 6, 3)).astype("float32")
    expected = np.asarray(reference(x))
    files.convert(path, tmp_path / "m.keras")
    got = np.asarray(keras.saving.load_model(tmp_path / "m.keras", compile=False)(x))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # The GRU computes reset before the product, which no nn.GRU does; the LSTM goes to PyTorch exactly.
    files.convert(path, tmp_path / "m.pt", only=["lstm_1"])
    module = torch.nn.LSTM(3, 4, batch_first=True)
    module.load_state_dict({k.removeprefix("lstm_1."): v for k, v in torch.load(tmp_path / "m.pt").items()})
    with torch.no_grad():
        got = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, np.asarray(reference.layers[0](x)), rtol=0, atol=1e-5)


def test_keras1_packed_weights_bidirectional_and_embedding(tmp_path, rng):
    layers = [
        ("Embedding", {"name": "embedding_1", "input_dim": 9, "output_dim": 3, "mask_zero": False,
                       "batch_input_shape": [None, 5], "input_dtype": "int32", "init": "uniform"}),
        ("Bidirectional", {"name": "bidirectional_1", "merge_mode": "concat", "layer": {"class_name": "LSTM", "config": {
            **_KERAS1_LSTM, "name": "lstm_1", "output_dim": 2, "return_sequences": True, "inner_activation": "sigmoid"}}}),
        ("SimpleRNN", {**_KERAS1_LSTM, "name": "simplernn_1", "output_dim": 3, "consume_less": "gpu"}),
        ("LSTM", {**_KERAS1_LSTM, "name": "lstm_2", "output_dim": 2, "inner_activation": "sigmoid",
                  "consume_less": "gpu", "return_sequences": False}),
    ]
    weights = {
        "embedding_1": [("embedding_1_W:0", rng.normal(size=(9, 3)).astype("float32"))],
        "bidirectional_1": _per_gate(rng, "forward_lstm_1", "icfo", 3, 2) + _per_gate(rng, "backward_lstm_1", "icfo", 3, 2),
        "simplernn_1": [(f"simplernn_1_{r}:0", rng.normal(0, 0.5, s).astype("float32"))
                        for r, s in (("W", (4, 3)), ("U", (3, 3)), ("b", (3,)))],
        "lstm_2": [(f"lstm_2_{r}:0", rng.normal(0, 0.5, s).astype("float32"))
                   for r, s in (("W", (3, 8)), ("U", (2, 8)), ("b", (8,)))],
    }
    path = keras1_file(tmp_path / "k1.h5", layers, weights)
    reference = _reference([
        tf_keras.Input((5,), dtype="int32"), tf_keras.layers.Embedding(9, 3),
        tf_keras.layers.Bidirectional(tf_keras.layers.LSTM(2, return_sequences=True)),
        tf_keras.layers.SimpleRNN(3, return_sequences=True), tf_keras.layers.LSTM(2),
    ], path)
    x = rng.integers(0, 9, size=(4, 5)).astype("int32")
    expected = np.asarray(reference(x))
    model = files.read(path)
    assert [layer.source.get("layout") for layer in model.layers] == [
        "Keras 1 Embedding", "Keras 1 Bidirectional of LSTM (one tensor per gate)",
        "Keras 1 SimpleRNN (stacked weights (consume_less='gpu'))", "Keras 1 LSTM (stacked weights (consume_less='gpu'))"]
    files.convert(path, tmp_path / "m.keras")
    got = np.asarray(keras.saving.load_model(tmp_path / "m.keras", compile=False)(x))
    assert got.shape == expected.shape == (4, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_keras1_layer_not_read_is_refused_by_name(tmp_path, rng, capsys):
    layers, weights = _keras1_model(rng)
    layers.insert(1, ("Convolution1D", {"name": "convolution1d_1", "nb_filter": 4, "filter_length": 2}))
    path = keras1_file(tmp_path / "k1.h5", layers, weights)
    assert main(["convert", str(path), str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "convolution1d_1 (Convolution1D)" in err and len(err.splitlines()) == 1
    assert main(["inspect", str(path)]) == 0
    assert "Keras 1 layer Convolution1D is not read" in capsys.readouterr().out
    assert not (tmp_path / "m.onnx").exists()


def test_keras1_weight_named_for_another_gate_is_refused(tmp_path, rng):
    layers, weights = _keras1_model(rng)
    weights["lstm_1"][0] = ("lstm_1_W_x:0", weights["lstm_1"][0][1])
    path = keras1_file(tmp_path / "k1.h5", layers, weights)
    with pytest.raises(FormatError, match=r"lstm_1: a Keras 1 LSTM \(one tensor per gate\) layer holds weights "
                                          r"\['W_i', 'U_i', 'b_i', 'W_c'"):
        files.read(path)


# -- Keras 2.0-2.2 ---------------------------------------------------------------------------------


def test_keras2_gru_from_before_reset_after(tmp_path, rng):
    model = _random(tf_keras.Sequential([tf_keras.Input((6, 3)), tf_keras.layers.GRU(4, reset_after=False,
                                                                                     recurrent_activation="hard_sigmoid"),
                                         tf_keras.layers.Dense(2)]), rng)
    path = _save(model, tmp_path / "k2.h5")
    with h5py.File(path, "r+") as f:  # as Keras 2.0.8 wrote it: a list of layers, no reset_after, no InputLayer
        config = json.loads(f.attrs["model_config"])
        layers = [entry for entry in config["config"]["layers"] if entry["class_name"] != "InputLayer"]
        del layers[0]["config"]["reset_after"]
        layers[0]["config"]["batch_input_shape"] = [None, 6, 3]
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": layers})
        f.attrs["keras_version"] = "2.0.8"
    x = rng.normal(0, 2, size=(3, 6, 3)).astype("float32")
    read = files.read(path)
    assert not read.layers[0].reset_after and read.layers[0].recurrent_activation == "hard_sigmoid_keras2"
    files.convert(path, tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], np.asarray(model(x)),
                               rtol=0, atol=1e-5)


# -- no TensorFlow ---------------------------------------------------------------------------------


def test_legacy_readers_import_no_tensorflow(tmp_path, rng):
    cudnn_path = _save(_random(tf_keras.Sequential([tf_keras.Input((6, 3)), cudnn.CuDNNLSTM(4)]), rng),
                       tmp_path / "cudnn.h5")
    layers, weights = _keras1_model(rng)
    keras1_path = keras1_file(tmp_path / "k1.h5", layers, weights)
    code = ("import sys; from lstm_convert import files\n"
            f"for p in ({str(cudnn_path)!r}, {str(keras1_path)!r}): files.read(p)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_torch_reads_back_what_cudnn_gave(tmp_path, rng):
    """The .pt written from a CuDNN file holds the two biases bit for bit, as nn.LSTM loads them."""
    model = _random(tf_keras.Sequential([tf_keras.Input((6, 3)), cudnn.CuDNNLSTM(4, return_sequences=True,
                                                                                 name="lstm")]), rng)
    path = _save(model, tmp_path / "cudnn.h5")
    bias = model.layers[0].get_weights()[2]
    files.convert(path, tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["lstm.bias_ih_l0"].numpy().tobytes() == bias[:16].tobytes()
    assert state["lstm.bias_hh_l0"].numpy().tobytes() == bias[16:].tobytes()


# -- weights-only files ----------------------------------------------------------------------------


def _tf_keras_model(rng, names=("lstm", "dense")):
    return _random(tf_keras.Sequential([tf_keras.Input((6, 3)), tf_keras.layers.LSTM(4, name=names[0]),
                                        tf_keras.layers.Dense(2, name=names[1])]), rng)


def test_weights_only_h5_needs_and_takes_its_architecture(tmp_path, rng, capsys):
    model = _tf_keras_model(rng)
    model.save_weights(tmp_path / "w.h5")
    (tmp_path / "arch.json").write_text(model.to_json())
    x = rng.normal(size=(3, 6, 3)).astype("float32")
    expected = np.asarray(model(x))

    assert main(["convert", str(tmp_path / "w.h5"), str(tmp_path / "m.keras")]) == 1
    err = capsys.readouterr().err
    assert "weights-only" in err and "--config MODEL.keras or MODEL.json" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.keras").exists()
    assert main(["convert", str(tmp_path / "w.h5"), str(tmp_path / "m.keras"), "--config",
                 str(tmp_path / "arch.json")]) == 0
    got = np.asarray(keras.saving.load_model(tmp_path / "m.keras", compile=False)(x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "w.h5"), str(tmp_path / "m.keras"), "--config",
                 str(tmp_path / "arch.json")]) == 0
    assert "load_weights into" in capsys.readouterr().out  # tf_keras itself loaded the weights into the architecture
    # In the library: the model object itself
    read = files.read(tmp_path / "w.h5", config=model)
    assert read.source["weights_only"] == "true"
    np.testing.assert_array_equal(read.layers[1].weight, model.layers[1].get_weights()[0].T)


def test_keras3_weights_file_with_its_keras_file(tmp_path, rng):
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.GRU(4, return_sequences=True),
                              keras.layers.Dense(2)])
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in layer.get_weights()])
    model.save(tmp_path / "arch.keras")
    model.save_weights(tmp_path / "w.weights.h5")
    files.convert(tmp_path / "w.weights.h5", tmp_path / "m.onnx", config=tmp_path / "arch.keras")
    x = rng.normal(size=(2, 6, 3)).astype("float32")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], np.asarray(model(x)),
                               rtol=0, atol=1e-5)


def test_architecture_is_matched_by_name_and_only_where_it_belongs(tmp_path, rng, capsys):
    model = _tf_keras_model(rng)
    model.save_weights(tmp_path / "w.h5")
    other = _tf_keras_model(rng, names=("encoder", "head"))
    (tmp_path / "other.json").write_text(other.to_json())
    with pytest.raises(FormatError, match=r"layer 'encoder' \(LSTM\) has no weights group /encoder; the file holds "
                                          r"weights of layers lstm, dense"):
        files.read(tmp_path / "w.h5", config=tmp_path / "other.json")
    model.save(tmp_path / "full.h5")
    with pytest.raises(FormatError, match="holds its own model configuration"):
        files.read(tmp_path / "full.h5", config=model)
    files.convert(tmp_path / "full.h5", tmp_path / "m.pt")
    assert main(["inspect", str(tmp_path / "m.pt"), "--config", str(tmp_path / "other.json")]) == 1
    assert "given only for a weights-only Keras .h5" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"weights": []}')
    with pytest.raises(FormatError, match="bad.json: not a Keras model configuration"):
        files.read(tmp_path / "w.h5", config=tmp_path / "bad.json")
