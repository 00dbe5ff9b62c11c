"""PyTorch adapter against real nn.LSTM modules: bit-exact round trips, states, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import assert_same_run, assert_same_weights, inputs, random_torch_lstm, run_torch

import lstm_convert as lc
from lstm_convert import files, reference

VARIANTS = {
    "lstm": {},
    "lstm-no-bias": {"bias": False},
    "lstm-stacked-bidirectional": {"num_layers": 2, "bidirectional": True},
    "lstm-time-major": {"batch_first": False},
    "lstm-projection": {"proj_size": 2, "num_layers": 2, "bidirectional": True},
    "gru": {"module": "GRU"},
    "gru-stacked-bidirectional-no-bias": {"module": "GRU", "num_layers": 2, "bidirectional": True, "bias": False},
    "rnn-tanh": {"module": "RNN", "num_layers": 2},
    "rnn-relu-bidirectional": {"module": "RNN", "nonlinearity": "relu", "bidirectional": True},
    "lstm-cell": {"module": "LSTMCell"},
    "gru-cell": {"module": "GRUCell"},
    "rnn-cell-relu": {"module": "RNNCell", "nonlinearity": "relu"},
}


def _same_state(a, b):
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def _states(rng, weights, batch=3):
    slots = weights.num_layers * weights.directions
    sizes = {"h": weights.state_size, "c": weights.hidden_size}
    return [rng.normal(size=(slots, batch, sizes[n])).astype("float32") for n in weights.state_names]


@pytest.mark.parametrize("options", VARIANTS.values(), ids=VARIANTS.keys())
def test_round_trip_is_bit_identical_and_reference_agrees(rng, options):
    module = random_torch_lstm(rng, **options)
    weights = lc.from_torch(module)
    back = lc.to_torch(weights)
    assert type(back) is type(module)
    _same_state(back.state_dict(), module.state_dict())
    assert getattr(back, "batch_first", None) == getattr(module, "batch_first", None)
    x, _, _ = inputs(rng)
    states = _states(rng, weights)
    expected = run_torch(module, x, *states)
    assert_same_run(run_torch(back, x, *states), expected, atol=0)
    seq, finals = reference.forward(weights, x, tuple(states), sequences=True)
    assert_same_run((seq, *finals), expected)
    from_state = lc.from_torch(module.state_dict(), kinds={"": f"rnn_{module.nonlinearity}"}
                               if hasattr(module, "nonlinearity") else None)
    assert_same_weights(from_state, weights)  # the keys and shapes alone tell the same layer
    assert from_state.spec() | {"config": None} == weights.spec() | {"config": None}


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_dtypes_survive(rng, dtype):
    module = random_torch_lstm(rng, dtype=dtype)
    weights = lc.from_torch(module)
    assert weights.dtype == dtype
    _same_state(lc.to_torch(weights).state_dict(), module.state_dict())


def test_state_dict_in_and_out(rng):
    module = random_torch_lstm(rng, num_layers=2)
    weights = lc.from_torch(module.state_dict())
    assert (weights.num_layers, weights.input_size, weights.hidden_size) == (2, 7, 3)
    state = lc.to_torch(weights, state_dict=True)
    _same_state(state, module.state_dict())
    assert lc.from_torch(state) == weights


def test_both_biases_kept_separately(rng):
    module = random_torch_lstm(rng)
    weights = lc.from_torch(module)
    # PyTorch block 2 is g, the canonical "cell" gate; its two biases stay apart.
    np.testing.assert_array_equal(weights.gate("cell").b_x, module.bias_ih_l0.detach().numpy()[6:9])
    np.testing.assert_array_equal(weights.gate("cell").b_h, module.bias_hh_l0.detach().numpy()[6:9])
    np.testing.assert_array_equal(weights.gate("output").W_h, module.weight_hh_l0.detach().numpy()[9:12])


def test_write_into_existing_module(rng):
    source = random_torch_lstm(rng)
    target = torch.nn.LSTM(7, 3, batch_first=True)
    assert lc.to_torch(lc.from_torch(source), target) is target
    _same_state(target.state_dict(), source.state_dict())
    with pytest.raises(lc.ShapeError, match=r"target nn.LSTM has hidden_size=4, expected hidden_size=3"):
        lc.to_torch(lc.from_torch(source), torch.nn.LSTM(7, 4))


def test_errors_name_the_keys(rng):
    state = dict(random_torch_lstm(rng).state_dict())
    state["extra.weight"] = torch.zeros(1)
    state["norm.running_mean"] = torch.zeros(3)
    with pytest.raises(lc.UnsupportedError, match=r"state dict: holds what lstm_convert does not convert: "
                                                   r"extra \(weight \(1,\)\); norm \(running_mean \(3,\)\); select"):
        lc.from_torch(state)
    state = dict(random_torch_lstm(rng).state_dict())
    del state["bias_hh_l0"]
    with pytest.raises(lc.FormatError, match=r"missing \['bias_hh_l0'\]"):
        lc.from_torch(state)
    state = dict(random_torch_lstm(rng).state_dict())
    state["weight_ih_l0"] = state["weight_ih_l0"][:10]
    with pytest.raises(lc.ShapeError, match=r"state dict: weight_ih_l0 has shape \(10, 7\), expected G\*H rows like weight_hh_l0 \(12, 3\) \(H = 3\)"):
        lc.from_torch(state)
    with pytest.raises(lc.UnsupportedError, match=r"does not convert: \(no prefix\) \(weight \(7, 3, 2\), bias"):
        lc.from_torch(torch.nn.ConvTranspose1d(7, 3, 2))


def sample(directory, rng):
    """A state dict as torch.save writes it, for the conformance suite (test_formats.py)."""
    module = torch.nn.Sequential()
    module.add_module("lstm", random_torch_lstm(rng, input_size=3, hidden_size=2, num_layers=2))
    torch.save(module.state_dict(), directory / "sample.pt")
    return directory / "sample.pt"


class _Tagger(torch.nn.Module):
    """A conv front end, a GRU, a head and an embedding table, as TorchScript models are published."""

    def __init__(self, rng):
        super().__init__()
        self.conv = torch.nn.ConvTranspose1d(4, 6, 3)  # a module the tool does not convert
        self.rnn = random_torch_lstm(rng, input_size=6, hidden_size=5, module="GRU", batch_first=True)
        self.fc = torch.nn.Linear(5, 2, bias=False)
        self.emb = torch.nn.Embedding(7, 4)

    def forward(self, x):
        return self.fc(self.rnn(self.conv(x.transpose(1, 2)).transpose(1, 2))[0])


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_parameters_are_read_as_data(tmp_path, rng, how):
    from lstm_convert import files

    module = _Tagger(rng).eval()
    x = torch.from_numpy(rng.normal(size=(2, 6, 4)).astype("float32"))
    with warnings.catch_warnings():  # torch.jit is deprecated, and its files are everywhere
        warnings.simplefilter("ignore")  # deprecation, and the tracer's own warnings
        scripted = torch.jit.script(module) if how == "script" else torch.jit.trace(module, (x,))
        torch.jit.save(scripted, tmp_path / "tagger.pt")
    with pytest.raises(lc.UnsupportedError, match=r"tagger.pt: holds what lstm_convert does not convert: conv "
                                                   r"\(ConvTranspose1d: weight \(4, 6, 3\), bias \(6,\)\)"):
        files.read(tmp_path / "tagger.pt")
    model = files.read(tmp_path / "tagger.pt", only=["rnn", "fc", "emb"])
    assert [(layer.name, layer.kind) for layer in model.layers] == [("rnn", "gru"), ("fc", "dense"),
                                                                     ("emb", "embedding")]
    assert model.source["file_format"] == "torchscript"
    state = module.state_dict()
    direct = lc.from_torch({k: v for k, v in state.items() if not k.startswith("conv.")},
                           kinds={"fc": "linear", "emb": "embedding"})
    for (name, a), (other, b) in zip(model.tensors(), direct.tensors(), strict=True):
        assert name == other and a.shape == b.shape and np.array_equal(a, b), name
    # verify runs the selected modules of the archive in PyTorch, from its parameters read as data
    from lstm_convert.verify import verify

    files.convert(tmp_path / "tagger.pt", tmp_path / "rnn.safetensors", only=["rnn"])
    result = verify(tmp_path / "tagger.pt", tmp_path / "rnn.safetensors", only=["rnn"])
    assert result.ok and result.runners == ("torch", "reference"), result.notes


def test_torchscript_that_is_more_than_data_is_refused_with_the_route(tmp_path):
    import pickle
    import zipfile

    from lstm_convert import files

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
        archive.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("evil/code/__torch__/m.py", "")
        archive.writestr("evil/version", "3\n")
    with pytest.raises(lc.FormatError, match=r"evil.pt: a TorchScript archive whose parameters cannot be read as "
                                             r"data \(the archive's data.pkl names __builtin__.print, which is not "
                                             r"data\); for a file you trust, .*torch.jit.load"):
        files.read(tmp_path / "evil.pt")


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_pt_state_dicts_are_read_without_pytorch(tmp_path, rng, dtype):
    """A state dict saved by torch.save is read as data, with NumPy alone: PyTorch is not imported, the
    storages are mapped, and the weights are PyTorch's bit for bit (strided and offset views included)."""
    import subprocess
    import sys

    module = random_torch_lstm(rng, input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                               dtype=dtype)
    state = module.state_dict()
    # A tensor that views its storage at an offset and with strides: one storage for two keys.
    stacked = torch.cat([state["weight_hh_l0"].T.contiguous(), state["weight_hh_l0_reverse"].T.contiguous()])
    state["weight_hh_l0"], state["weight_hh_l0_reverse"] = stacked[:4].T, stacked[4:].T
    torch.save(state, tmp_path / "m.pt")
    code = ("import sys; from lstm_convert import files; m = files.read(sys.argv[1]); "
            "print(len(m.layers), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt")], capture_output=True, text=True)
    assert done.stdout.split() == ["1", "False"], done.stderr[-2000:]
    back = lc.to_torch(files.read(tmp_path / "m.pt").layers[0])
    for key, value in module.state_dict().items():
        assert back.state_dict()[key].dtype == value.dtype
        assert torch.equal(back.state_dict()[key].view(torch.int16 if value.element_size() == 2 else value.dtype),
                           value.view(torch.int16 if value.element_size() == 2 else value.dtype)), key


def test_pt_big_endian_storages_and_foreign_objects(tmp_path, rng):
    """A file whose byteorder says big is read in that order; a pickle naming more than tensors and dicts
    goes to PyTorch's weights_only loader, which decides (here: a torch.Size is not a tensor)."""
    import zipfile

    module = random_torch_lstm(rng, input_size=3, hidden_size=2)
    torch.save(module.state_dict(), tmp_path / "little.pt")
    with zipfile.ZipFile(tmp_path / "little.pt") as src, zipfile.ZipFile(tmp_path / "big.pt", "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            out.writestr(info, data)
    back = lc.to_torch(files.read(tmp_path / "big.pt").layers[0])
    for key, value in module.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    torch.save({**module.state_dict(), "shape": torch.Size([2, 3])}, tmp_path / "size.pt")
    with pytest.raises(lc.FormatError, match=r"shape: expected a tensor, got Size"):
        files.read(tmp_path / "size.pt")


def test_two_layers_claiming_one_state_dict_key_are_a_refusal_not_a_crash(rng):
    from lstm_convert.describe import model_conversions

    dense = [lc.Dense(name=f"d{k}", weight=rng.normal(size=(2, 2)).astype("float32"),
                      bias=rng.normal(size=2).astype("float32"), config={"torch": {"prefix": "head."}})
             for k in range(2)]
    verdict = model_conversions(lc.Model(tuple(dense)))["torch"]
    assert verdict["verdict"] == "impossible"
    assert any("d1: key head.weight would appear twice in the state dict" in r for r in verdict["reasons"])
