"""TensorFlow 1 checkpoints, read without TensorFlow and compared with what TensorFlow computes.

TensorFlow 1: the checkpoints and TensorFlow's outputs come from ``tests/tf1_checkpoints.py``, run once in a process of
its own (TensorFlow's v1 cells need the legacy Keras, chosen before TensorFlow is imported): LSTMCell,
BasicLSTMCell with forget_bias 0.75 and Adam's slots, LSTMCell with peepholes and a projection, GRUCell,
BasicRNNCell, a MultiRNNCell of an LSTM and a GRU with a dense head, and a bidirectional LSTM; seeded
random weights and biases, non-zero initial states. The converted layers run in PyTorch and Keras 3.
TensorFlow 2: tf.train.Checkpoint and SavedModel of a Keras 3 model, tf_keras' save_weights in TensorFlow's
format (with Adam's slots), read with their architecture and run against the models themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lstm_convert as lc
from lstm_convert import canonical, files, formats, reference
from lstm_convert.cli import main
from lstm_convert.errors import FormatError, UnsupportedError

from conftest import assert_same_run, run_keras, run_torch

pytest.importorskip("tf_keras")  # tf.compat.v1's cells need the legacy Keras


_SAMPLES: dict[int, Path] = {}


def _write(out: Path, *args: str) -> None:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    subprocess.run([sys.executable, str(Path(__file__).with_name("tf1_checkpoints.py")), str(out), *args], env=env,
                   check=True, capture_output=True)


def sample(directory, rng):
    """A TensorFlow 1 checkpoint of one LSTMCell, as tf.compat.v1.train.Saver writes it, for the conformance
    suite (test_formats.py): ``directory/sample.index`` and its data shard. Made once per seed and copied."""
    import tempfile

    seed = int(rng.integers(0, 2**31))
    if seed not in _SAMPLES:
        out = Path(tempfile.mkdtemp(prefix="tf1-sample-"))
        _write(out, str(seed))
        _SAMPLES[seed] = out / "sample"
    for part in ("model.index", "model.data-00000-of-00001"):
        shutil.copyfile(_SAMPLES[seed] / part, Path(directory) / part.replace("model", "sample", 1))
    return Path(directory) / "sample.index"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf1")
    _write(out)
    return out


def _case(made, name):
    return made / name / "model", dict(np.load(made / f"{name}.npz"))


def _tf(data, *parts):
    return tuple(data[p][None] if p in ("h", "c") else data[p] for p in parts)


def test_lstm_cell_with_its_forget_bias_folded_runs_as_tensorflow(made):
    prefix, data = _case(made, "lstm")
    model = files.read(prefix)  # named by its prefix
    (layer,) = model.layers
    assert (layer.kind, layer.input_size, layer.hidden_size, layer.name) == ("lstm", 5, 4, "encoder.rnn")
    assert layer.source["layout"] == "TensorFlow LSTMCell (or LSTMBlockCell)"
    assert "forget_bias 1.0" in layer.source["folded"]
    assert any("forget_bias 1.0" in note for note in formats.get("tf_checkpoint").read_notes(model))
    x, h0, c0 = data["x"], data["feed_encoder_h0"][None], data["feed_encoder_c0"][None]
    expected = _tf(data, "output", "h", "c")
    assert_same_run(run_torch(lc.to_torch(layer), x, h0, c0), expected)
    assert_same_run(run_keras(lc.to_keras(layer), x, h0, c0), expected)
    assert files.read(prefix.with_suffix(".index")) == model  # or by its .index file


def test_the_archive_keeps_what_was_folded_and_inspect_shows_it(made, tmp_path, capsys):
    prefix, _ = _case(made, "lstm")
    assert main(["convert", str(prefix), str(tmp_path / "m.safetensors"), "-q"]) == 0
    kept = lc.load(tmp_path / "m.safetensors").layers[0].source
    assert kept["layout"] == "TensorFlow LSTMCell (or LSTMBlockCell)" and "forget_bias 1.0" in kept["folded"]
    assert main(["inspect", str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "    stored as TensorFlow LSTMCell (or LSTMBlockCell)\n    folded: forget_bias 1.0 (its default" in out


def test_an_activation_the_checkpoint_does_not_hold_is_stated_with_set(made, tmp_path, capsys):
    prefix, data = _case(made, "relu_lstm")
    x, h0, c0 = data["x"], data["feed_encoder_h0"][None], data["feed_encoder_c0"][None]
    expected = _tf(data, "output", "h", "c")
    read = files.read(prefix)
    assert read.layers[0].activation == "tanh"  # TensorFlow's default, said in a note: here another function
    assert np.abs(run_keras(lc.to_keras(read.layers[0]), x, h0, c0)[0] - expected[0]).max() > 1e-3
    stated = canonical.with_settings(read, {"encoder.rnn": {"activation": "relu"}}).layers[0]
    assert_same_run(run_keras(lc.to_keras(stated), x, h0, c0), expected)
    with pytest.raises(lc.UnsupportedError, match="relu"):  # nn.LSTM computes tanh only
        lc.to_torch(stated)
    assert main(["convert", str(prefix), str(tmp_path / "m.keras"), "--set", "encoder.rnn.activation=relu"]) == 0
    assert "state what the model did otherwise with --set" in capsys.readouterr().out
    assert main(["convert", str(prefix), str(tmp_path / "m.pt"), "--set", "encoder.rnn.activation=relu"]) == 1
    assert not (tmp_path / "m.pt").exists()


def test_keras_layers_saved_by_tf1_saver_need_their_architecture(made, tmp_path, capsys):
    """Keras layers in a TensorFlow 1 graph name their variables as TensorFlow 2 does (enc/lstm_cell/kernel,
    recurrent_kernel, bias): Keras' layout, never read as a TensorFlow cell's from the shapes."""
    prefix, data = _case(made, "keras_layers")
    assert main(["inspect", str(prefix)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a TensorFlow checkpoint of a Keras model holds its weights (enc/lstm_cell, " \
        "g/gru_cell, head)" in err and "--config" in err
    read = files.read(prefix, config=made / "keras_layers.json")
    assert [(layer.name, layer.kind) for layer in read.layers] == [("enc", "lstm"), ("g", "gru"), ("head", "dense")]
    assert read.layers[0].input_size == 5 and read.source["skipped"].startswith("19 variables of training state")
    target = tmp_path / "m.keras"
    assert main(["convert", str(prefix), str(target), "--config", str(made / "keras_layers.json"), "-q"]) == 0
    import keras

    got = np.asarray(keras.saving.load_model(target)(data["x"]))
    assert got.shape == data["output"].shape == (3, 2)
    np.testing.assert_allclose(got, data["output"], rtol=0, atol=1e-5)


def test_forget_bias_other_than_the_default_is_stated(made, capsys):
    prefix, data = _case(made, "basic_lstm")
    x, h0, c0 = data["x"], data["feed_encoder_h0"][None], data["feed_encoder_c0"][None]
    expected = _tf(data, "output", "h", "c")
    stated = files.read(prefix, forget_bias=0.75).layers[0]
    assert_same_run(run_torch(lc.to_torch(stated), x, h0, c0), expected)
    default = files.read(prefix).layers[0]  # BasicLSTMCell's default, 1.0: another function
    got = run_torch(lc.to_torch(default), x, h0, c0)
    assert np.abs(got[0] - expected[0]).max() > 1e-3
    assert main(["inspect", str(prefix), "--forget-bias", "0.75"]) == 0
    shown = capsys.readouterr()
    err = shown.out + shown.err
    assert "forget_bias 0.75 (as stated" in err
    assert "skipped 7 variables of training state" in err  # Adam's slots, its powers, global_step


def test_peepholes_and_projection_run_in_the_reference_and_are_refused_by_pytorch(made, tmp_path):
    prefix, data = _case(made, "peephole")
    (layer,) = files.read(prefix).layers
    assert layer.proj_size == 3 and sorted(g for _, _, g in layer.peepholes) == ["forget", "input", "output"]
    x = data["x"]
    states = {layer.name: (data["feed_encoder_h0"][None], data["feed_encoder_c0"][None])}
    ((output, (h, c)),) = reference.run(lc.Model((layer,)), x, states)
    assert output.shape == data["output"].shape == (3, 6, 3)
    np.testing.assert_allclose(output, data["output"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(h[0], data["h"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(c[0], data["c"], rtol=0, atol=1e-5)
    with pytest.raises(UnsupportedError, match="peepholes"):
        files.convert(prefix, tmp_path / "p.pt")
    assert not (tmp_path / "p.pt").exists()
    files.convert(prefix, tmp_path / "p.safetensors")
    assert files.read(tmp_path / "p.safetensors").layers[0] == layer


def test_gru_cell_is_keras_reset_before_the_product(made):
    prefix, data = _case(made, "gru")
    (layer,) = files.read(prefix).layers
    assert layer.kind == "gru" and not layer.reset_after
    x, h0 = data["x"], data["feed_encoder_h0"][None]
    assert_same_run(run_keras(lc.to_keras(layer), x, h0), _tf(data, "output", "h"))
    with pytest.raises(UnsupportedError, match="reset_after=False"):
        lc.to_torch(layer)


def test_basic_rnn_cell_to_pytorch(made):
    prefix, data = _case(made, "rnn")
    (layer,) = files.read(prefix).layers
    assert layer.kind == "rnn"
    x, h0 = data["x"], data["feed_encoder_h0"][None]
    assert_same_run(run_torch(lc.to_torch(layer), x, h0), _tf(data, "output", "h"))


def test_multi_rnn_cell_and_a_head_in_the_order_given(made, tmp_path, capsys):
    prefix, data = _case(made, "stacked")
    with pytest.raises(UnsupportedError, match="2 separate groups of cells and layers .*does not say how they "
                                               "connect"):
        files.read(prefix)
    assert main(["convert", str(prefix), str(tmp_path / "m.keras")]) == 1
    err = capsys.readouterr().err
    assert "(dense, rnn.multi_rnn_cell)" in err and "one --only each" in err and "--only dense" not in err
    assert not (tmp_path / "m.keras").exists()
    model = files.read(prefix, only=["rnn", "dense"])
    for only in (["rnn/multi_rnn_cell", "dense"], ["rnn.multi_rnn_cell", "dense"]):  # by scope or by layer name
        assert files.read(prefix, only=only).layers == model.layers
    assert [(layer.name, layer.kind) for layer in model.layers] == [
        ("rnn.multi_rnn_cell.cell_0", "lstm"), ("rnn.multi_rnn_cell.cell_1", "gru"), ("dense", "dense")]
    files.convert(prefix, tmp_path / "m.keras", only=["rnn", "dense"])
    import keras

    got = np.asarray(keras.saving.load_model(tmp_path / "m.keras")(data["x"]))
    assert got.shape == data["head"].shape == (3, 6, 2)
    np.testing.assert_allclose(got, data["head"], rtol=0, atol=1e-5)
    capsys.readouterr()
    assert main(["verify", str(prefix), str(tmp_path / "m.keras"), "--only", "rnn.multi_rnn_cell", "--only",
                 "dense"]) == 0  # one selection for both sides
    assert "OK: the model outputs" in capsys.readouterr().out


def test_bidirectional_scopes_are_one_layer(made, tmp_path):
    prefix, data = _case(made, "bidirectional")
    (layer,) = files.read(prefix).layers
    assert layer.directions == 2 and layer.name == "bidirectional_rnn"
    files.convert(prefix, tmp_path / "b.pt", module=tmp_path / "b.py")
    import torch

    sys.path.insert(0, str(tmp_path))
    try:
        import b  # noqa: PLC0415 - the module the conversion wrote

        net = b.Model()
        net.load_state_dict(torch.load(tmp_path / "b.pt"))
        with torch.no_grad():
            got = net(torch.from_numpy(data["x"])).numpy()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("b", None)
    assert got.shape == data["output"].shape == (3, 6, 6)
    np.testing.assert_allclose(got, data["output"], rtol=0, atol=1e-5)


def test_block_cells_run_as_the_ops_they_ran(made):
    """LSTMBlockFusedCell and GRUBlockCell against TensorFlow's BlockLSTM and GRUBlockCell ops."""
    prefix, data = _case(made, "fused")
    (layer,) = files.read(prefix).layers
    assert layer.source["layout"] == "TensorFlow LSTMBlockFusedCell" and "forget_bias 1.0" in layer.source["folded"]
    x, h0, c0 = data["x"], data["h0"][None], data["c0"][None]
    assert_same_run(run_torch(lc.to_torch(layer), x, h0, c0), _tf(data, "output", "h", "c"))
    prefix, data = _case(made, "gru_block")
    (layer,) = files.read(prefix).layers
    assert layer.source["layout"] == "TensorFlow GRUBlockCell" and not layer.reset_after
    assert_same_run(run_keras(lc.to_keras(layer), data["x"], data["h0"][None]), _tf(data, "output", "h"))


def _cudnn_module(torch, data, kind):
    gates = 4 if kind == "LSTM" else 3
    module = getattr(torch.nn, kind)(5, 3, batch_first=True)
    with torch.no_grad():
        for name, role in (("weight_ih_l0", "w"), ("weight_hh_l0", "r"), ("bias_ih_l0", "bw"), ("bias_hh_l0", "br")):
            value = data[f"cudnn_{role}"]
            getattr(module, name).copy_(torch.from_numpy(value.reshape(gates * 3, *value.shape[2:])))
    return module


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_cudnn_saveables_keep_both_biases_bit_for_bit(made, rng, kind):
    """CudnnLSTM's and CudnnGRU's saveables stored cuDNN's parameters (PyTorch's layout, two biases) as the
    cudnn-compatible cells' variables and kept both sides of the bias: PyTorch gets them back bit for bit."""
    import torch

    prefix, data = _case(made, f"cudnn_{kind.lower()}")
    (layer,) = files.read(prefix).layers
    assert layer.kind == kind.lower() and layer.reset_after and "folded" not in layer.source  # forget_bias 0
    source = _cudnn_module(torch, data, kind)
    module = lc.to_torch(layer)
    for name, tensor in source.state_dict().items():
        assert module.state_dict()[name].numpy().tobytes() == tensor.numpy().tobytes(), name
    x, h0, c0 = rng.normal(size=(2, 6, 5)).astype("float32"), *rng.normal(size=(2, 1, 2, 3)).astype("float32")
    args = (x, h0, c0) if kind == "LSTM" else (x, h0)
    assert_same_run(run_torch(module, *args), run_torch(source, *args))


def test_a_variable_of_no_known_cell_is_refused_by_name_unless_left_out(made, capsys):
    prefix = made / "extra" / "model"
    with pytest.raises(UnsupportedError, match=r"holds what lstm_convert does not convert: lookup/table \(variable: "
                                               r"shape \(10, 5\)\)"):
        files.read(prefix)
    assert [layer.name for layer in files.read(prefix, only=["rnn"]).layers] == ["rnn"]
    assert main(["inspect", str(prefix)]) == 0  # inspect lists it
    assert "lookup/table" in capsys.readouterr().out


def test_damaged_checkpoints_are_refused_naming_what(made, tmp_path, capsys):
    src = made / "lstm"
    cases = {}
    for label, damage in {
        "data": lambda d: _flip(d / "model.data-00000-of-00001", 40),
        "index": lambda d: _flip(d / "model.index", 30),
        "missing": lambda d: (d / "model.data-00000-of-00001").unlink(),
        "cut": lambda d: (d / "model.index").write_bytes((d / "model.index").read_bytes()[:-20]),
        "outside": lambda d: _lead_out(d / "model.data-00000-of-00001", tmp_path / "elsewhere.data"),
    }.items():
        folder = tmp_path / label
        shutil.copytree(src, folder)
        damage(folder)
        cases[label] = folder / "model"
    with pytest.raises(FormatError, match="model.index: encoder/rnn/lstm_cell/bias: its bytes in model.data-00000-of-00001 "
                                          "fail their checksum"):
        files.read(cases["data"])
    with pytest.raises(FormatError, match="fails its checksum: the file is damaged"):
        files.read(cases["index"])
    with pytest.raises(FormatError, match="its data file model.data-00000-of-00001 is missing beside the index"):
        files.read(cases["missing"])
    with pytest.raises(FormatError, match="its data file model.data-00000-of-00001 is a symlink leading out of the "
                                          "checkpoint's folder"):
        files.read(cases["outside"])  # the same bytes, but read only from inside the folder
    assert main(["convert", str(cases["cut"]), str(tmp_path / "out.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.index" in err and "Traceback" not in err
    assert not (tmp_path / "out.pt").exists()


def _lead_out(path, outside):
    path.rename(outside)
    path.symlink_to(outside)


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def test_checkpoint_reader_imports_no_tensorflow(made):
    code = ("import sys; from lstm_convert import files\n"
            f"files.read({str(made / 'lstm' / 'model')!r}); files.read({str(made / 'stacked' / 'model')!r}, "
            "only=['rnn', 'dense'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_crc32c_of_large_inputs_matches_the_byte_loop():
    from lstm_convert import _tf_bundle

    rng = np.random.default_rng(3)
    for size in (0, 9, 65535, 65536, 300_007, 3 << 20 | 5):  # the last runs several column blocks per lane
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        whole = _tf_bundle._update(0xFFFFFFFF, data) ^ 0xFFFFFFFF
        assert _tf_bundle.crc32c(data) == whole
        cut = size // 3  # continued from the checksum of the bytes before
        assert _tf_bundle.crc32c(data[cut:], _tf_bundle.crc32c(data[:cut])) == whole
    assert _tf_bundle.crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C


# -- TensorFlow 2: object-based checkpoints of Keras models ---------------------------------------------


def _keras3_model(rng):
    import keras

    model = keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(4, return_sequences=True, name="enc"),
                              keras.layers.Bidirectional(keras.layers.GRU(2), name="bi"),
                              keras.layers.Dense(2, name="dense")])
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    return model


def test_tf2_checkpoint_and_saved_model_of_a_keras3_model_with_its_architecture(tmp_path, rng, capsys):
    import tensorflow as tf

    model = _keras3_model(rng)
    model.save(tmp_path / "m.keras")
    tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt" / "weights"))
    tf.saved_model.save(model, str(tmp_path / "saved"))
    x = rng.normal(size=(2, 6, 3)).astype("float32")
    expected = np.asarray(model(x))
    assert main(["convert", str(tmp_path / "ckpt" / "weights"), str(tmp_path / "no.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a TensorFlow checkpoint of a Keras model" in err  # one line (the command line shortens long ones)
    with pytest.raises(FormatError, match=r"of a Keras model holds its weights \(.*/bi/backward_gru.*/enc/lstm_cell\)"):
        files.read(tmp_path / "ckpt" / "weights")
    assert "give the architecture with --config MODEL.keras or MODEL.json" in err
    for source in (tmp_path / "ckpt" / "weights", tmp_path / "saved"):  # by prefix, and a SavedModel's folder
        read = files.read(source, config=tmp_path / "m.keras")
        assert [layer.name for layer in read.layers] == ["enc", "bi", "dense"]
        assert read.layers[0].return_sequences and not read.layers[1].return_sequences  # as the architecture says
        target = tmp_path / f"{source.name}.onnx"
        assert main(["convert", str(source), str(target), "--config", str(tmp_path / "m.keras"), "-q"]) == 0
        import onnxruntime

        session = onnxruntime.InferenceSession(str(target))
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        assert got.shape == expected.shape == (2, 2)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_tf2_checkpoint_with_tensors_of_megabytes_reads_bit_for_bit(tmp_path, rng):
    """Tensors past a few MiB take the checksum's many-lane path: kernel (300, 2048) and (512, 2048)."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4, 300)), keras.layers.LSTM(512, name="big")])
    weights = [rng.normal(0, 0.1, w.shape).astype("float32") for w in model.layers[0].get_weights()]
    model.layers[0].set_weights(weights)
    (tmp_path / "m.json").write_text(model.to_json())
    tf.train.Checkpoint(model=model).write(str(tmp_path / "w"))
    read = files.read(tmp_path / "w", config=tmp_path / "m.json")
    layer = read.layers[0]
    kernel = np.concatenate([layer.gate(g).W_x for g in layer.gate_names], axis=0).T
    recurrent = np.concatenate([layer.gate(g).W_h for g in layer.gate_names], axis=0).T
    assert kernel.shape == weights[0].shape == (300, 2048)
    assert np.array_equal(kernel, weights[0]) and np.array_equal(recurrent, weights[1])


def test_tf_keras_saved_model_reads_its_own_architecture(tmp_path, rng, capsys):
    """tf_keras' SavedModel keeps each layer's configuration in keras_metadata.pb: no --config needed."""
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.Input((6, 5)), tf_keras.layers.GRU(3, return_sequences=True, name="gru"),
                                 tf_keras.layers.LSTM(4, name="lstm"), tf_keras.layers.Dense(2, name="head")])
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    model.save(str(tmp_path / "saved"), save_format="tf")
    x = rng.normal(size=(3, 6, 5)).astype("float32")
    expected = model.predict(x, verbose=0)
    read = files.read(tmp_path / "saved")
    assert [layer.name for layer in read.layers] == ["gru", "lstm", "head"]
    assert read.layers[0].return_sequences and not read.layers[1].return_sequences
    assert read.source["architecture"] == "the SavedModel's keras_metadata.pb"
    assert read.source["framework_version"] == tf_keras.__version__
    target = tmp_path / "m.onnx"
    assert main(["convert", str(tmp_path / "saved"), str(target), "-q"]) == 0
    import onnxruntime

    session = onnxruntime.InferenceSession(str(target))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.shape == expected.shape == (3, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    (tmp_path / "saved" / "keras_metadata.pb").write_bytes(b"\x0a\xff")  # damaged: named in one line
    assert main(["inspect", str(tmp_path / "saved")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "keras_metadata.pb: not a SavedModel's Keras metadata" in err


def test_tf_keras_save_weights_in_tensorflow_format_with_optimizer_slots(tmp_path, rng):
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.Input((6, 3)), tf_keras.layers.GRU(3, return_sequences=True, name="gru"),
                                 tf_keras.layers.LSTM(2, name="lstm")])
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    model.compile("adam", "mse")
    x = rng.normal(size=(4, 6, 3)).astype("float32")
    model.fit(x, np.zeros((4, 2), "float32"), epochs=1, verbose=0)  # the checkpoint gains Adam's slots
    model.save_weights(str(tmp_path / "w"))  # no .h5: TensorFlow's format
    (tmp_path / "m.json").write_text(model.to_json())
    expected = model.predict(x, verbose=0)
    read = files.read(tmp_path / "w", config=tmp_path / "m.json")
    assert read.source["framework"] == "keras" and read.layers[0].reset_after
    import torch

    files.convert(tmp_path / "w", tmp_path / "m.pt", config=tmp_path / "m.json", module=tmp_path / "m_module.py")
    sys.path.insert(0, str(tmp_path))
    try:
        import m_module  # noqa: PLC0415 - the module the conversion wrote

        net = m_module.Model()
        net.load_state_dict(torch.load(tmp_path / "m.pt"))
        with torch.no_grad():
            got = net(torch.from_numpy(x)).numpy()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("m_module", None)
    assert got.shape == expected.shape == (4, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
