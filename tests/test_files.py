"""Model files end to end: real files made by Keras, tf_keras and PyTorch in tmp_path, every reader/writer pair."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import lstm_convert as lc
from conftest import assert_same_weights, randomize_keras, randomize_torch
from lstm_convert import files
from lstm_convert.cli import main


@pytest.fixture
def seed_keras(tmp_path, rng):
    """The seed model, Input((18, 7)) -> LSTM(2) -> Dense(5), with random weights, saved as .keras."""
    model = keras.Sequential([keras.Input((18, 7)), keras.layers.LSTM(2, name="lstm"),
                              keras.layers.Dense(5, name="dense")])
    path = tmp_path / "seed.keras"
    randomize_keras(model, rng).save(path)
    return path, model


class Chain(torch.nn.Module):
    """An LSTM followed by a Linear, batch-first: what a .keras written from its state dict computes."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.LSTM(7, 3, batch_first=True)
        self.head = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.head(self.encoder(x)[0])


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "lstm_convert", *map(str, argv)],
                          capture_output=True, text=True, timeout=300)


def test_seed_counts(seed_keras, tmp_path, capsys):
    path, _ = seed_keras
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [(layer["name"], layer["type"], layer["params"]) for layer in info["layers"]] == [
        ("lstm", "LSTM", 80), ("dense", "Dense", 15)]
    assert info["total_params"] == 95
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "    cell (c)   [:, 4:6] [:, 4:6]         [4:6]     (2, 7)   (2, 2)" in text
    assert re.search(r"^total +95$", text, re.M)
    torch.save(torch.nn.LSTM(7, 2).state_dict(), tmp_path / "lstm.pt")
    assert main(["inspect", str(tmp_path / "lstm.pt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total_params"] == 88 and info["layers"][0]["params"] == 88


def test_keras_file_read_without_keras_matches_keras(seed_keras):
    path, model = seed_keras
    read = files.read(path)
    assert [layer.name for layer in read] == ["lstm", "dense"]
    assert_same_weights(read, lc.from_keras(model))
    kernel, recurrent, bias = model.layers[0].get_weights()
    np.testing.assert_array_equal(read["lstm"].gate("output").W_h, recurrent[:, 6:8].T)
    np.testing.assert_array_equal(read["dense"].weight, model.layers[1].get_weights()[0].T)


def test_keras_to_archive_to_keras_round_trip(seed_keras, tmp_path):
    path, model = seed_keras
    files.convert(path, tmp_path / "a.safetensors")
    files.convert(tmp_path / "a.safetensors", tmp_path / "back.keras")
    back = keras.saving.load_model(tmp_path / "back.keras")
    for a, b in zip(model.get_weights(), back.get_weights(), strict=True):
        assert a.tobytes() == b.tobytes()
    assert back.layers[0].get_config()["return_sequences"] is False  # Keras settings kept
    x = np.random.default_rng(1).normal(size=(2, 18, 7)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(back(x)))


def test_keras_to_pt_and_verify(seed_keras, tmp_path, rng):
    path, model = seed_keras
    assert main(["convert", str(path), str(tmp_path / "seed.pt")]) == 0
    state = torch.load(tmp_path / "seed.pt", weights_only=True)
    assert list(state) == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
                           "dense.weight", "dense.bias"]
    lstm, dense = torch.nn.LSTM(7, 2, batch_first=True), torch.nn.Linear(2, 5)
    lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")}, strict=True)
    dense.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("dense.")}, strict=True)
    x = rng.normal(size=(3, 18, 7)).astype("float32")
    with torch.no_grad():
        got = dense(lstm(torch.from_numpy(x))[0][:, -1]).numpy()
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=0, atol=1e-5)
    result = lc.verify.verify(path, tmp_path / "seed.pt")
    assert result.runners == ("keras", "torch") and result.ok
    assert [(r["layer"], r["part"]) for r in result.rows] == [
        ("model", "output"), ("lstm", "output"), ("lstm", "h"), ("lstm", "c"), ("dense", "output")]
    assert result.rows[0]["shapes"] == ([3, 5], [3, 5])  # the Keras model's output: the last step only


def test_pt_to_keras_is_a_runnable_model(tmp_path, rng):
    module = randomize_torch(Chain(), rng)
    torch.save(module.state_dict(), tmp_path / "chain.pt")
    assert main(["convert", str(tmp_path / "chain.pt"), str(tmp_path / "chain.keras")]) == 0
    loaded = keras.saving.load_model(tmp_path / "chain.keras")
    x = rng.normal(size=(2, 6, 7)).astype("float32")
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(loaded(x)), expected, rtol=0, atol=1e-5)
    assert [layer.name for layer in loaded.layers] == ["encoder", "head"]
    assert lc.verify.verify(tmp_path / "chain.pt", tmp_path / "chain.keras").ok


def test_torch_safetensors_both_ways(tmp_path, rng):
    module = randomize_torch(Chain(), rng)
    save_file(module.state_dict(), tmp_path / "plain.safetensors")  # as safetensors.torch writes it
    assert files.detect(tmp_path / "plain.safetensors") == "torch"
    files.convert(tmp_path / "plain.safetensors", tmp_path / "archive.safetensors")
    assert files.detect(tmp_path / "archive.safetensors") == "archive"
    assert main(["convert", str(tmp_path / "archive.safetensors"), str(tmp_path / "again.safetensors"),
                 "--to", "torch"]) == 0
    state = load_file(tmp_path / "again.safetensors")
    fresh = Chain()
    fresh.load_state_dict(state, strict=True)
    for key, value in module.state_dict().items():
        assert torch.equal(state[key], value), key
    files.convert(tmp_path / "again.safetensors", tmp_path / "again.pt")
    assert list(torch.load(tmp_path / "again.pt", weights_only=True)) == list(module.state_dict())


def test_single_module_keys_kept_exactly(tmp_path, rng):
    module = randomize_torch(torch.nn.LSTM(7, 3, num_layers=2), rng)
    torch.save(module.state_dict(), tmp_path / "lstm.pt")
    files.convert(tmp_path / "lstm.pt", tmp_path / "lstm.safetensors")
    files.convert(tmp_path / "lstm.safetensors", tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert list(back) == list(module.state_dict())
    for key, value in module.state_dict().items():
        assert torch.equal(back[key], value)


def test_embedding_needs_to_be_named(tmp_path, rng):
    module = torch.nn.Sequential()
    module.add_module("embed", torch.nn.Embedding(10, 7))
    torch.save(module.state_dict(), tmp_path / "emb.pt")
    done = _cli("inspect", tmp_path / "emb.pt")
    assert done.returncode == 1
    assert "embed.weight alone may be nn.Embedding or nn.Linear(bias=False)" in done.stderr
    assert "--kind embed=embedding" in done.stderr
    assert main(["inspect", str(tmp_path / "emb.pt"), "--kind", "embed=embedding"]) == 0


def test_legacy_h5_from_tf_keras(tmp_path, rng):
    import tf_keras  # pip install --no-deps tf_keras (see README)

    model = tf_keras.Sequential([tf_keras.layers.Embedding(10, 7, input_length=18),
                                 tf_keras.layers.LSTM(3, return_sequences=True),
                                 tf_keras.layers.LSTM(2), tf_keras.layers.Dense(5)])
    model.build((None, 18))
    randomize_keras(model, rng)
    model.save(tmp_path / "old.h5")
    read = files.read(tmp_path / "old.h5")
    assert [layer.kind for layer in read] == ["embedding", "lstm", "lstm", "dense"]
    assert read.count_params("keras") == model.count_params()
    assert main(["convert", str(tmp_path / "old.h5"), str(tmp_path / "new.keras")]) == 0
    new = keras.saving.load_model(tmp_path / "new.keras")
    x = rng.integers(0, 10, size=(3, 18))
    np.testing.assert_allclose(np.asarray(new(x)), model(x).numpy(), rtol=0, atol=1e-5)
    assert lc.verify.verify(tmp_path / "old.h5", tmp_path / "new.keras").ok


def test_legacy_h5_hard_sigmoid_is_keras2(tmp_path, rng):
    import tf_keras  # pip install --no-deps tf_keras (see README)

    model = tf_keras.Sequential([tf_keras.layers.LSTM(3, recurrent_activation="hard_sigmoid")])
    model.build((None, 6, 7))
    randomize_keras(model, rng)
    model.save(tmp_path / "hs.h5")
    layer = files.read(tmp_path / "hs.h5").layers[0]
    assert layer.recurrent_activation == "hard_sigmoid_keras2"
    from lstm_convert.reference import forward
    x = rng.normal(size=(2, 6, 7)).astype("float32")
    np.testing.assert_allclose(forward(layer, x, sequences=True)[0][:, -1], model(x).numpy(), rtol=0, atol=1e-5)
    done = _cli("convert", tmp_path / "hs.h5", tmp_path / "hs.keras")
    assert done.returncode == 1 and not (tmp_path / "hs.keras").exists()
    assert "Keras 2's hard_sigmoid (0.2x + 0.5), which Keras 3 no longer has" in done.stderr
    assert main(["convert", str(tmp_path / "hs.h5"), str(tmp_path / "hs.safetensors")]) == 0


def test_keras3_legacy_h5(tmp_path, seed_keras):
    _, model = seed_keras
    model.save(tmp_path / "k3.h5")
    read = files.read(tmp_path / "k3.h5")
    assert read.source["file_format"] == "h5" and read.source["framework_version"].startswith("3.")
    assert_same_weights(read, files.read(seed_keras[0]))


def test_never_overwrites_never_leaves_partial(tmp_path, seed_keras, rng):
    path, _ = seed_keras
    dst = tmp_path / "out.pt"
    dst.write_bytes(b"keep me")
    done = _cli("convert", path, dst)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "out.pt: already exists; pass --overwrite" in done.stderr
    assert dst.read_bytes() == b"keep me"
    assert main(["convert", str(path), str(dst), "--overwrite"]) == 0
    assert dst.read_bytes() != b"keep me"
    relu = keras.Sequential([keras.Input((4, 7)), keras.layers.LSTM(2, activation="relu")])
    relu.save(tmp_path / "relu.keras")
    before = sorted(p.name for p in tmp_path.iterdir())
    done = _cli("convert", tmp_path / "relu.keras", tmp_path / "relu.pt")
    assert done.returncode == 1
    assert "activation is 'relu', but nn.LSTM only computes tanh" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no destination, no temporary file


def test_verify_catches_a_tampered_gate(tmp_path, seed_keras):
    path, _ = seed_keras
    files.convert(path, tmp_path / "a.safetensors")
    assert main(["verify", str(path), str(tmp_path / "a.safetensors")]) == 0
    # Weights that were changed and saved again properly compute another function: verify says where.
    weights = lc.load(tmp_path / "a.safetensors")
    lstm = weights["lstm"]
    gates = dict(lstm.gates)
    forget = gates[(0, "forward", "forget")]
    gates[(0, "forward", "forget")] = lc.Gate(forget.W_x, forget.W_h + np.float32(0.01), forget.b_x, forget.b_h)
    import dataclasses
    changed = lc.Model((dataclasses.replace(lstm, gates=gates), weights["dense"]), config=weights.config,
                       source=weights.source)
    lc.save(changed, tmp_path / "changed.safetensors")
    done = _cli("verify", path, tmp_path / "changed.safetensors")
    assert done.returncode == 1
    assert "MISMATCH" in done.stdout and "FAILED" in done.stdout
    # Bytes changed inside the file are caught by the archive's own SHA-256.
    from safetensors import safe_open
    from safetensors.numpy import save_file as save_np
    with safe_open(tmp_path / "a.safetensors", "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    tensors["lstm.l0.forward.forget.W_h"] = tensors["lstm.l0.forward.forget.W_h"] + 0.01
    save_np(tensors, tmp_path / "bad.safetensors", metadata=meta)
    done = _cli("verify", path, tmp_path / "bad.safetensors")
    assert done.returncode == 1
    assert "tensor lstm.l0.forward.forget.W_h does not match its SHA-256" in done.stderr


def test_functional_branches_are_refused(tmp_path):
    inputs = keras.Input((5, 7))
    a, b = keras.layers.LSTM(2)(inputs), keras.layers.LSTM(2)(inputs)
    keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Concatenate()([a, b]))).save(tmp_path / "branch.keras")
    with pytest.raises(lc.UnsupportedError, match="only a single chain of layers is supported"):
        files.read(tmp_path / "branch.keras")


def test_keras_files_are_read_and_written_without_a_framework(tmp_path, seed_keras):
    path, _ = seed_keras
    code = (
        "import sys\nfor m in ('torch', 'keras', 'tensorflow'): sys.modules[m] = None\n"
        "from lstm_convert.cli import main\n"
        f"assert main(['inspect', {str(path)!r}]) == 0\n"
        f"assert main(['convert', {str(path)!r}, {str(tmp_path / 'nf.safetensors')!r}]) == 0\n"
        f"assert main(['convert', {str(tmp_path / 'nf.safetensors')!r}, {str(tmp_path / 'nf.keras')!r}]) == 0\n"
        "assert not any(sys.modules.get(m) for m in ('torch', 'keras', 'tensorflow'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "total" in done.stdout and "wrote" in done.stdout and done.stderr == ""
    assert_same_weights(files.read(tmp_path / "nf.safetensors"), files.read(path))
    # Written without Keras, the .keras file loads in Keras and computes what the source does.
    import keras

    x = np.random.default_rng(3).normal(size=(2, 18, 7)).astype("float32")
    np.testing.assert_array_equal(np.asarray(keras.saving.load_model(tmp_path / "nf.keras")(x)),
                                  np.asarray(keras.saving.load_model(path)(x)))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".keras", ".npz", ".onnx"])
def test_files_are_written_with_the_mode_open_gives_and_keep_it_on_overwrite(tmp_path, seed_keras, suffix):
    """0644 under the usual umask, 0600 under 077, and a replaced file keeps its own mode; a symlink
    replaced with --overwrite is a new file (its target keeps its mode)."""
    import os
    import stat

    src, _ = seed_keras

    def mode(path):
        return stat.S_IMODE(os.lstat(path).st_mode)
    old = os.umask(0o022)
    try:
        assert main(["convert", str(src), str(tmp_path / f"a{suffix}")]) == 0
        assert mode(tmp_path / f"a{suffix}") == 0o644
        os.umask(0o077)
        assert main(["convert", str(src), str(tmp_path / f"b{suffix}")]) == 0
        assert mode(tmp_path / f"b{suffix}") == 0o600
        os.chmod(tmp_path / f"a{suffix}", 0o640)
        assert main(["convert", str(src), str(tmp_path / f"a{suffix}"), "--overwrite"]) == 0
        assert mode(tmp_path / f"a{suffix}") == 0o640
        os.umask(0o002)
        (tmp_path / f"link{suffix}").symlink_to(tmp_path / f"a{suffix}")
        assert main(["convert", str(src), str(tmp_path / f"link{suffix}"), "--overwrite"]) == 0
        assert not (tmp_path / f"link{suffix}").is_symlink() and mode(tmp_path / f"link{suffix}") == 0o664
        assert mode(tmp_path / f"a{suffix}") == 0o640
    finally:
        os.umask(old)


def test_the_module_file_is_written_with_the_mode_open_gives(tmp_path, seed_keras):
    import os
    import stat

    src, _ = seed_keras
    old = os.umask(0o022)
    try:
        assert main(["convert", str(src), str(tmp_path / "w.pt"), "--module", str(tmp_path / "net.py")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "net.py").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "w.pt").st_mode) == 0o644
