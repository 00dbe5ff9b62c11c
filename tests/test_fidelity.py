"""Model-level fidelity: a converted model computes the source model's function, or is refused; verify proves it.

Every case is run against the real frameworks on inputs that exercise it: the last step only, padded and
masked steps at the end and in the middle, reversed input, stateful batches. Shapes are asserted first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import torch
from conftest import randomize_keras, randomize_torch
from safetensors.numpy import load_file, save_file

import lstm_convert as lc
from lstm_convert import describe, files
from lstm_convert.adapters import onnx as onnx_adapter
from lstm_convert.cli import main


def _seed_model():
    return keras.Sequential([keras.Input((18, 7)), keras.layers.LSTM(2, name="lstm"),
                             keras.layers.Dense(5, name="dense")])


def _tagger(**lstm):
    """Embedding(mask_zero=True) -> LSTM -> Dense: index 0 is padding."""
    return keras.Sequential([keras.Input((None,), dtype="int32"),
                             keras.layers.Embedding(11, 4, mask_zero=True, name="embedding"),
                             keras.layers.LSTM(3, name="lstm", **lstm),
                             keras.layers.Dense(5, activation="softmax", name="dense")])


def _padded_indices(rng, batch=5, steps=7):
    """Indices 1..10 with padding (0) at the end of some rows and in the middle of one; one row all padding."""
    x = rng.integers(1, 11, size=(batch, steps))
    x[0, 4:] = 0
    x[1, 2] = 0
    x[2, :] = 0
    x[3, 0] = 0
    return x


def _saved(model, rng, path):
    randomize_keras(model, rng).save(path)
    return path


def _out(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(np.asarray(x))).numpy()


def test_seed_model_to_onnx_keeps_the_output_shape(tmp_path, rng, capsys):
    model = _seed_model()
    path = _saved(model, rng, tmp_path / "seed.keras")
    assert main(["convert", str(path), str(tmp_path / "seed.onnx")]) == 0
    x = rng.normal(size=(3, 18, 7)).astype("float32")
    got = onnx_adapter.run(tmp_path / "seed.onnx", x)["output"]
    expected = np.asarray(model(x))
    assert got.shape == expected.shape == (3, 5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    capsys.readouterr()
    assert main(["verify", str(path), str(tmp_path / "seed.onnx")]) == 0
    out = capsys.readouterr().out
    assert "model            output" in out and out.rstrip().endswith("agree within tolerance")
    assert files.read(tmp_path / "seed.onnx")["lstm"].return_sequences is False  # read back as written


def test_a_dropped_return_sequences_fails_verify(tmp_path, rng, capsys):
    path = _saved(_seed_model(), rng, tmp_path / "seed.keras")
    # A bare state dict, as a one-off script would save it: nothing says that only the last step is returned.
    plain = lc.to_torch(files.read(path), state_dict=True)
    assert set(plain) == {"lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
                          "dense.weight", "dense.bias"}
    torch.save(plain, tmp_path / "plain.pt")
    capsys.readouterr()
    assert main(["verify", str(path), str(tmp_path / "plain.pt")]) == 1
    out = capsys.readouterr().out
    assert "the models' outputs differ in shape: (3, 5) (A) vs (3, 18, 5) (B)" in out
    assert out.rstrip().endswith("FAILED: outputs differ beyond tolerance")
    # The tool's own .pt records what the model computes, so it verifies.
    assert main(["convert", str(path), str(tmp_path / "seed.pt")]) == 0
    assert "pass --module FILE.py" in capsys.readouterr().out
    assert main(["verify", str(path), str(tmp_path / "seed.pt")]) == 0


def test_to_torch_of_a_model_is_a_module_computing_it(tmp_path, rng):
    model = randomize_keras(_seed_model(), rng)
    weights = lc.from_keras(model)
    module = lc.to_torch(weights)
    assert isinstance(module, torch.nn.Module)
    state = lc.to_torch(weights, state_dict=True)
    assert list(module.state_dict()) == list(state)
    lc.files.write(weights, tmp_path / "seed.pt")
    assert list(torch.load(tmp_path / "seed.pt", weights_only=True)) == list(state)  # the .pt's keys exactly
    x = rng.normal(size=(4, 18, 7)).astype("float32")
    got, expected = _out(module, x), np.asarray(model(x))
    assert got.shape == expected.shape == (4, 5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_module_file_needs_only_torch(tmp_path, rng):
    model = randomize_keras(_tagger(), rng)
    model.save(tmp_path / "tagger.keras")
    assert main(["convert", str(tmp_path / "tagger.keras"), str(tmp_path / "tagger.pt"),
                 "--module", str(tmp_path / "tagger.py")]) == 0
    x = _padded_indices(rng)
    np.save(tmp_path / "x.npy", x)
    script = ("import sys; sys.modules['keras'] = sys.modules['tensorflow'] = sys.modules['lstm_convert'] = None\n"
              "import numpy as np, torch\n"
              "from tagger import Model\n"
              "m = Model()\n"
              "m.load_state_dict(torch.load('tagger.pt', weights_only=True))\n"
              "with torch.no_grad():\n"
              "    np.save('y.npy', m(torch.from_numpy(np.load('x.npy'))).numpy())\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got, expected = np.load(tmp_path / "y.npy"), np.asarray(model(x))
    assert got.shape == expected.shape == (5, 5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("build", [
    lambda: _tagger(return_sequences=True),
    lambda: _tagger(),
    lambda: keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(11, 4, mask_zero=True),
                              keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True), merge_mode="ave"),
                              keras.layers.SimpleRNN(2, go_backwards=True, return_sequences=True),
                              keras.layers.Bidirectional(keras.layers.LSTM(3)), keras.layers.Dense(2)]),
    lambda: keras.Sequential([keras.Input((None, 5)), keras.layers.Masking(0.5),
                              keras.layers.LSTM(3, return_sequences=True, zero_output_for_mask=True),
                              keras.layers.RNN(keras.layers.GRUCell(4), return_sequences=True),
                              keras.layers.GRU(2, go_backwards=True, zero_output_for_mask=True)]),
], ids=["sequences", "last-step", "bidirectional-reversed", "masking-cells"])
def test_masks_at_the_end_and_in_the_middle(tmp_path, rng, build):
    model = randomize_keras(build(), rng)
    weights = lc.from_keras(model)
    assert weights.masked
    if isinstance(weights.layers[0], lc.Embedding):
        x = _padded_indices(rng)
    else:
        x = rng.normal(size=(5, 7, 5)).astype("float32")
        x[0, 4:], x[1, 2], x[2], x[3, 0] = 0.5, 0.5, 0.5, 0.5
    expected = np.asarray(model(x))
    for got in (_out(lc.to_torch(weights), x), lc.reference.run(weights, x)[-1][0]):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    verdicts = describe.model_conversions(weights)
    assert verdicts["torch"]["verdict"] == "weights"  # never "exact" for a bare state dict
    assert describe.model_conversions(weights, module=True)["torch"]["verdict"] == "exact"
    assert verdicts["onnx"]["verdict"] == "exact"
    model.save(tmp_path / "m.keras")
    files.convert(tmp_path / "m.keras", tmp_path / "m.onnx")
    got = onnx_adapter.run(tmp_path / "m.onnx", x.astype(np.int64) if x.dtype.kind == "i" else x)["output"]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert files.read(tmp_path / "m.onnx").semantics() == weights.semantics()  # read back as written
    files.convert(tmp_path / "m.keras", tmp_path / "m.pt")
    for other in ("m.pt", "m.onnx"):
        result = lc.verify.verify(tmp_path / "m.keras", tmp_path / other)
        assert result.masked and result.ok and result.rows[0]["layer"] == "model", other


def test_an_ignored_mask_fails_verify(tmp_path, rng, capsys):
    path = _saved(_tagger(return_sequences=True), rng, tmp_path / "tagger.keras")
    model = files.read(path)
    torch.save(lc.to_torch(model, state_dict=True), tmp_path / "plain.pt")  # no record: the mask is ignored
    capsys.readouterr()
    assert main(["verify", str(path), str(tmp_path / "plain.pt"), "--kind", "embedding=embedding"]) == 1
    out = capsys.readouterr().out
    assert "with padded (masked) steps" in out and "model            mask" in out and "MISMATCH" in out
    assert "note: A skips padded steps (embedding: mask_zero=True) and B does not" in out
    assert "plain.pt: a state dict without lstm_convert's model record says nothing" in out


def test_inspect_never_calls_a_mask_exact_for_a_state_dict(tmp_path, rng, capsys):
    path = _saved(_tagger(), rng, tmp_path / "tagger.keras")
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "embedding        exact      exact      weights*   weights*   exact" in text  # archive keras torch npz onnx
    assert "  * torch: embedding: the state dict keeps the weights; mask_zero=True needs --module FILE.py" in text
    assert "exact*" not in text
    assert main(["convert", "--check", str(path), str(tmp_path / "t.pt")]) == 0
    assert "the weights exactly; the model needs --module; nothing written" in capsys.readouterr().out
    assert main(["convert", "--check", str(path), str(tmp_path / "t.pt"), "--module", str(tmp_path / "t.py")]) == 0
    assert "(torch): exact; nothing written" in capsys.readouterr().out
    assert not (tmp_path / "t.pt").exists() and not (tmp_path / "t.py").exists()
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["semantics"] == ["embedding: mask_zero=True", "lstm: return_sequences=False",
                                 "dense: activation='softmax'"]
    assert info["conversions"]["torch"]["verdict"] == "weights"


def test_settings_for_keras_from_a_pytorch_source(tmp_path, rng, capsys):
    from conftest import random_torch_lstm

    module = random_torch_lstm(rng, input_size=7, hidden_size=3, batch_first=True)
    torch.save({f"lstm.{k}": v for k, v in module.state_dict().items()}, tmp_path / "t.pt")
    model = files.read(tmp_path / "t.pt")
    with pytest.raises(lc.UnsupportedError, match="for a whole model, say which layer"):
        lc.to_keras(model, return_sequences=False)  # never ignored
    built = lc.to_keras(model, settings={"lstm": {"return_sequences": False}})
    x = rng.normal(size=(2, 6, 7)).astype("float32")
    with torch.no_grad():
        last = module(torch.from_numpy(x))[0][:, -1].numpy()
    got = np.asarray(built(x))
    assert got.shape == last.shape == (2, 3)
    np.testing.assert_allclose(got, last, rtol=0, atol=1e-5)
    with pytest.raises(lc.SettingError, match=r"setting lstm\.return_sequence: 'return_sequence' is not a setting "
                                              r"of lstm layers; they take"):
        lc.to_keras(model, settings={"lstm": {"return_sequence": False}})
    with pytest.raises(lc.SettingError, match=r"the model has no layer 'gru'"):
        lc.to_keras(model, settings={"gru": {"return_sequences": False}})
    assert main(["convert", str(tmp_path / "t.pt"), str(tmp_path / "t.keras"), "--set",
                 "lstm.return_sequences=false"]) == 0
    np.testing.assert_allclose(np.asarray(keras.saving.load_model(tmp_path / "t.keras")(x)), last, rtol=0, atol=1e-5)
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "t.pt"), str(tmp_path / "u.keras"), "--set", "lstm.units=4"]) == 1
    assert "setting lstm.units: 'units' is not a setting of lstm layers" in capsys.readouterr().err
    assert not (tmp_path / "u.keras").exists()


def test_exported_lstm_cell_graph_is_refused_naming_its_nodes(tmp_path, rng, capsys):
    cell = torch.nn.LSTMCell(7, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(cell, (torch.randn(2, 7), (torch.randn(2, 3), torch.randn(2, 3))), tmp_path / "cell.onnx",
                          dynamo=False)
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "cell.onnx"), str(tmp_path / "cell.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "(Sigmoid)" in err and "(Mul)" in err and "outside any layer lstm_convert reads" in err
    assert not (tmp_path / "cell.pt").exists()
    # inspect lists what the file holds: its two Gemm operators, and the graph around them, not converted
    assert main(["inspect", str(tmp_path / "cell.onnx"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    (graph,) = [e for e in info["unconverted"] if e["type"] == "graph"]
    assert "(Sigmoid)" in graph["why"] and "outside any layer lstm_convert reads" in graph["why"]
    assert all(v["verdict"] == "impossible" for v in info["conversions"].values())


def test_inspect_text_of_stacked_and_bidirectional_state_dicts(tmp_path, capsys):
    for options in ({"num_layers": 2}, {"bidirectional": True}, {"num_layers": 2, "bidirectional": True}):
        torch.save(torch.nn.GRU(7, 3, **options).state_dict(), tmp_path / "m.pt")
        assert main(["inspect", str(tmp_path / "m.pt")]) == 0
        text = capsys.readouterr().out
        last = "weight_ih_l1" if options.get("num_layers") else "weight_ih_l0_reverse"
        assert f"    gate       {last}" in text


def test_stateful_keeps_its_batch_size_or_is_refused(tmp_path, rng, capsys):
    model = keras.Sequential([keras.Input(batch_shape=(4, 5, 7)), keras.layers.GRU(3, stateful=True, name="gru")])
    path = _saved(model, rng, tmp_path / "s.keras")
    assert main(["convert", str(path), str(tmp_path / "t.keras")]) == 0
    back = keras.saving.load_model(tmp_path / "t.keras")
    assert back.inputs[0].shape[0] == 4 and back.layers[0].stateful
    x1, x2 = (rng.normal(size=(4, 5, 7)).astype("float32") for _ in range(2))
    model.layers[0].reset_state()
    expected = [np.asarray(model(x1)), np.asarray(model(x2))]
    got = [np.asarray(back(x1)), np.asarray(back(x2))]  # the second batch starts where the first ended
    np.testing.assert_allclose(got[1], expected[1], rtol=0, atol=1e-6)
    assert np.abs(expected[1] - np.asarray(keras.saving.load_model(path)(x2))).max() > 1e-3  # state mattered
    capsys.readouterr()
    assert main(["verify", str(path), str(tmp_path / "t.keras")]) == 0
    assert "stateful: two batches" in capsys.readouterr().out
    assert main(["verify", str(path), str(tmp_path / "s.safetensors")]) == 1  # no such file: one line
    assert main(["convert", str(path), str(tmp_path / "s.safetensors")]) == 0
    assert main(["verify", str(path), str(tmp_path / "s.safetensors")]) == 0  # the reference carries the states
    for target, extra in (("s.onnx", []), ("s.pt", ["--module", str(tmp_path / "s.py")])):
        capsys.readouterr()
        assert main(["convert", str(path), str(tmp_path / target), *extra]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "gru: stateful=True carries the final states" in err
        assert not (tmp_path / target).exists()


@pytest.mark.parametrize("build", [_tagger, lambda: keras.Sequential([
    keras.Input((None, 5)), keras.layers.Masking(-1.0, name="masking"),
    keras.layers.RNN(keras.layers.LSTMCell(3), return_sequences=True, name="cells"),
    keras.layers.SimpleRNN(2, activation="relu", name="rnn")])], ids=["embedding", "masking"])
def test_files_written_here_read_back_without_flags(tmp_path, rng, build):
    path = _saved(build(), rng, tmp_path / "tagger.keras")
    source = files.read(path)
    for name in ("t.pt", "t.safetensors", "a.safetensors", "t.keras", "t.onnx"):
        files.convert(path, tmp_path / name, dst_format="torch" if name == "t.safetensors" else None)
        back = files.read(tmp_path / name)
        assert [(layer.name, layer.kind) for layer in back] == [(layer.name, layer.kind) for layer in source]
        assert back.semantics() == source.semantics() and back.input_shape == source.input_shape, name
        assert lc.verify.verify(path, tmp_path / name).ok


def test_skipped_identity_layers_are_named(tmp_path, rng, capsys):
    model = keras.Sequential([keras.Input((None, 7)), keras.layers.LSTM(3, return_sequences=True),
                              keras.layers.Dropout(0.3, name="drop"), keras.layers.GaussianNoise(0.1, name="noise"),
                              keras.layers.Dense(2)])
    path = _saved(model, rng, tmp_path / "m.keras")
    assert main(["convert", str(path), str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "note: skipped drop (Dropout): the identity at inference" in out
    assert "note: skipped noise (GaussianNoise): the identity at inference" in out
    assert main(["inspect", str(path)]) == 0
    assert "note: skipped drop (Dropout): the identity at inference" in capsys.readouterr().out


def test_a_module_file_holds_no_code_from_the_source(tmp_path, rng):
    import ast

    from lstm_convert.adapters import torch_module

    weights = lc.from_keras(randomize_keras(_seed_model(), rng))
    hostile = lc.Model(weights.layers, source={"framework": 'x"""\nimport os; os.system("echo pwned")\n"""'})
    text = torch_module.source(hostile, origin=hostile.source["framework"])
    tree = ast.parse(text)
    assert isinstance(tree.body[0], ast.Expr) and "pwned" in ast.get_docstring(tree)  # only ever inside the docstring
    assert "os.system(" not in text and not any(isinstance(node, ast.Import) and node.names[0].name == "os"
                                                for node in ast.walk(tree))


def test_version_1_archives_still_load(tmp_path, rng):
    model = randomize_keras(_tagger(), rng)
    lc.save(lc.from_keras(model), tmp_path / "v2.safetensors")
    tensors = load_file(tmp_path / "v2.safetensors")
    from safetensors import safe_open

    with safe_open(tmp_path / "v2.safetensors", "np") as f:
        meta = f.metadata()
    # Version 1 kept return_sequences and mask_zero among the Keras settings, and the input in the model config.
    layers = json.loads(meta["layers"])
    for spec in layers:
        keras_settings = spec["config"].setdefault("keras", {})
        for key in ("return_sequences", "return_state", "zero_output_for_mask", "stateful", "mask_zero"):
            if key in spec:
                keras_settings[key] = spec.pop(key)
    model_meta = json.loads(meta["model"])
    model_meta["config"]["keras"].update(input_shape=model_meta.pop("input_shape"),
                                         input_dtype=model_meta.pop("input_dtype"))
    model_meta.pop("batch_size")
    v1 = {**meta, "format_version": "1", "layers": json.dumps(layers), "model": json.dumps(model_meta)}
    save_file(tensors, tmp_path / "v1.safetensors", metadata=v1)
    loaded = lc.load(tmp_path / "v1.safetensors")
    assert loaded == lc.load(tmp_path / "v2.safetensors")
    assert loaded["lstm"].return_sequences is False and loaded["embedding"].mask_zero is True
    x = _padded_indices(rng)
    np.testing.assert_allclose(lc.reference.run(loaded, x)[-1][0], np.asarray(model(x)), rtol=0, atol=1e-5)


def test_onnx_last_step_with_reversed_input_and_merges_round_trips(tmp_path, rng):
    model = keras.Sequential([
        keras.Input((None, 5)),
        keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True), merge_mode="sum"),
        keras.layers.Dense(4, activation="silu"),
        keras.layers.GRU(2, go_backwards=True, return_sequences=True),
        keras.layers.Bidirectional(keras.layers.LSTM(2), merge_mode="mul"),
        keras.layers.Dense(3, activation="tanh"),
    ])
    path = _saved(model, rng, tmp_path / "m.keras")
    files.convert(path, tmp_path / "m.onnx")
    x = rng.normal(size=(3, 6, 5)).astype("float32")
    got, expected = onnx_adapter.run(tmp_path / "m.onnx", x)["output"], np.asarray(model(x))
    assert got.shape == expected.shape == (3, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert lc.verify.verify(path, tmp_path / "m.onnx").ok
    files.convert(tmp_path / "m.onnx", tmp_path / "back.keras")
    np.testing.assert_allclose(np.asarray(keras.saving.load_model(tmp_path / "back.keras")(x)), expected,
                               rtol=0, atol=1e-6)


class _LastStep(torch.nn.Module):
    """A recurrent module and a Linear head on its last step, as PyTorch models are commonly written."""

    def __init__(self, pick, kind="LSTM", **options):
        super().__init__()
        self.rnn = getattr(torch.nn, kind)(7, 3, batch_first=True, **options)
        self.head = torch.nn.Linear(6 if options.get("bidirectional") else 3, 2)
        self.pick = pick

    def forward(self, x):
        y, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h
        return self.head(h[-1] if self.pick == "h_n" else y[:, -1])


@pytest.mark.parametrize("kind, pick, dynamo", [("LSTM", "h_n", False), ("LSTM", "out", True), ("GRU", "out", False),
                                                ("GRU", "h_n", True)])
def test_exported_last_step_is_read_as_return_sequences_false(tmp_path, rng, kind, pick, dynamo):

    module = randomize_torch(_LastStep(pick, kind), rng).eval()
    x = rng.normal(size=(2, 5, 7)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(x),), tmp_path / "m.onnx", dynamo=dynamo, input_names=["x"],
                          dynamic_axes=None if dynamo else {"x": {0: "batch", 1: "time"}})
    model = files.read(tmp_path / "m.onnx")
    assert model.semantics() == [f"{model.layers[0].name}: return_sequences=False"]
    files.convert(tmp_path / "m.onnx", tmp_path / "m.keras")
    expected = _out(module, x)
    got = np.asarray(keras.saving.load_model(tmp_path / "m.keras")(x))
    assert got.shape == expected.shape == (2, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert lc.verify.verify(tmp_path / "m.onnx", tmp_path / "m.keras").ok


def test_a_bidirectional_output_step_is_refused(tmp_path, rng):
    # out[:, -1] of a bidirectional module is the reverse direction's first step, not a layer's last output.
    module = _LastStep("out", bidirectional=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, 5, 7),), tmp_path / "m.onnx", dynamo=False)
    with pytest.raises(lc.UnsupportedError, match=r"nodes .*\(Gather\) compute on the model's data outside any"):
        files.read(tmp_path / "m.onnx")


def test_verify_of_a_keras_file_written_by_tf_keras(tmp_path, rng, capsys):
    import tf_keras  # pip install --no-deps tf_keras (see README)

    model = tf_keras.Sequential([tf_keras.layers.InputLayer((None, 7)),
                                 tf_keras.layers.LSTM(3, return_sequences=True), tf_keras.layers.Dropout(0.2),
                                 tf_keras.layers.GRU(2)])
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    model.save(tmp_path / "old.keras")  # its LSTM config has time_major, which Keras 3 refuses
    assert main(["convert", str(tmp_path / "old.keras"), str(tmp_path / "new.keras")]) == 0
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "old.keras"), str(tmp_path / "new.keras")]) == 0
    out = capsys.readouterr().out
    assert "A: " in out and "(run by tf_keras)" in out and "(run by keras)" in out
    x = rng.normal(size=(2, 5, 7)).astype("float32")
    np.testing.assert_allclose(np.asarray(keras.saving.load_model(tmp_path / "new.keras")(x)),
                               np.asarray(model(x)), rtol=0, atol=1e-5)


def test_a_layer_off_the_output_path_is_refused(tmp_path):
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(7, 3, batch_first=True)
            self.head = torch.nn.Linear(3, 2)
            self.aux = torch.nn.Linear(3, 4)

        def forward(self, x):
            y, _ = self.rnn(x)
            return self.head(y), self.aux(y)  # a second output from another head

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TwoHeads().eval(), (torch.randn(2, 5, 7),), tmp_path / "m.onnx", dynamo=False)
    with pytest.raises(lc.UnsupportedError, match=r"is a layer off the way to the model's output"):
        files.read(tmp_path / "m.onnx")
