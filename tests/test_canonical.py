"""The canonical form on its own: validation, immutability, equality, counts. NumPy only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lstm_convert import ConfigError, Gate, RecurrentLayer, ShapeError
from lstm_convert.canonical import tensor_name

GATES = ("input", "forget", "cell", "output")


def make(rng, input_size=7, hidden=2, bias=True, dtype="float32", **kwargs):
    gates = {}
    for gate in GATES:
        arrays = {"W_x": rng.normal(size=(hidden, input_size)), "W_h": rng.normal(size=(hidden, hidden))}
        if bias:
            arrays |= {"b_x": rng.normal(size=hidden), "b_h": rng.normal(size=hidden)}
        gates[(0, "forward", gate)] = Gate(**{k: v.astype(dtype) for k, v in arrays.items()})
    return RecurrentLayer(kind="lstm", input_size=input_size, hidden_size=hidden, gates=gates,
                          bias=bias, **kwargs)


def test_seed_shapes_and_counts(rng):
    layer = make(rng)
    assert layer.gate_names == GATES
    for gate in GATES:
        assert layer.gate(gate).W_x.shape == (2, 7)
        assert layer.gate(gate).W_h.shape == (2, 2)
    assert layer.count_params("keras") == 80  # Keras: one bias
    assert layer.count_params("torch") == 88  # PyTorch: two biases
    assert layer.dtype == "float32"


def test_bad_shape_names_the_tensor(rng):
    layer = make(rng)
    gates = dict(layer.gates)
    gates[(0, "forward", "forget")] = dataclasses.replace(gates[(0, "forward", "forget")],
                                                          W_h=np.zeros((2, 3), "float32"))
    with pytest.raises(ShapeError) as err:
        dataclasses.replace(layer, gates=gates)
    assert str(err.value) == "lstm.l0.forward.forget.W_h: expected shape (2, 2), got (2, 3)"


def test_missing_gate_and_mixed_dtype_and_bias_mismatch(rng):
    layer = make(rng)
    gates = dict(layer.gates)
    del gates[(0, "forward", "cell")]
    with pytest.raises(ShapeError, match=r"missing \[\(0, 'forward', 'cell'\)\]"):
        dataclasses.replace(layer, gates=gates)
    gates = dict(layer.gates)
    g = gates[(0, "forward", "output")]
    gates[(0, "forward", "output")] = dataclasses.replace(g, b_h=g.b_h.astype("float64"))
    with pytest.raises(ShapeError, match="output.b_h: expected dtype float32 like the other tensors, got float64"):
        dataclasses.replace(layer, gates=gates)
    with pytest.raises(ShapeError, match="input.b_x: the layer has bias=False, but a bias was given"):
        dataclasses.replace(layer, bias=False)
    with pytest.raises(ShapeError, match="input.b_x: missing"):
        dataclasses.replace(make(rng, bias=False), bias=True)
    with pytest.raises(ShapeError, match="expected a floating dtype"):
        make(rng, dtype="int32")
    with pytest.raises(ConfigError, match="activation 'swish' is not one of"):
        make(rng, activation="swish")


def test_frozen_and_read_only(rng):
    layer = make(rng)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.hidden_size = 3
    with pytest.raises(ValueError, match="read-only"):
        layer.gate("input").W_x[0, 0] = 1.0
    with pytest.raises(TypeError):
        layer.gates[(0, "forward", "input")] = layer.gate("forget")


def test_equality_is_bit_for_bit(rng):
    a = make(np.random.default_rng(1))
    assert a == make(np.random.default_rng(1))
    assert a != make(np.random.default_rng(2))
    assert a != make(np.random.default_rng(1), dtype="float64")
    gates = dict(a.gates)
    g = gates[(0, "forward", "cell")]
    flipped = g.b_h.copy()
    flipped.view(np.uint32)[0] ^= 1  # one bit of one bias
    gates[(0, "forward", "cell")] = dataclasses.replace(g, b_h=flipped)
    assert a != dataclasses.replace(a, gates=gates)
    assert a != dataclasses.replace(a, name="other")


def test_repr_is_readable(rng):
    assert repr(make(rng)) == ("RecurrentLayer(name='lstm', kind='lstm', input_size=7, hidden_size=2, "
                               "dtype='float32', gates=input/forget/cell/output)")


def test_tensor_names_and_config_must_be_json(rng):
    assert tensor_name("enc", 1, "reverse", "forget", "W_h") == "enc.l1.reverse.forget.W_h"
    names = [name for name, _ in make(rng).tensors()]
    assert len(names) == 16 and names[0] == "lstm.l0.forward.input.W_x"
    with pytest.raises(ConfigError, match="config must be JSON-compatible"):
        make(rng, config={"bad": object()})


def test_dense_embedding_and_model(rng):
    from lstm_convert import Dense, Embedding, Model

    dense = Dense(name="dense", weight=rng.normal(size=(5, 2)).astype("float32"),
                  bias=rng.normal(size=5).astype("float32"))
    assert (dense.in_features, dense.out_features, dense.count_params()) == (2, 5, 15)
    with pytest.raises(ShapeError, match=r"dense.bias: expected shape \(5,\), got \(4,\)"):
        Dense(name="dense", weight=dense.weight, bias=np.zeros(4, "float32"))
    with pytest.raises(ConfigError, match="activation 'swish' is not one of"):
        Dense(name="dense", weight=dense.weight, activation="swish")
    table = Embedding(name="embed", weight=rng.normal(size=(10, 7)))
    assert (table.num_embeddings, table.embedding_dim) == (10, 7)
    model = Model((make(rng), dense))
    assert model.count_params("keras") == 95 and model.count_params("torch") == 103
    assert model["dense"] is dense and [layer.name for layer in model] == ["lstm", "dense"]
    assert model == Model((model[0], dense)) and model != Model((model[0],))
    with pytest.raises(ConfigError, match=r"layer names must be unique, got \['lstm'\] more than once"):
        Model((make(rng), make(rng)))
    with pytest.raises(ConfigError, match="a model needs at least one layer"):
        Model(())
