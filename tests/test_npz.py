"""NumPy .npz state dicts (np.savez(**state_dict), as published models ship them): read, written, run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_torch_lstm

import lstm_convert as lc
from lstm_convert import files
from lstm_convert.cli import main


def _module(rng):
    module = torch.nn.Module()
    module.rnn = random_torch_lstm(rng, input_size=5, hidden_size=3, bidirectional=True)
    module.head = torch.nn.Linear(6, 4)
    with torch.no_grad():
        for p in module.head.parameters():
            p.copy_(torch.from_numpy(rng.normal(size=tuple(p.shape)).astype("float32")))
    return module


def sample(directory, rng):
    """An .npz as np.savez writes a PyTorch state dict, for the conformance suite (test_formats.py)."""
    state = {k: v.numpy() for k, v in _module(rng).state_dict().items()}
    np.savez(directory / "sample.npz", **state)
    return directory / "sample.npz"


def test_read_as_the_state_dict_it_holds(tmp_path, rng):
    module = _module(rng)
    np.savez(tmp_path / "m.npz", **{k: v.numpy() for k, v in module.state_dict().items()})
    model = files.read(tmp_path / "m.npz")
    assert [layer.name for layer in model.layers] == ["rnn", "head"]
    assert model.source["file_format"] == "npz"
    # The same canonical weights as reading the module itself, bit for bit.
    direct = lc.from_torch(module)
    for (name, a), (other, b) in zip(model.tensors(), direct.tensors(), strict=True):
        assert name == other and a.dtype == b.dtype and np.array_equal(a, b), name


def test_written_npz_loads_into_the_module(tmp_path, rng):
    module = _module(rng)
    files.write(lc.from_torch(module), tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz", allow_pickle=False) as archive:
        assert list(archive.files) == list(module.state_dict())  # module order kept
        state = {k: torch.from_numpy(archive[k]) for k in archive.files}
    other = _module(np.random.default_rng(1))
    other.load_state_dict(state, strict=True)
    x = torch.from_numpy(rng.normal(size=(4, 2, 5)).astype("float32"))  # (time, batch, features)
    h0 = torch.from_numpy(rng.normal(size=(2, 2, 3)).astype("float32"))
    c0 = torch.from_numpy(rng.normal(size=(2, 2, 3)).astype("float32"))
    with torch.no_grad():
        (want, (h, c)), (got, (h2, c2)) = module.rnn(x, (h0, c0)), other.rnn(x, (h0, c0))
    assert want.shape == got.shape == (4, 2, 6)
    assert torch.equal(want, got) and torch.equal(h, h2) and torch.equal(c, c2)


def test_what_an_npz_cannot_hold_is_said(tmp_path, rng, capsys):
    import keras

    model = keras.Sequential([keras.Input((4, 5)), keras.layers.LSTM(3, name="lstm"), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    assert main(["convert", str(tmp_path / "m.keras"), str(tmp_path / "m.npz")]) == 0
    assert "the .npz keeps every weight exactly, but not what the model computes around them (lstm: " \
           "return_sequences=False)" in capsys.readouterr().out
    module = str(tmp_path / "m.py")
    assert main(["convert", str(tmp_path / "m.keras"), str(tmp_path / "x.npz"), "--module", module]) == 1
    assert "a module file is written beside a PyTorch state dict, not beside NumPy .npz state dict files" in \
        capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "m.py").exists()


def test_bfloat16_is_refused_by_name(tmp_path, rng):
    layer = lc.from_torch(random_torch_lstm(rng, dtype="bfloat16"))
    with pytest.raises(lc.UnsupportedError, match="NumPy has no bfloat16"):
        files.write(lc.Model((layer,)), tmp_path / "b.npz")
    assert list(tmp_path.iterdir()) == []


def test_pickled_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "p.npz", weight=np.array([{"not": "an array"}], dtype=object))
    with pytest.raises(lc.FormatError, match=r"p.npz: weight.npy holds object, not numbers$"):
        files.read(tmp_path / "p.npz")


def test_selection_reads_only_the_selected_arrays(tmp_path, rng):
    module = _module(rng)
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    state["conv.weight"] = rng.normal(size=(6, 5, 3)).astype("float32")  # not converted, listed by its shape
    np.savez(tmp_path / "c.npz", **state)
    with pytest.raises(lc.UnsupportedError, match=r"does not convert: conv \(weight \(6, 5, 3\)\)"):
        files.read(tmp_path / "c.npz")
    model = files.read(tmp_path / "c.npz", only=["rnn"])
    assert [layer.name for layer in model.layers] == ["rnn"]
    listed = files.read(tmp_path / "c.npz", inventory=True)
    assert listed.config["unconverted"][0]["tensors"] == {"weight": [6, 5, 3]}
