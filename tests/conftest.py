"""Shared fixtures: a seeded generator and random, gate-distinct layers in each framework."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SEED = 20261128


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def random_keras_lstm(rng, features=7, units=3, dtype="float32", **options):
    """A built Keras LSTM whose every weight (all gates, the bias) is random and distinct."""
    import keras

    layer = keras.layers.LSTM(units, dtype=dtype, **options)
    layer.build((None, None, features))
    layer.set_weights([rng.normal(0, 0.5, w.shape).astype(dtype) for w in layer.get_weights()])
    return layer


def randomize_keras(model, rng):
    """Give every weight of a Keras model random values (all gates, biases included)."""
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in layer.get_weights()])
    return model


def random_torch_lstm(rng, input_size=7, hidden_size=3, dtype="float32", module="LSTM", **options):
    """A PyTorch recurrent module whose every parameter is random, the two biases different."""
    import torch

    cls = getattr(torch.nn, module)
    layer = cls(input_size, hidden_size, dtype=getattr(torch, dtype), **options)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.from_numpy(rng.normal(0, 0.5, tuple(p.shape)).astype("float32")))
    return layer


def inputs(rng, batch=3, steps=6, features=7, states=1, units=3):
    """Random float32 input (batch, time, features) and non-zero initial (h, c) (states, batch, units)."""
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    h0 = rng.normal(size=(states, batch, units)).astype("float32")
    c0 = rng.normal(size=(states, batch, units)).astype("float32")
    return x, h0, c0


def run_keras(layer, x, h0, c0=None):
    """Output sequence and final states of a Keras recurrent layer (or cell), cloned through Keras'
    own get_config / from_config so that it returns everything, in one call."""
    import keras

    states = [h0] if c0 is None else [h0, c0]
    if isinstance(layer, keras.layers.Layer) and type(layer).__name__.endswith("Cell"):
        h = [s[0] for s in states]
        outputs = []
        for t in range(x.shape[1]):
            out, h = layer(x[:, t], h)
            h = list(h) if isinstance(h, (list, tuple)) else [h]
            outputs.append(np.asarray(out))
        return (np.stack(outputs, 1), *(np.asarray(s)[None] for s in h))
    config = layer.get_config()
    bidirectional = isinstance(layer, keras.layers.Bidirectional)
    for inner in ([config["layer"]["config"], config["backward_layer"]["config"]] if bidirectional else [config]):
        inner.update(return_sequences=True, return_state=True)
    config["name"] = f"{layer.name}_runner"
    runner = type(layer).from_config(config)
    runner.build((None, None, x.shape[2]))
    runner.set_weights(layer.get_weights())
    directions = 2 if bidirectional else 1
    initial = [s[d] for d in range(directions) for s in states]
    out = runner(x, initial_state=initial if len(initial) > 1 else initial[0])
    seq, rest = np.asarray(out[0]), [np.asarray(t) for t in out[1:]]
    n = len(states)
    return (seq, *(np.stack([rest[d * n + i] for d in range(directions)]) for i in range(n)))


def run_torch(module, x, h0, c0=None):
    """Output sequence (batch-major) and final states of a PyTorch recurrent module or cell."""
    import torch

    lstm = isinstance(module, (torch.nn.LSTM, torch.nn.LSTMCell))
    with torch.no_grad():
        if isinstance(module, torch.nn.RNNCellBase):  # one step at a time
            state = (torch.from_numpy(h0[0]), torch.from_numpy(c0[0])) if lstm else torch.from_numpy(h0[0])
            outputs = []
            for t in range(x.shape[1]):
                state = module(torch.from_numpy(x[:, t]), state)
                outputs.append(state[0] if lstm else state)
            finals = state if lstm else (state,)
            return (torch.stack(outputs, 1).numpy(), *(s.numpy()[None] for s in finals))
        xt = torch.from_numpy(x) if module.batch_first else torch.from_numpy(x).transpose(0, 1)
        state = (torch.from_numpy(h0), torch.from_numpy(c0)) if lstm else torch.from_numpy(h0)
        seq, finals = module(xt, state)
    seq = seq if module.batch_first else seq.transpose(0, 1)
    finals = finals if lstm else (finals,)
    return (seq.numpy(), *(s.numpy() for s in finals))


def assert_same_run(got, expected, atol=1e-5):
    """Compare (sequence, h[, c]) tuples, naming the part that differs."""
    assert len(got) == len(expected), f"{len(got)} outputs != {len(expected)}"
    for label, a, b in zip(("output sequence", "final h", "final c"), got, expected):
        assert a.shape == b.shape, f"{label}: shape {a.shape} != {b.shape}"
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=label)


def assert_same_weights(a, b):
    """Same layers (names, kinds) and every tensor equal bit for bit; provenance may differ."""
    a_layers, b_layers = list(getattr(a, "layers", [a])), list(getattr(b, "layers", [b]))
    assert [(x.name, x.kind) for x in a_layers] == [(y.name, y.kind) for y in b_layers]
    a_tensors, b_tensors = dict(a.tensors()), dict(b.tensors())
    assert list(a_tensors) == list(b_tensors)
    for name, array in a_tensors.items():
        other = b_tensors[name]
        assert array.dtype == other.dtype and array.shape == other.shape, name
        assert array.tobytes() == other.tobytes(), name


def randomize_torch(module, rng):
    """Every parameter of a PyTorch module random (all gates, both biases)."""
    import torch

    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.normal(0, 0.5, tuple(p.shape)).astype("float32")))
    return module
