"""TFLite files: those TensorFlow's own converter writes (tests/tflite_converter.py, run once in a process of its
own) read without TensorFlow and computing what tf_keras computes; files written here run by the real LiteRT
interpreter against PyTorch and Keras, outputs and final states; cell_clip kept, and refused where a target has
none; what TFLite cannot hold refused by name; damaged files refused in one line.

TFLite's recurrent operators take no initial states (their state tensors start at zero), so neither side does."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import lstm_convert as lc
from lstm_convert import files, formats, reference
from lstm_convert.adapters import tflite
from lstm_convert.cli import main
from lstm_convert.errors import LSTMConvertError, UnsupportedError

from conftest import random_torch_lstm

pytest.importorskip("ai_edge_litert")

BATCH, STEPS, FEATURES = 3, 6, 5
_CONVERTED: dict[int, Path] = {}
_CASES = ("stacked_bidirectional", "sequences_backwards", "quantised", "simple_rnn")


def converted(seed: int = 7) -> Path:
    """The folder of the converter's files for ``seed`` (made once, by TensorFlow in a process of its own)."""
    if seed not in _CONVERTED:
        out = Path(tempfile.mkdtemp(prefix="tflite-converter-"))
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
        subprocess.run([sys.executable, str(Path(__file__).with_name("tflite_converter.py")), str(out), str(seed),
                        *_CASES], env=env, check=True, capture_output=True)
        _CONVERTED[seed] = out
    return _CONVERTED[seed]


def sample(directory, rng):
    """A typical TFLite file for the conformance suite (test_formats.py): TensorFlow's converter's output for
    LSTM -> Bidirectional(LSTM) -> Dense of tf_keras."""
    target = Path(directory) / "sample.tflite"
    shutil.copyfile(converted() / "stacked_bidirectional.tflite", target)
    return target


@pytest.fixture(scope="module")
def made():
    pytest.importorskip("tf_keras")
    return converted(7)


def _torch_random(module, rng):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.normal(scale=0.7, size=tuple(p.shape)).astype(np.float32)))
    return module


def _litert(path, x):
    return tflite.run(Path(path).read_bytes(), x)


# -- the converter's files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["stacked_bidirectional", "sequences_backwards"])
def test_the_converters_files_compute_what_tf_keras_does(made, case):
    model = files.read(made / f"{case}.tflite")
    data = np.load(made / f"{case}.npz")
    kinds = [(type(layer).__name__, layer.directions if isinstance(layer, lc.RecurrentLayer) else None)
             for layer in model.layers]
    if case == "stacked_bidirectional":
        assert kinds == [("RecurrentLayer", 1), ("RecurrentLayer", 2), ("Dense", None)]
        assert model.layers[0].return_sequences and not model.layers[1].return_sequences
        assert model.layers[2].activation == "softmax"
    else:
        assert kinds == [("RecurrentLayer", 2), ("RecurrentLayer", 1), ("Dense", None)]
        assert model.layers[0].return_sequences and model.layers[1].go_backwards
        assert not model.layers[1].return_sequences
    assert all(layer.cell_clip == 10.0 for layer in model.layers if isinstance(layer, lc.RecurrentLayer))
    ours = reference.run(model, data["x"])[-1][0]
    assert ours.shape == data["y"].shape
    np.testing.assert_allclose(ours, data["y"], atol=1e-5, rtol=0)
    interpreted = _litert(made / f"{case}.tflite", data["x"])["output"]  # and LiteRT agrees with both
    assert interpreted.shape == data["y"].shape
    np.testing.assert_allclose(interpreted, data["y"], atol=1e-5, rtol=0)


def test_they_are_read_without_tensorflow_or_numpy_frameworks(made):
    code = ("import sys\nfor m in ('tensorflow', 'tf_keras', 'keras', 'torch', 'ai_edge_litert', 'flatbuffers', "
            "'tflite'): sys.modules[m] = None\nfrom lstm_convert.cli import main\n"
            f"raise SystemExit(main(['inspect', {str(made / 'stacked_bidirectional.tflite')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "cell_clip=10.0 (the cell state clipped)" in done.stdout and "total" in done.stdout


def test_cell_clip_is_refused_where_a_target_has_none_and_dropped_only_when_asked(made, tmp_path, capsys):
    src = made / "stacked_bidirectional.tflite"
    for target in ("m.pt", "m.keras", "m.onnx"):
        assert main(["convert", str(src), str(tmp_path / target)]) == 1
        err = capsys.readouterr().err
        assert "lstm: cell_clip=10.0" in err and "--set lstm.cell_clip=none" in err, err
    assert list(tmp_path.iterdir()) == []
    assert main(["convert", str(src), str(tmp_path / "m.keras"), "--set", "lstm.cell_clip=none",
                 "--set", "lstm_2.cell_clip=none"]) == 0
    assert files.read(tmp_path / "m.keras").layers[0].cell_clip is None
    # The archive and TFLite keep it, and the verdict says exact.
    assert main(["convert", str(src), str(tmp_path / "m.safetensors")]) == 0
    assert files.read(tmp_path / "m.safetensors") == files.read(src)


def test_cell_clip_changes_what_is_computed_as_tflite_computes_it(tmp_path, rng):
    """A clip the cell state reaches: LiteRT and the reference agree with it, and both differ without it."""
    layer = lc.from_torch(_torch_random(torch.nn.LSTM(FEATURES, 4, batch_first=True), rng))
    clipped = lc.Model((dataclasses.replace(layer, cell_clip=0.3),))
    files.write(clipped, tmp_path / "c.tflite")
    x = rng.normal(scale=3.0, size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    run = _litert(tmp_path / "c.tflite", x)
    ours = reference.run(clipped, x)[-1]
    np.testing.assert_allclose(run["output"], ours[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(run["tensors"]["lstm.forward.c"], ours[1][1][0], atol=1e-5, rtol=0)
    assert np.abs(ours[1][1]).max() == pytest.approx(0.3)
    assert np.abs(reference.run(lc.Model((layer,)), x)[-1][0] - ours[0]).max() > 1e-2
    # verify never calls a clipped and an unclipped cell the same, though random input may not reach the clip
    files.write(lc.Model((layer,)), tmp_path / "plain.safetensors")
    result = lc.verify.verify(tmp_path / "c.tflite", tmp_path / "plain.safetensors", steps=2)
    assert not result.ok and any("differ by construction" in note for note in result.notes), result.notes


@pytest.mark.parametrize("variant", ["layer_norm", "layer_norm_peepholes_clip", "layer_norm_cifg"])
def test_a_layer_norm_lstm_computes_what_litert_does_and_keeps_its_coefficients(variant, tmp_path, rng):
    """TFLite's layer-norm LSTM normalises each gate's pre-activation over the units, scales it by the gate's
    coefficients, then adds the bias: the canonical layer_norm, which the archive keeps bit for bit and every
    target without it refuses by name."""
    layer = lc.from_torch(random_torch_lstm(rng, input_size=FEATURES, hidden_size=4))
    extra = {"layer_norm": {k: rng.normal(size=4).astype(np.float32) for k in layer.keys()}}
    if variant == "layer_norm_peepholes_clip":
        extra.update(peepholes={k: rng.normal(size=4).astype(np.float32) for k in layer.keys() if k[2] != "cell"},
                     cell_clip=0.8)
    elif variant == "layer_norm_cifg":
        extra.update(input_forget=True)
    model = lc.Model((dataclasses.replace(layer, **extra),))
    files.write(model, tmp_path / "ln.tflite")
    x = rng.normal(scale=2.0, size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    run = _litert(tmp_path / "ln.tflite", x)
    ours = reference.run(model, x)[-1]
    assert run["output"].shape == ours[0].shape
    np.testing.assert_allclose(run["output"], ours[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(run["tensors"]["lstm.forward.c"], ours[1][1][0], atol=1e-5, rtol=0)
    plain = reference.run(lc.Model((dataclasses.replace(model.layers[0], layer_norm={}),)), x)[-1][0]
    assert np.abs(plain - ours[0]).max() > 1e-2  # the normalisation is not decorative
    back = files.read(tmp_path / "ln.tflite")
    assert back.layers[0].layer_norm.keys() == model.layers[0].layer_norm.keys()
    files.write(back, tmp_path / "ln.safetensors")
    assert files.read(tmp_path / "ln.safetensors") == back
    for target in ("ln.pt", "ln.onnx", "ln.keras"):
        with pytest.raises(UnsupportedError, match="lstm: .*(layer norm|normalises its gates)"):
            files.write(back, tmp_path / target)


def test_quantised_weights_are_refused_naming_the_tensor(made):
    with pytest.raises(UnsupportedError, match=r"quantised.*does not dequantise") as raised:
        files.read(made / "quantised.tflite")
    assert "quantised.tflite: " in str(raised.value)


def test_operators_it_does_not_read_are_refused_by_name(made, capsys):
    assert main(["inspect", str(made / "simple_rnn.tflite")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"lstm-convert: error: {made / 'simple_rnn.tflite'}: operator ") and \
        "is not an operator lstm_convert reads" in err and err.count("\n") == 1, err


# -- files written here, run by LiteRT ----------------------------------------------------------------------


def _torch_case(name, rng):
    if name == "stacked":
        module = torch.nn.LSTM(FEATURES, 4, num_layers=2, batch_first=True)
    elif name == "bidirectional_projection":
        module = torch.nn.LSTM(FEATURES, 6, proj_size=3, bidirectional=True, batch_first=True)
    elif name == "rnn_relu_bidirectional":
        module = torch.nn.RNN(FEATURES, 4, nonlinearity="relu", bidirectional=True, batch_first=True)
    else:
        module = torch.nn.RNN(FEATURES, 4, batch_first=True)
    return _torch_random(module, rng)


@pytest.mark.parametrize("name", ["stacked", "bidirectional_projection", "rnn_relu_bidirectional", "rnn"])
def test_written_files_compute_what_pytorch_does_outputs_and_final_states(name, tmp_path, rng):
    module = _torch_case(name, rng)
    path = tmp_path / "m.tflite"
    model = lc.Model((lc.from_torch(module),))
    assert formats.get("tflite").check(model).exact
    files.write(model, path)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    with torch.no_grad():
        out, finals = module(torch.from_numpy(x))
    finals = finals if isinstance(finals, tuple) else (finals,)
    run = _litert(path, x)
    assert run["output"].shape == tuple(out.shape)
    np.testing.assert_allclose(run["output"], out.numpy(), atol=1e-5, rtol=0)
    layer = files.read(path).layers
    units = [u for item in layer for u in item.unstack()] if len(layer) == 1 else list(layer)
    for state, torch_final in zip(("h", "c"), finals):
        ours = np.stack([run["tensors"][f"{unit.name}.{d}.{state}"] for unit in units
                         for d in ("forward", "reverse")[:unit.directions]])
        assert ours.shape == tuple(torch_final.shape), state
        np.testing.assert_allclose(ours, torch_final.numpy(), atol=1e-5, rtol=0)
    read = reference.run(files.read(path), x)  # read back (each operator as its layer) it computes the same
    np.testing.assert_allclose(read[-1][0], out.numpy(), atol=1e-5, rtol=0)


def test_an_lstm_cell_is_the_one_step_lstm_operator(tmp_path, rng):
    cell = _torch_random(torch.nn.LSTMCell(FEATURES, 4), rng)
    model = lc.Model((lc.from_torch(cell),))
    files.write(model, tmp_path / "cell.tflite")
    assert tflite._File(memoryview((tmp_path / "cell.tflite").read_bytes()), "x").codes == [tflite.OPS["LSTM"]]
    x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
    with torch.no_grad():
        h, c = cell(torch.from_numpy(x))
    run = _litert(tmp_path / "cell.tflite", x)
    assert run["output"].shape == tuple(h.shape)
    np.testing.assert_allclose(run["output"], h.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(run["tensors"]["lstm.forward.c"], c.numpy(), atol=1e-5, rtol=0)
    back = files.read(tmp_path / "cell.tflite")
    assert back.layers[0].cell and back.layers[0].gates.keys() == model.layers[0].gates.keys()


def test_a_keras_model_becomes_fused_operators_that_compute_what_keras_does(tmp_path, rng):
    """Embedding -> Bidirectional(LSTM) returning its last steps -> Dense(softmax), against Keras itself:
    the two directions' last outputs come from two unmerged sequences (the backward one's at step 0)."""
    import keras

    model = keras.Sequential([keras.Input((STEPS,), dtype="int32"), keras.layers.Embedding(11, FEATURES),
                              keras.layers.Bidirectional(keras.layers.LSTM(4)),
                              keras.layers.Dense(3, activation="softmax")])
    model.set_weights([rng.normal(scale=0.7, size=w.shape).astype(np.float32) for w in model.get_weights()])
    model.save(tmp_path / "m.keras")
    assert files.convert(tmp_path / "m.keras", tmp_path / "m.tflite").verdict == "exact"
    ids = rng.integers(0, 11, size=(BATCH, STEPS))
    expected = np.asarray(model.predict(ids, verbose=0))
    got = _litert(tmp_path / "m.tflite", ids.astype(np.int32))["output"]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    names = {tflite._NAMES[c] for c in tflite._File(memoryview((tmp_path / "m.tflite").read_bytes()), "x").codes}
    assert names == {"GATHER", "BIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "CONCATENATION", "FULLY_CONNECTED",
                     "SOFTMAX"}
    result = lc.verify.verify(tmp_path / "m.keras", tmp_path / "m.tflite")
    assert result.ok and result.runners == ("keras", "LiteRT"), (result.rows, result.notes)
    # One direction returning its last step: a STRIDED_SLICE of the sequence, then a linear Dense.
    last = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    last.set_weights([rng.normal(scale=0.7, size=w.shape).astype(np.float32) for w in last.get_weights()])
    last.save(tmp_path / "last.keras")
    assert files.convert(tmp_path / "last.keras", tmp_path / "last.tflite").verdict == "exact"
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    expected = np.asarray(last.predict(x, verbose=0))
    got = _litert(tmp_path / "last.tflite", x)["output"]
    assert got.shape == expected.shape == (BATCH, 2)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_written_files_read_back_to_the_same_bytes(tmp_path, rng):
    layer = lc.from_torch(random_torch_lstm(rng, input_size=FEATURES, hidden_size=4, bidirectional=True))
    dense = lc.Dense(name="head", weight=rng.normal(size=(2, 8)).astype(np.float32),
                     bias=rng.normal(size=2).astype(np.float32), activation="sigmoid")
    model = lc.Model((dataclasses.replace(layer, return_sequences=False), dense), input_shape=(None, FEATURES))
    files.write(model, tmp_path / "a.tflite")
    back = files.read(tmp_path / "a.tflite")
    assert [u.name for u in back.layers] == ["lstm", "head"]
    files.write(back, tmp_path / "b.tflite")
    assert (tmp_path / "a.tflite").read_bytes() == (tmp_path / "b.tflite").read_bytes()
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    np.testing.assert_allclose(reference.run(back, x)[-1][0], reference.run(model, x)[-1][0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("what", ["gru", "mask", "float64", "merge_sum", "go_backwards", "stateful"])
def test_what_tflite_cannot_hold_is_refused_by_name_before_writing(what, tmp_path, rng):
    layer = lc.from_torch(random_torch_lstm(rng, input_size=FEATURES, hidden_size=4,
                                            **({"module": "GRU"} if what == "gru" else {})))
    layers = [layer]
    if what == "mask":
        layers = [lc.Masking(name="mask", size=FEATURES), layer]
    elif what == "float64":
        layers = [lc.from_torch(random_torch_lstm(rng, input_size=FEATURES, hidden_size=4, dtype="float64"))]
    elif what == "merge_sum":
        bi = lc.from_torch(random_torch_lstm(rng, input_size=FEATURES, hidden_size=4, bidirectional=True))
        layers = [dataclasses.replace(bi, merge_mode="sum")]
    elif what == "go_backwards":
        layers = [dataclasses.replace(layer, go_backwards=True)]
    elif what == "stateful":
        layers = [dataclasses.replace(layer, stateful=True)]
    expected = {"gru": "TFLite has no fused GRU operator", "mask": r"a mask \(padding steps skipped\)",
                "float64": "float64 weights", "merge_sum": "merge_mode='sum'", "go_backwards": "go_backwards",
                "stateful": "stateful=True"}[what]
    with pytest.raises(UnsupportedError, match=expected):
        files.write(lc.Model(tuple(layers)), tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


# -- crafted and damaged files ------------------------------------------------------------------------------


def _written(tmp_path, rng) -> bytes:
    layer = lc.from_torch(random_torch_lstm(rng, input_size=FEATURES, hidden_size=4))
    files.write(lc.Model((layer,)), tmp_path / "w.tflite")
    return (tmp_path / "w.tflite").read_bytes()


def test_a_cifg_lstm_reads_as_coupled_gates_computing_what_litert_does(tmp_path, rng):
    """Without input-gate tensors LiteRT computes the input gate as 1 - forget: read as coupled gates (the
    canonical input_forget, ONNX's) whose input gate has the forget gate's weights negated, and written back
    as the same CIFG operator; ONNX then holds it exactly too."""
    from lstm_convert import _flatbuffers as fb

    layer = lc.from_torch(random_torch_lstm(rng, input_size=FEATURES, hidden_size=4))
    peepholes = {(0, "forward", g): rng.normal(size=4).astype(np.float32) for g in ("input", "forget", "output")}
    files.write(lc.Model((dataclasses.replace(layer, peepholes=peepholes),)), tmp_path / "w.tflite")
    data = bytearray((tmp_path / "w.tflite").read_bytes())
    op = fb.root(data, "x").tables(2)[0].tables(3)[0]
    start, count = op._vector(1, 4)
    assert count == 24
    for k in (1, 5, 9, 12):  # input-to-input, recurrent-to-input, its peephole, the input gate's bias
        data[start + 4 * k:start + 4 * k + 4] = (-1).to_bytes(4, "little", signed=True)
    (tmp_path / "cifg.tflite").write_bytes(data)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    expected = _litert(tmp_path / "cifg.tflite", x)
    model = files.read(tmp_path / "cifg.tflite")
    assert model.layers[0].input_forget and model.layers[0].peepholes
    ours = reference.run(model, x)[-1]
    assert ours[0].shape == expected["output"].shape
    np.testing.assert_allclose(ours[0], expected["output"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours[1][1][0], expected["tensors"]["lstm.forward.c"], atol=1e-5, rtol=0)
    files.write(model, tmp_path / "again.tflite")
    assert tflite._File(memoryview((tmp_path / "again.tflite").read_bytes()), "x").operators[0].scalars(1, "i")[1] == -1
    np.testing.assert_allclose(_litert(tmp_path / "again.tflite", x)["output"], expected["output"], atol=1e-6, rtol=0)
    assert files.convert(tmp_path / "cifg.tflite", tmp_path / "cifg.onnx").verdict == "exact"
    result = lc.verify.verify(tmp_path / "cifg.tflite", tmp_path / "cifg.onnx")
    assert result.ok and result.runners == ("LiteRT", "onnxruntime"), (result.rows, result.notes)


def test_damaged_files_are_refused_with_the_librarys_errors_only(tmp_path, rng):
    data = _written(tmp_path, rng)
    target = tmp_path / "d.tflite"
    variants = [data[:cut] for cut in range(8, len(data), 41)]
    noise = np.random.default_rng(3)
    for _ in range(300):
        damaged = bytearray(data)
        for at in noise.integers(0, len(data), size=int(noise.integers(1, 4))):
            damaged[at] = int(noise.integers(0, 256))
        variants.append(bytes(damaged))
    for variant in variants:
        target.write_bytes(variant)
        try:
            files.read(target, "tflite")
        except LSTMConvertError as exc:
            assert str(exc).startswith(str(target)), exc
