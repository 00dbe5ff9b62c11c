"""Flax linen parameter trees and their .msgpack files, against flax.linen itself: every cell's outputs and
final states from non-zero initial carries, bidirectional and sequential models, the bytes
flax.serialization writes, and what a tree cannot say refused."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import lstm_convert as lc
from lstm_convert import files, formats
from lstm_convert.cli import main
from lstm_convert.errors import FormatError, UnsupportedError

pytest.importorskip("flax")

BATCH, STEPS, FEATURES, UNITS = 3, 6, 5, 4


def _linen():
    import jax

    jax.config.update("jax_platforms", "cpu")
    from flax import linen

    return linen


def _random(tree, rng):
    import jax

    return jax.tree_util.tree_map(lambda a: rng.normal(0, 0.5, a.shape).astype("float32"), tree)


def _save(path, variables):
    from flax import serialization

    path.write_bytes(serialization.to_bytes(variables))
    return path


def sample(directory, rng):
    """One nn.Sequential of an LSTM over 5 features and a Dense head, as flax.serialization.to_bytes writes it,
    for the conformance suite (test_formats.py)."""
    linen = _linen()
    model = linen.Sequential([linen.RNN(linen.LSTMCell(3)), linen.Dense(2)])
    variables = _random(model.init(_key(), np.zeros((1, STEPS, FEATURES), np.float32)), rng)
    return _save(directory / "sample.msgpack", variables)


def _key(seed=0):
    import jax

    return jax.random.PRNGKey(seed)


CELLS = {"lstm": "LSTMCell", "optimized": "OptimizedLSTMCell", "gru": "GRUCell", "rnn": "SimpleCell"}


@pytest.mark.parametrize("kind", list(CELLS))
def test_each_cell_runs_as_flax_computes_it(kind, tmp_path, rng):
    linen = _linen()
    import jax.numpy as jnp
    import torch

    cell = getattr(linen, CELLS[kind])(UNITS)
    rnn = linen.RNN(cell, return_carry=True)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    variables = _random(rnn.init(_key(), x), rng)
    h0, c0 = (rng.normal(size=(BATCH, UNITS)).astype("float32") for _ in range(2))
    lstm = kind in ("lstm", "optimized")
    carry, expected = rnn.apply(variables, x, initial_carry=(jnp.asarray(c0), jnp.asarray(h0)) if lstm else h0)
    path = _save(tmp_path / "m.msgpack", variables)
    (layer,) = files.read(path).layers
    assert (layer.kind, layer.input_size, layer.hidden_size) == ("lstm" if lstm else kind, FEATURES, UNITS)
    module = lc.to_torch(layer)
    with torch.no_grad():
        if lstm:
            got, (h, c) = module(torch.from_numpy(x), (torch.from_numpy(h0[None]), torch.from_numpy(c0[None])))
            finals = [(h[0], carry[1]), (c[0], carry[0])]  # flax's LSTM carry is (c, h)
        else:
            got, h = module(torch.from_numpy(x), torch.from_numpy(h0[None]))
            finals = [(h[0], carry)]
    assert got.shape == expected.shape == (BATCH, STEPS, UNITS)
    np.testing.assert_allclose(got.numpy(), np.asarray(expected), rtol=0, atol=1e-5)
    for ours, theirs in finals:
        np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=0, atol=1e-5)


def test_bidirectional_and_sequential_through_keras_and_the_archive_bit_for_bit(tmp_path, rng):
    linen = _linen()
    import keras

    model = linen.Sequential([linen.Embed(12, FEATURES),
                              linen.Bidirectional(linen.RNN(linen.LSTMCell(3)), linen.RNN(linen.LSTMCell(3))),
                              linen.RNN(linen.GRUCell(UNITS)), linen.Dense(2)])
    tokens = rng.integers(0, 12, size=(BATCH, STEPS)).astype("int32")
    variables = _random(model.init(_key(), tokens), rng)
    expected = np.asarray(model.apply(variables, tokens))
    path = _save(tmp_path / "m.msgpack", variables)
    read = files.read(path)
    assert [(layer.name, layer.kind) for layer in read.layers] == [
        ("layers_0", "embedding"), ("layers_1", "lstm"), ("layers_2", "gru"), ("layers_3", "dense")]
    assert read.layers[1].directions == 2
    files.convert(path, tmp_path / "m.keras")
    got = np.asarray(keras.saving.load_model(tmp_path / "m.keras")(tokens))
    assert got.shape == expected.shape == (BATCH, STEPS, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    files.convert(path, tmp_path / "m.safetensors")
    files.convert(tmp_path / "m.safetensors", tmp_path / "back.msgpack")
    # A tree that went through jax.tree_util (as any trained one has) has its keys sorted, as lstm_convert
    # writes them: the bytes flax.serialization wrote
    assert (tmp_path / "back.msgpack").read_bytes() == path.read_bytes()
    assert main(["verify", str(path), str(tmp_path / "m.keras")]) == 0


def test_torch_to_flax_loads_into_the_matching_module(tmp_path, rng):
    """PyTorch's two LSTM biases become Flax's one; a GRU's recurrent-side reset and update biases move to
    the input side, where they add the same."""
    linen = _linen()
    import torch
    from flax import serialization

    torch.manual_seed(0)
    net = torch.nn.Sequential()
    lstm, gru = torch.nn.LSTM(FEATURES, UNITS, batch_first=True), torch.nn.GRU(UNITS, 3, batch_first=True)
    for module in (lstm, gru):
        for p in module.parameters():
            torch.nn.init.normal_(p, 0, 0.5)
    torch.save({**{f"lstm.{k}": v for k, v in lstm.state_dict().items()},
                **{f"gru.{k}": v for k, v in gru.state_dict().items()}}, tmp_path / "m.pt")
    files.convert(tmp_path / "m.pt", tmp_path / "m.msgpack")
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    with torch.no_grad():
        expected = gru(lstm(torch.from_numpy(x))[0])[0].numpy()
    flax_model = linen.Sequential([linen.RNN(linen.LSTMCell(UNITS)), linen.RNN(linen.GRUCell(3))])
    template = flax_model.init(_key(), x)
    variables = serialization.from_bytes(template, (tmp_path / "m.msgpack").read_bytes())  # strict: same tree
    got = np.asarray(flax_model.apply(variables, x))
    assert got.shape == expected.shape == (BATCH, STEPS, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert net is not None


def test_cells_named_by_their_class_are_not_guessed_into_an_order(tmp_path, rng, capsys):
    """Cells made inline in a compact module are named LSTMCell_0 and LSTMCell_1 wherever their nn.RNN sits:
    a stack and a bidirectional layer look the same."""
    linen = _linen()

    class Inline(linen.Module):
        @linen.compact
        def __call__(self, x):
            return linen.Bidirectional(linen.RNN(linen.LSTMCell(3)), linen.RNN(linen.LSTMCell(3)))(x)

    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    path = _save(tmp_path / "m.msgpack", _random(Inline().init(_key(), x), rng))
    with pytest.raises(UnsupportedError, match=r"holds 2 modules \(LSTMCell_0, LSTMCell_1\).*two directions"):
        files.read(path)
    assert main(["convert", str(path), str(tmp_path / "m.pt"), "--only", "LSTMCell_0", "--only", "LSTMCell_1"]) == 1
    assert "select one module with --only" in capsys.readouterr().err and not (tmp_path / "m.pt").exists()
    (layer,) = files.read(path, only=["LSTMCell_1"]).layers
    assert layer.cell and layer.name == "LSTMCell_1"  # one step of a cell: what the tree says


def test_modules_named_by_attribute_run_in_the_order_given(tmp_path, rng):
    linen = _linen()

    class Named(linen.Module):
        def setup(self):
            self.head = linen.Dense(2)
            self.encoder = linen.RNN(linen.GRUCell(UNITS))

        def __call__(self, x):
            return self.head(self.encoder(x))

    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    variables = _random(Named().init(_key(), x), rng)
    expected = np.asarray(Named().apply(variables, x))
    path = _save(tmp_path / "m.msgpack", variables)
    with pytest.raises(UnsupportedError, match="keeps no order between its modules"):
        files.read(path)
    model = files.read(path, only=["encoder", "head"])
    assert [layer.name for layer in model.layers] == ["encoder", "head"]
    from lstm_convert import reference

    got = reference.run(model, x)[-1][0]
    assert got.shape == expected.shape == (BATCH, STEPS, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_what_flax_cells_cannot_hold_is_refused_by_name(tmp_path, rng):
    import keras

    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.GRU(3, reset_after=False, name="old")])
    model.save(tmp_path / "m.keras")
    with pytest.raises(UnsupportedError, match="old: a GRU with reset_after=False"):
        files.convert(tmp_path / "m.keras", tmp_path / "m.msgpack")
    assert not (tmp_path / "m.msgpack").exists()
    keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.LSTM(3, activation="relu", name="r")]).save(
        tmp_path / "r.keras")
    verdict = formats.get("flax").check(files.read(tmp_path / "r.keras"))
    assert verdict.verdict == "weights" and any("activation_fn" in n for n in verdict.layers["r"].needs)


def test_damaged_files_are_refused_in_one_line(tmp_path, rng, capsys):
    good = sample(tmp_path, rng).read_bytes()
    cases = {"cut": good[:len(good) // 2], "bytes": good.replace(b"\xa7float32\xc4\x0c", b"\xa7float32\xc4\x0b", 1),
             "dtype": good.replace(b"float32", b"object\x00", 1)}
    for label, data in cases.items():
        path = tmp_path / f"{label}.msgpack"
        path.write_bytes(data)
        assert main(["inspect", str(path)]) == 1, label
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{label}.msgpack" in err and "Traceback" not in err, (label, err)


def test_chunked_arrays_are_joined(tmp_path, rng, monkeypatch):
    """flax.serialization cuts an array past MAX_CHUNK_SIZE into flat chunks; made small here."""
    from flax import serialization

    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 64)
    linen = _linen()
    rnn = linen.RNN(linen.LSTMCell(UNITS))
    x = np.zeros((1, STEPS, FEATURES), np.float32)
    variables = _random(rnn.init(_key(), x), rng)
    path = _save(tmp_path / "m.msgpack", variables)
    assert b"__msgpack_chunked_array__" in path.read_bytes()
    (layer,) = files.read(path).layers
    kernel = np.asarray(variables["params"]["cell"]["ii"]["kernel"])
    assert np.array_equal(layer.gate("input").W_x, kernel.T)


def test_reader_imports_no_jax(tmp_path, rng):
    path = sample(tmp_path, rng)
    code = (f"import sys; from lstm_convert import files; files.read({str(path)!r})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'torch', 'tensorflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_not_a_tree_is_refused_by_name(tmp_path):
    import msgpack

    (tmp_path / "list.msgpack").write_bytes(msgpack.packb([1, 2, 3]))
    with pytest.raises(FormatError, match="list.msgpack: holds a msgpack list, not a map of parameters"):
        files.read(tmp_path / "list.msgpack", fmt="flax")


def test_library_from_and_to_flax_objects(rng):
    linen = _linen()
    import jax.numpy as jnp

    rnn = linen.RNN(linen.GRUCell(UNITS))
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    variables = _random(rnn.init(_key(), x), rng)
    variables = {"params": {k: v for k, v in variables["params"].items()}}
    model = lc.from_flax(variables)  # JAX arrays in, NumPy out
    assert isinstance(model.layers[0], lc.RecurrentLayer) and model.layers[0].kind == "gru"
    back = lc.to_flax(model)
    got = np.asarray(rnn.apply({"params": {"cell": {k: {r: jnp.asarray(a) for r, a in v.items()}
                                                    for k, v in back["params"]["cell"].items()}}}, x))
    np.testing.assert_array_equal(got, np.asarray(rnn.apply(variables, x)))


# -- Flax NNX: nnx.state(model, nnx.Param).to_pure_dict(), saved with flax.serialization.msgpack_serialize --------

NNX = ["LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell"]


def _nnx_random(module, rng):
    import jax
    from flax import nnx

    state = nnx.state(module, nnx.Param)
    pure = jax.tree_util.tree_map(lambda a: rng.normal(0, 0.5, a.shape).astype("float32"), nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(module, state)
    return pure


@pytest.mark.parametrize("cls", NNX)
def test_nnx_cells_bidirectional_and_sequential(cls, tmp_path, rng):
    _linen()
    from flax import nnx, serialization

    from lstm_convert import reference

    cell = getattr(nnx, cls)
    model = nnx.Sequential(nnx.Bidirectional(nnx.RNN(cell(FEATURES, UNITS, rngs=nnx.Rngs(0))),
                                             nnx.RNN(cell(FEATURES, UNITS, rngs=nnx.Rngs(1))), rngs=nnx.Rngs(2)),
                           nnx.Linear(2 * UNITS, 2, rngs=nnx.Rngs(3)))
    pure = _nnx_random(model, rng)
    path = tmp_path / "m.msgpack"
    path.write_bytes(serialization.msgpack_serialize(pure))
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    expected = np.asarray(model(x))
    read = files.read(path)
    assert [layer.name for layer in read.layers] == ["layers.0", "layers.1"]
    assert read.layers[0].directions == 2 and read.layers[0].source["layout"] == f"flax.nnx {cls}"
    got = reference.run(read, x)[-1][0]
    assert got.shape == expected.shape == (BATCH, STEPS, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    files.convert(path, tmp_path / "m.safetensors")
    files.convert(tmp_path / "m.safetensors", tmp_path / "back.msgpack")
    assert (tmp_path / "back.msgpack").read_bytes() == path.read_bytes()  # as msgpack_serialize wrote it
    files.convert(path, tmp_path / "m.pt")
    assert main(["verify", str(path), str(tmp_path / "m.pt")]) == 0  # NNX's own cells against PyTorch


def test_nnx_gru_has_no_recurrent_candidate_bias(rng):
    """A PyTorch GRU whose bias_hh for the candidate is not zero cannot be an nnx.GRUCell: refused, naming it;
    with that bias zero it loads into one and computes what PyTorch does."""
    _linen()
    import torch
    from flax import nnx

    gru = torch.nn.GRU(FEATURES, UNITS, batch_first=True)
    for p in gru.parameters():
        torch.nn.init.normal_(p, 0, 0.5)
    layer = lc.from_torch(gru)
    with pytest.raises(UnsupportedError, match="nnx's GRUCell has no recurrent-side candidate bias"):
        lc.to_flax(layer, api="nnx")
    lc.to_flax(layer)  # linen's GRUCell has one
    with torch.no_grad():
        gru.bias_hh_l0[2 * UNITS:] = 0
    pure = lc.to_flax(lc.from_torch(gru), api="nnx")
    module = nnx.RNN(nnx.GRUCell(FEATURES, UNITS, rngs=nnx.Rngs(0)))
    state = nnx.state(module, nnx.Param)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(module, state)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    with torch.no_grad():
        expected = gru(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(np.asarray(module(x)), expected, rtol=0, atol=1e-5)


def test_single_step_cells_in_sequence_read_back_in_order(tmp_path, rng):
    """Cells (one step each, as Equinox keeps them) written as nn.Sequential names them read back in order:
    only cells named by their class are ambiguous."""
    import torch

    cell = torch.nn.LSTMCell(FEATURES, UNITS)
    head = torch.nn.Linear(UNITS, 2)
    for p in [*cell.parameters(), *head.parameters()]:
        torch.nn.init.normal_(p, 0, 0.5)
    model = lc.Model((lc.from_torch(cell, name="cell"), lc.from_torch(head, name="head")))
    files.write(model, tmp_path / "m.msgpack")
    read = files.read(tmp_path / "m.msgpack")
    assert [(layer.kind, getattr(layer, "cell", None)) for layer in read.layers] == [("lstm", True), ("dense", None)]
    from lstm_convert import reference

    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    np.testing.assert_allclose(reference.run(read, x)[-1][0], reference.run(model, x)[-1][0], rtol=0, atol=1e-6)
