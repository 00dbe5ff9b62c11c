"""Equinox modules and .eqx files (eqx.tree_serialise_leaves), against Equinox itself: each cell's outputs and
final states from non-zero initial states, the leaves bit for bit through the archive, the skeleton a file
needs, and what an Equinox cell cannot hold refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import lstm_convert as lc
from lstm_convert import files
from lstm_convert.cli import main
from lstm_convert.errors import FormatError, UnsupportedError

pytest.importorskip("equinox")

BATCH, STEPS, FEATURES, UNITS = 3, 6, 5, 4


def _eqx():
    import jax

    jax.config.update("jax_platforms", "cpu")
    import equinox

    return equinox


def _random(module, rng):
    """``module`` with every array leaf replaced by seeded random values (biases too)."""
    import jax
    import jax.numpy as jnp

    eqx = _eqx()
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(rng.normal(0, 0.5, leaf.shape).astype("float32")) if eqx.is_array(leaf) else leaf,
        module)


def _modules(rng):
    import jax

    eqx = _eqx()
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    return [_random(eqx.nn.LSTMCell(FEATURES, UNITS, key=keys[0]), rng),
            _random(eqx.nn.GRUCell(UNITS, 3, key=keys[1]), rng), _random(eqx.nn.Linear(3, 2, key=keys[2]), rng)]


SKELETON = [{"class": "LSTMCell", "input_size": FEATURES, "hidden_size": UNITS, "name": "enc"},
            {"class": "GRUCell", "input_size": UNITS, "hidden_size": 3, "name": "dec"},
            {"class": "Linear", "in_features": 3, "out_features": 2, "name": "head"}]


def sample(directory, rng):
    """An Equinox LSTMCell, GRUCell and Linear as eqx.tree_serialise_leaves writes them, with the skeleton file
    beside that reads it; for the conformance suite (test_formats.py), which reads the file alone: this sample
    is the kind lstm_convert writes, its skeleton a last record."""
    eqx = _eqx()
    path = directory / "raw.eqx"
    eqx.tree_serialise_leaves(path, _modules(rng))
    (directory / "raw.json").write_text(json.dumps(SKELETON))
    files.convert(path, directory / "sample.eqx", config=directory / "raw.json")
    return directory / "sample.eqx"


def _run_equinox(modules, x, h0, c0, g0):
    """The three modules over a sequence, each cell one step at a time, as an Equinox model scans them."""
    import jax
    import jax.numpy as jnp

    lstm, gru, head = (jax.vmap(m) for m in modules)
    h, c, g = jnp.asarray(h0), jnp.asarray(c0), jnp.asarray(g0)
    hs, gs, ys = [], [], []
    for t in range(x.shape[1]):
        h, c = lstm(jnp.asarray(x[:, t]), (h, c))
        g = gru(h, g)
        hs.append(h)
        gs.append(g)
        ys.append(head(g))
    return np.stack(hs, 1), np.stack(gs, 1), np.stack(ys, 1), (np.asarray(h), np.asarray(c), np.asarray(g))


def test_leaves_read_with_their_skeleton_run_as_equinox_and_torch(tmp_path, rng):
    import torch

    eqx = _eqx()
    modules = _modules(rng)
    eqx.tree_serialise_leaves(tmp_path / "m.eqx", modules)
    (tmp_path / "s.json").write_text(json.dumps(SKELETON))
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    h0, c0 = (rng.normal(size=(BATCH, UNITS)).astype("float32") for _ in range(2))
    g0 = rng.normal(size=(BATCH, 3)).astype("float32")
    hs, gs, ys, (h, c, g) = _run_equinox(modules, x, h0, c0, g0)
    model = files.read(tmp_path / "m.eqx", config=tmp_path / "s.json")
    assert [(layer.name, layer.kind, getattr(layer, "cell", None)) for layer in model.layers] == [
        ("enc", "lstm", True), ("dec", "gru", True), ("head", "dense", None)]
    cell = lc.to_torch(model.layers[0])  # nn.LSTMCell
    gru = lc.to_torch(model.layers[1])
    with torch.no_grad():
        state, gstate, outs = (torch.from_numpy(h0), torch.from_numpy(c0)), torch.from_numpy(g0), []
        for t in range(STEPS):
            state = cell(torch.from_numpy(x[:, t]), state)
            gstate = gru(state[0], gstate)
            outs.append(gstate)
    got = torch.stack(outs, 1).numpy()
    assert got.shape == gs.shape == (BATCH, STEPS, 3)
    np.testing.assert_allclose(got, gs, rtol=0, atol=1e-5)
    for ours, theirs in ((state[0], h), (state[1], c), (gstate, g)):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-5)


def test_through_the_archive_bit_for_bit_and_loaded_by_equinox(tmp_path, rng):
    import jax

    eqx = _eqx()
    modules = _modules(rng)
    eqx.tree_serialise_leaves(tmp_path / "m.eqx", modules)
    (tmp_path / "s.json").write_text(json.dumps(SKELETON))
    files.convert(tmp_path / "m.eqx", tmp_path / "m.safetensors", config=tmp_path / "s.json")
    files.convert(tmp_path / "m.safetensors", tmp_path / "back.eqx")
    data = (tmp_path / "back.eqx").read_bytes()
    assert data.startswith((tmp_path / "m.eqx").read_bytes())  # the same leaves, then the skeleton
    loaded = eqx.tree_deserialise_leaves(tmp_path / "back.eqx", modules)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(modules), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert [layer.name for layer in files.read(tmp_path / "back.eqx").layers] == ["enc", "dec", "head"]
    files.convert(tmp_path / "back.eqx", tmp_path / "m.pt")
    assert main(["verify", str(tmp_path / "back.eqx"), str(tmp_path / "m.pt")]) == 0  # Equinox against PyTorch


def test_a_file_without_its_skeleton_is_refused_with_the_hint(tmp_path, rng, capsys):
    eqx = _eqx()
    eqx.tree_serialise_leaves(tmp_path / "m.eqx", _modules(rng))
    assert main(["inspect", str(tmp_path / "m.eqx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds its arrays only" in err and "--config SKELETON.json" in err
    wrong = [dict(SKELETON[0], hidden_size=3), *SKELETON[1:]]
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    with pytest.raises(FormatError, match=r"enc.weight_ih is float32 of shape \(16, 5\), expected .* \(12, 5\)"):
        files.read(tmp_path / "m.eqx", config=tmp_path / "wrong.json")
    (tmp_path / "short.json").write_text(json.dumps(SKELETON[:2]))
    with pytest.raises(FormatError, match="holds 9 arrays, but the skeleton.s modules have 7"):
        files.read(tmp_path / "m.eqx", config=tmp_path / "short.json")


def test_objects_both_ways(rng):
    import jax

    modules = _modules(rng)
    model = lc.from_equinox(modules)
    assert [layer.kind for layer in model.layers] == ["lstm", "gru", "dense"]
    back = lc.to_equinox(model)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(modules), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_torch_to_equinox_adds_the_biases_an_equinox_cell_keeps_as_one(tmp_path, rng):
    import torch

    lstm = torch.nn.LSTM(FEATURES, UNITS, batch_first=True)
    for p in lstm.parameters():
        torch.nn.init.normal_(p, 0, 0.5)
    (cell,) = lc.to_equinox(lc.from_torch(lstm))
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    with torch.no_grad():
        expected, (h, c) = lstm(torch.from_numpy(x))
    hs, _, _, finals = _run_equinox([cell, *_modules(rng)[1:]], x, np.zeros((BATCH, UNITS), "float32"),
                                    np.zeros((BATCH, UNITS), "float32"), np.zeros((BATCH, 3), "float32"))
    np.testing.assert_allclose(hs, expected.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(finals[1], c[0].numpy(), rtol=0, atol=1e-5)
    bidirectional = torch.nn.GRU(FEATURES, UNITS, bidirectional=True, batch_first=True)
    with pytest.raises(UnsupportedError, match="an equinox.nn cell is one direction of one layer"):
        lc.to_equinox(lc.from_torch(bidirectional))


def test_reader_imports_no_jax(tmp_path, rng):
    path = sample(tmp_path, rng)
    code = (f"import sys; from lstm_convert import files; files.read({str(path)!r})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'equinox', 'torch', 'tensorflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_damaged_records_are_refused_in_one_line(tmp_path, rng, capsys):
    good = sample(tmp_path, rng).read_bytes()
    for label, data in {"cut": good[:len(good) // 2], "magic": b"\x93NUMPX" + good[6:],
                        "object": good.replace(b"'<f4'", b"'|O' ", 1)}.items():
        path = tmp_path / f"{label}.eqx"
        path.write_bytes(data)
        assert main(["inspect", str(path)]) == 1, label
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{label}.eqx" in err and "Traceback" not in err, (label, err)
