"""Haiku parameter dicts and their .npz files, against Haiku itself: hk.LSTM's +1 on the forget gate kept as a
constant (bit for bit through the archive, folded for targets without one), hk.GRU's inverted update gate,
outputs and final states from non-zero initial states, and what the names cannot say refused."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import lstm_convert as lc
from lstm_convert import files, formats, reference
from lstm_convert.cli import main
from lstm_convert.errors import FormatError, UnsupportedError

pytest.importorskip("haiku")

BATCH, STEPS, FEATURES, UNITS = 3, 6, 5, 4


def _hk():
    import jax

    jax.config.update("jax_platforms", "cpu")
    import haiku

    return haiku


def _params(fn, x, rng):
    import jax

    hk = _hk()
    transformed = hk.without_apply_rng(hk.transform(fn))
    params = transformed.init(jax.random.PRNGKey(0), *x)
    params = jax.tree_util.tree_map(lambda a: rng.normal(0, 0.5, a.shape).astype("float32"), params)
    return transformed, params


def _save(path, params):
    np.savez(path, **{f"{m}/{k}": np.asarray(v) for m, values in params.items() for k, v in values.items()})
    return path


def _lstm_then_linear(x, h0, c0):
    hk = _hk()
    import jax.numpy as jnp

    core = hk.LSTM(UNITS)
    seq, final = hk.dynamic_unroll(core, jnp.swapaxes(x, 0, 1), hk.LSTMState(hidden=h0, cell=c0))
    return jnp.swapaxes(seq, 0, 1), final


def sample(directory, rng):
    """One hk.LSTM over 5 features, its parameters saved as an .npz of /-joined keys, for the conformance suite."""
    x = np.zeros((1, STEPS, FEATURES), np.float32)
    zeros = np.zeros((1, UNITS), np.float32)
    _, params = _params(_lstm_then_linear, (x, zeros, zeros), rng)
    return _save(directory / "sample.npz", params)


def test_lstm_keeps_its_forget_constant_and_runs_as_haiku(tmp_path, rng):
    import torch

    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    h0, c0 = (rng.normal(size=(BATCH, UNITS)).astype("float32") for _ in range(2))
    transformed, params = _params(_lstm_then_linear, (x, h0, c0), rng)
    seq, final = transformed.apply(params, x, h0, c0)
    path = _save(tmp_path / "m.npz", params)
    (layer,) = files.read(path).layers
    assert (layer.kind, layer.input_size, layer.hidden_size, layer.forget_bias) == ("lstm", FEATURES, UNITS, 1.0)
    module = lc.to_torch(layer)  # folded: PyTorch has no such constant
    with torch.no_grad():
        got, (h, c) = module(torch.from_numpy(x), (torch.from_numpy(h0[None]), torch.from_numpy(c0[None])))
    assert got.shape == np.asarray(seq).shape == (BATCH, STEPS, UNITS)
    np.testing.assert_allclose(got.numpy(), np.asarray(seq), rtol=0, atol=1e-5)
    np.testing.assert_allclose(h[0].numpy(), np.asarray(final.hidden), rtol=0, atol=1e-5)
    np.testing.assert_allclose(c[0].numpy(), np.asarray(final.cell), rtol=0, atol=1e-5)
    files.convert(path, tmp_path / "m.safetensors")
    assert lc.load(tmp_path / "m.safetensors").layers[0].forget_bias == 1.0  # kept, not folded
    files.convert(tmp_path / "m.safetensors", tmp_path / "back.npz", dst_format="haiku")
    a, b = np.load(path), np.load(tmp_path / "back.npz")
    assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)  # bit for bit
    report = files.convert(path, tmp_path / "m.pt")
    assert any("forget_bias 1.0" in note and "folded" in note for note in report.notes)
    assert main(["verify", str(path), str(tmp_path / "m.pt")]) == 0  # Haiku's own hk.LSTM against PyTorch


def test_gru_update_gate_is_negated_exactly(tmp_path, rng):
    import keras

    hk = _hk()
    import jax.numpy as jnp

    def fn(x, h0):
        core = hk.GRU(UNITS)
        seq, final = hk.dynamic_unroll(core, jnp.swapaxes(x, 0, 1), h0)
        return jnp.swapaxes(seq, 0, 1), final

    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    h0 = rng.normal(size=(BATCH, UNITS)).astype("float32")
    transformed, params = _params(fn, (x, h0), rng)
    seq, final = transformed.apply(params, x, h0)
    path = _save(tmp_path / "m.npz", params)
    model = files.read(path)
    (layer,) = model.layers
    assert layer.kind == "gru" and not layer.reset_after
    outputs, (h,) = reference.forward(layer, x, (h0[None],))
    np.testing.assert_allclose(outputs, np.asarray(seq), rtol=0, atol=1e-5)
    np.testing.assert_allclose(h[0], np.asarray(final), rtol=0, atol=1e-5)
    files.convert(path, tmp_path / "m.keras")
    got = np.asarray(keras.saving.load_model(tmp_path / "m.keras")(x))  # from zero states, as Keras starts
    from_zero, _ = transformed.apply(params, x, np.zeros_like(h0))
    np.testing.assert_allclose(got, np.asarray(from_zero), rtol=0, atol=1e-5)
    files.convert(path, tmp_path / "m.safetensors")
    files.convert(tmp_path / "m.safetensors", tmp_path / "back.npz", dst_format="haiku")
    a, b = np.load(path), np.load(tmp_path / "back.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    with pytest.raises(UnsupportedError, match="reset_after=False"):  # nn.GRU resets after the product
        files.convert(path, tmp_path / "m.pt")


def test_keras_lstm_to_haiku_runs_in_haiku(tmp_path, rng):
    import keras

    hk = _hk()
    import jax.numpy as jnp

    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.LSTM(UNITS, return_sequences=True),
                              keras.layers.Dense(2)])
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    model.save(tmp_path / "m.keras")
    report = files.convert(tmp_path / "m.keras", tmp_path / "m.npz", dst_format="haiku")
    assert any("minus 1.0" in note for note in report.notes)  # hk.LSTM adds 1 itself

    def fn(x):
        core = hk.LSTM(UNITS)
        seq, _ = hk.dynamic_unroll(core, jnp.swapaxes(x, 0, 1), core.initial_state(x.shape[0]))
        return hk.Linear(2)(jnp.swapaxes(seq, 0, 1))

    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    data = np.load(tmp_path / "m.npz")
    params = {}
    for key in data.files:
        module, _, name = key.rpartition("/")
        params.setdefault(module, {})[name] = jnp.asarray(data[key])
    got = np.asarray(hk.without_apply_rng(hk.transform(fn)).apply(params, x))
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=0, atol=1e-5)


def test_names_that_do_not_say_are_refused(tmp_path, rng, capsys):
    hk = _hk()
    import jax.numpy as jnp

    def fn(x):
        core = hk.LSTM(UNITS, name="encoder")
        seq, _ = hk.dynamic_unroll(core, jnp.swapaxes(x, 0, 1), core.initial_state(x.shape[0]))
        return hk.Linear(2)(seq)

    x = np.zeros((BATCH, STEPS, FEATURES), np.float32)
    _, params = _params(fn, (x,), rng)
    path = _save(tmp_path / "m.npz", params)
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "encoder/linear is an hk.LSTM named 'encoder' or a Linear inside" in err
    assert "--kind encoder=lstm" in err
    with pytest.raises(UnsupportedError, match=r"holds 2 modules \(encoder, linear\)"):
        files.read(path, kinds={"encoder": "lstm"})
    model = files.read(path, kinds={"encoder": "lstm"}, only=["encoder", "linear"])
    assert [(layer.name, layer.kind) for layer in model.layers] == [("encoder", "lstm"), ("linear", "dense")]


def test_told_apart_from_a_pytorch_npz(tmp_path, rng):
    path = sample(tmp_path, rng)
    assert formats.detect(path).name == "haiku"
    torch_npz = tmp_path / "t.npz"
    np.savez(torch_npz, **{"lstm.weight_ih_l0": np.zeros((8, 3), np.float32)})
    assert formats.detect(torch_npz).name == "npz"


def test_reader_imports_no_jax(tmp_path, rng):
    path = sample(tmp_path, rng)
    code = (f"import sys; from lstm_convert import files; files.read({str(path)!r})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'haiku', 'torch', 'tensorflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bad_arrays_are_refused_by_name(tmp_path, rng):
    np.savez(tmp_path / "m.npz", **{"gru/w_i": np.zeros((5, 12), np.float32), "gru/w_h": np.zeros((4, 11), np.float32),
                                    "gru/b": np.zeros(12, np.float32)})
    with pytest.raises(FormatError, match=r"gru/w_h: has shape \(4, 11\), expected \(H, 3H\)"):
        files.read(tmp_path / "m.npz")


def test_library_from_and_to_haiku(rng):
    x = np.zeros((1, STEPS, FEATURES), np.float32)
    zeros = np.zeros((1, UNITS), np.float32)
    _, params = _params(_lstm_then_linear, (x, zeros, zeros), rng)
    model = lc.from_haiku(params)  # JAX arrays in
    assert model.layers[0].forget_bias == 1.0
    back = lc.to_haiku(model)
    assert set(back) == set(params) and all(np.array_equal(back[m][k], np.asarray(params[m][k]))
                                            for m in params for k in params[m])
