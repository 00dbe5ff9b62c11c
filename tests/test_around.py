"""The layers around recurrent ones (Conv1D, BatchNorm, LayerNorm, Activation, Flatten, global pooling), in
whole models built with Keras and PyTorch: read, computed by the float64 reference, written to every target
and run there on the same inputs (padded steps included) against the source framework."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import torch

import lstm_convert as lc
from lstm_convert import files, formats, reference
from lstm_convert.adapters import onnx as onnx_adapter
from lstm_convert.cli import main

L = keras.layers


def _randomize(model, rng):
    """Every weight random and distinct; variances positive."""
    for variable in model.weights:
        values = rng.normal(0, 0.5, tuple(variable.shape))
        if "variance" in variable.path:
            values = np.abs(values) + 0.3
        variable.assign(values.astype(variable.dtype))
    return model


def _keras_models():
    return {
        # a conv front end with normalisation: same padding (stride 1 and 2), relu, BN, LN, an activation,
        # an LSTM over the shortened sequence, the average over time and a head
        "cnn": [L.Input((12, 5)), L.Conv1D(6, 3, padding="same", activation="relu", name="conv"),
                L.BatchNormalization(epsilon=1e-2, momentum=0.9, name="bn"),
                L.Conv1D(4, 3, strides=2, padding="same", name="down"), L.LayerNormalization(name="ln"),
                L.Activation("tanh", name="act"), L.LSTM(3, return_sequences=True, name="lstm"),
                L.GlobalAveragePooling1D(name="pool"), L.Dense(2, name="head")],
        # causal dilated convolution, a GRU, Flatten of its sequence
        "causal": [L.Input((10, 4)), L.Conv1D(6, 3, padding="causal", dilation_rate=2, name="conv"),
                   L.GRU(3, return_sequences=True, name="gru"), L.Flatten(name="flat"), L.Dense(2, name="head")],
        # grouped strided convolution without bias, BN without scale, max over time
        "grouped": [L.Input((9, 4)), L.Conv1D(6, 2, groups=2, strides=3, use_bias=False, name="conv"),
                    L.BatchNormalization(scale=False, name="bn"), L.SimpleRNN(3, return_sequences=True, name="rnn"),
                    L.GlobalMaxPooling1D(name="pool")],
    }


def _masked_models():
    return {
        # a mask passes through LayerNorm and Activation into the LSTM and the average, which skip padding
        "average": [L.Input((8, 4)), L.Masking(name="mask"), L.LayerNormalization(center=False, name="ln"),
                    L.Activation("relu", name="act"), L.LSTM(3, return_sequences=True, name="lstm"),
                    L.GlobalAveragePooling1D(name="pool"), L.Dense(2, name="head")],
        # the maximum takes no mask (a masked step counts as the zeros Masking gave it); BN after it
        "max": [L.Input((9, 4)), L.Masking(name="mask"), L.GRU(3, return_sequences=True, name="gru"),
                L.GlobalMaxPooling1D(name="pool"), L.BatchNormalization(name="bn")],
    }


def _build(layers, rng):
    return _randomize(keras.Sequential(layers), rng)


def _padded(x):
    x = x.copy()
    x[0, 2:4] = 0  # a gap inside the sequence
    x[1, -3:] = 0  # padding at the end
    x[2, :] = 0  # a row with nothing in it but its first step
    x[2, 0] = 1.0
    return x


def _run_all_targets(model, x, expected, tmp_path, name):
    """Write ``model`` to every target and run each with its own runtime on ``x``; compare with ``expected``."""
    lc.save(model, tmp_path / f"{name}.safetensors")
    assert lc.load(tmp_path / f"{name}.safetensors") == model
    files.write(model, tmp_path / f"{name}.onnx")
    onnx_out = onnx_adapter.run(tmp_path / f"{name}.onnx", x)["output"]
    assert onnx_out.shape == expected.shape
    np.testing.assert_allclose(onnx_out, expected, rtol=0, atol=2e-5, err_msg="onnx")
    module = lc.to_torch(model)
    with torch.no_grad():
        torch_out = module(torch.from_numpy(x)).numpy()
    assert torch_out.shape == expected.shape
    np.testing.assert_allclose(torch_out, expected, rtol=0, atol=2e-5, err_msg="torch module")
    back = lc.to_keras(model)
    keras_out = back.predict(x, verbose=0)
    assert keras_out.shape == expected.shape
    np.testing.assert_allclose(keras_out, expected, rtol=0, atol=2e-5, err_msg="keras")
    return back


@pytest.mark.parametrize("case", sorted(_keras_models()))
def test_keras_models_with_layers_around_convert_whole(case, rng, tmp_path):
    built = _build(_keras_models()[case], rng)
    x = rng.normal(size=(3, *built.inputs[0].shape[1:])).astype("float32")
    expected = built.predict(x, verbose=0)
    model = lc.from_keras(built)
    ours = reference.run(model, x)[-1][0]
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5)
    built.save(tmp_path / "source.keras")
    read = files.read(tmp_path / "source.keras")
    assert [layer.kind for layer in read] == [layer.kind for layer in model]
    assert all(a.spec() | {"source": {}} == b.spec() | {"source": {}} for a, b in zip(read, model))
    back = _run_all_targets(read, x, expected, tmp_path, case)
    assert lc.from_keras(back) == model  # Keras to Keras, bit for bit
    files.write(read, tmp_path / "module.pt", module=tmp_path / "module_file.py")
    assert main(["verify", str(tmp_path / "source.keras"), str(tmp_path / "module.pt")]) == 0
    assert main(["verify", str(tmp_path / "source.keras"), str(tmp_path / f"{case}.onnx")]) == 0
    again = files.read(tmp_path / f"{case}.onnx")  # an ONNX file written here reads back as it was written
    assert [(a.name, a.kind) for a in again] == [(a.name, a.kind) for a in model]
    assert all(a.spec() | {"source": {}} == b.spec() | {"source": {}} for a, b in zip(again, model))


@pytest.mark.filterwarnings("ignore:Layer 'pool' .* does not support masking")  # Keras drops the mask there
@pytest.mark.parametrize("case", sorted(_masked_models()))
def test_masks_through_layers_around_as_keras_computes_them(case, rng, tmp_path):
    built = _build(_masked_models()[case], rng)
    x = _padded(rng.normal(size=(3, *built.inputs[0].shape[1:])).astype("float32"))
    expected = built.predict(x, verbose=0)
    model = lc.from_keras(built)
    ours = reference.run(model, x)[-1][0]
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5)
    unmasked = reference.run(lc.Model(model.layers[1:]), x)[-1][0]
    assert np.abs(unmasked - expected).max() > 1e-3  # the inputs exercise the mask
    _run_all_targets(model, x, expected, tmp_path, case)


class _TorchNet(torch.nn.Module):
    """A PyTorch CNN + LSTM written as people write it: channels-first convolutions and batch norm, a
    LayerNorm and a batch-first LSTM, run in eval mode."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(5, 6, 3, padding=1, dilation=1)
        self.bn = torch.nn.BatchNorm1d(6, eps=1e-3, momentum=0.2)
        self.down = torch.nn.Conv1d(6, 4, 3, stride=2, groups=2, bias=False)
        self.norm = torch.nn.LayerNorm(4, eps=1e-4)
        self.lstm = torch.nn.LSTM(4, 3, batch_first=True)
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x):
        x = self.bn(self.conv(x.transpose(1, 2)))
        x = self.norm(self.down(x).transpose(1, 2))
        y, _ = self.lstm(x)
        return self.head(y)


def _torch_net(rng):
    net = _TorchNet()
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            else:
                values = rng.normal(0, 0.5, tuple(tensor.shape))
                tensor.copy_(torch.from_numpy(np.abs(values) + 0.3 if "running_var" in name else values))
    return net.eval()


def test_torch_module_with_conv_and_norms_reads_with_its_settings(rng, tmp_path):
    net = _torch_net(rng)
    x = rng.normal(size=(3, 11, 5)).astype("float32")
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    model = lc.from_torch(net)
    assert [layer.kind for layer in model] == ["conv1d", "batch_norm", "conv1d", "layer_norm", "lstm", "dense"]
    conv, bn, down, norm = model.layers[:4]
    assert conv.padding == (1, 1) and down.stride == 2 and down.groups == 2 and down.bias is None
    assert bn.epsilon == 1e-3 and bn.momentum == 0.2 and bn.batches_tracked == 7 and norm.epsilon == 1e-4
    ours = reference.run(model, x)[-1][0]
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5)
    state = lc.to_torch(model, state_dict=True)
    assert list(state) == list(net.state_dict())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())  # num_batches_tracked too
    built = lc.to_keras(model)  # Keras momentum is 1 - PyTorch's
    assert built.get_layer("bn").momentum == pytest.approx(0.8) and built.get_layer("conv").padding == "same"
    np.testing.assert_allclose(built.predict(x, verbose=0), expected, rtol=0, atol=2e-5)
    assert lc.from_torch(lc.to_torch(model)) == model  # through the generated module, bit for bit


def test_state_dict_says_what_it_cannot_tell(rng, tmp_path, capsys):
    net = _torch_net(rng)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    with pytest.raises(lc.UnsupportedError) as err:
        files.read(tmp_path / "net.pt")
    message = str(err.value)  # every module it cannot tell at once, and what to say about them
    assert "kinds={'conv': 'conv1d', 'down': 'conv1d', 'norm': 'layer_norm'}" in message
    assert message.count("net.pt") == 1  # named once
    assert main(["inspect", str(tmp_path / "net.pt")]) == 0
    assert "say so with --kind down=conv1d" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "net.pt"), str(tmp_path / "x.onnx")]) == 1
    assert "--kind conv=conv1d --kind down=conv1d --kind norm=layer_norm" in capsys.readouterr().err
    kinds = {"conv": "conv1d", "down": "conv1d", "norm": "layer_norm"}
    model = files.read(tmp_path / "net.pt", kinds=kinds)
    conv, bn, down, norm = model.layers[:4]
    assert conv.padding == (0, 0) and conv.config["torch"]["assumed"] == ["dilation", "groups", "padding", "stride"]
    assert bn.epsilon == 1e-5 and bn.config["torch"]["assumed"] == ["eps", "momentum"] and bn.batches_tracked == 7
    # what the module was built with is stated, and then the model is the network's function
    stated = lc.canonical.with_settings(model, {"conv": {"padding": 1}, "down": {"stride": 2, "groups": 2},
                                                "bn": {"epsilon": 1e-3}, "norm": {"epsilon": 1e-4}})
    x = rng.normal(size=(2, 11, 5)).astype("float32")
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(reference.run(stated, x)[-1][0], expected, rtol=0, atol=2e-5)
    said = ["--kind", "conv=conv1d", "--kind", "down=conv1d", "--kind", "norm=layer_norm"]
    assert main(["convert", str(tmp_path / "net.pt"), str(tmp_path / "x.onnx"), *said]) == 1  # groups=2 not said
    assert "--set down.groups=2" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    assert main(["convert", str(tmp_path / "net.pt"), str(tmp_path / "x.onnx"), *said, "--set", "down.groups=2"]) == 0
    out_text = capsys.readouterr().out
    assert "note: conv: the file does not hold dilation, groups, padding, stride; PyTorch's defaults were taken " \
           "(dilation=1, groups=1, padding=(0, 0), stride=1)" in out_text and "note: bn: " in out_text
    out = tmp_path / "net.safetensors"
    argv = ["convert", str(tmp_path / "net.pt"), str(out), "--kind", "conv=conv1d", "--kind", "down=conv1d",
            "--kind", "norm=layer_norm", "--set", "conv.padding=1", "--set", "down.stride=2", "--set", "down.groups=2",
            "--set", "bn.epsilon=0.001", "--set", "norm.epsilon=0.0001"]
    assert main(argv) == 0
    np.testing.assert_allclose(reference.run(lc.load(out), x)[-1][0], expected, rtol=0, atol=2e-5)


def test_what_a_target_cannot_express_is_refused_by_name(rng, tmp_path, capsys):
    weight = rng.normal(size=(4, 3, 3)).astype("float32")
    odd = lc.Conv1D(name="conv", weight=weight, padding=(2, 2))  # PyTorch padding=2 with k=3
    assert "padding (2, 2)" in formats.get("keras").check(lc.Model((odd,))).reasons[0]
    assert formats.get("onnx").check(lc.Model((odd,))).verdict == "exact"
    reflect = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(lc.UnsupportedError, match="padding_mode='reflect'"):
        lc.from_torch(reflect)
    with pytest.raises(lc.UnsupportedError, match="track_running_stats=False"):
        lc.from_torch(torch.nn.Sequential(torch.nn.BatchNorm1d(3, track_running_stats=False)))
    with pytest.raises(lc.UnsupportedError, match=r"axis=\[1\] \(only the last axis"):
        lc.from_keras(keras.Sequential([L.Input((5, 3)), L.LayerNormalization(axis=1), L.LSTM(2)]))
    lstm = lc.from_keras(keras.Sequential([L.Input((5, 3)), L.LSTM(2)])).layers[0]
    with pytest.raises(lc.UnsupportedError, match="takes a sequence"):
        lc.Model((lstm, lc.Flatten(name="flat", steps=5, size=2))).check_chain()
    with pytest.raises(lc.UnsupportedError, match="built for 4 steps"):
        lc.Model((lc.Flatten(name="flat", steps=4, size=3),), input_shape=(5, 3)).check_chain()
    # Keras' scale=False is PyTorch's affine module with a weight of ones: the same function exactly
    only_offset = lc.BatchNorm(name="bn", mean=np.zeros(3, "float32"), variance=np.ones(3, "float32"),
                               offset=np.ones(3, "float32"))
    assert formats.get("torch").check(lc.Model((only_offset,))).verdict == "exact"
    state = lc.to_torch(lc.Model((only_offset,)), state_dict=True)
    assert list(state) == ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert torch.equal(state["bn.weight"], torch.ones(3))


def test_inspect_shows_the_layers_around(rng, tmp_path, capsys):
    built = _build(_keras_models()["cnn"], rng)
    built.save(tmp_path / "cnn.keras")
    assert main(["inspect", str(tmp_path / "cnn.keras"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    conv = info["layers"][0]
    assert conv["type"] == "Conv1D" and conv["sizes"]["padding"] == [1, 1] and conv["sizes"]["kernel_size"] == 3
    assert conv["tensors"] == {"conv.weight": [6, 5, 3], "conv.bias": [6]} and conv["params"] == 96
    assert info["layers"][1]["params"] == 24  # Keras counts the moving statistics of a BatchNormalization
    assert info["conversions"]["onnx"]["verdict"] == "exact" and not info["unconverted"]


class _PoolNet(torch.nn.Module):
    """A convolution with a ReLU of its own, a GRU, the mean over time and a head."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 5, 2, stride=2)
        self.gru = torch.nn.GRU(5, 3, batch_first=True)
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x):
        x = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return self.head(self.gru(x)[0].mean(1))


@pytest.mark.filterwarnings("ignore")  # the exporters' deprecation and tracer warnings
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
@pytest.mark.parametrize("net", ["cnn", "pool"])
def test_torch_onnx_exports_with_layers_around_read_whole(net, dynamo, rng, tmp_path):
    module = _torch_net(rng) if net == "cnn" else _PoolNet().eval()
    if net == "pool":
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.from_numpy(rng.normal(0, 0.5, tuple(p.shape)).astype("float32")))
    features = 5 if net == "cnn" else 4
    x = rng.normal(size=(2, 10, features)).astype("float32")
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    path = tmp_path / "net.onnx"
    options = {} if dynamo else {"dynamic_axes": {"x": {0: "batch", 1: "time"}}}
    torch.onnx.export(module, (torch.from_numpy(x),), path, dynamo=dynamo, input_names=["x"], **options)
    model = files.read(path)
    kinds = ["conv1d", "conv1d", "layer_norm", "lstm", "dense"] if net == "cnn" else \
        ["conv1d", "activation", "gru", "pooling", "dense"]  # the exporters fold BatchNorm1d into the Conv
    assert [layer.kind for layer in model] == kinds
    ours = reference.run(model, x)[-1][0]
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5)
    files.write(model, tmp_path / "net.keras")
    assert main(["verify", str(path), str(tmp_path / "net.keras")]) == 0


def test_keras_onnx_export_conv_is_refused_by_name(rng, tmp_path):
    """Keras' own ONNX export writes a Conv1D as a 2-D convolution: refused naming the node, with the way on."""
    pytest.importorskip("tf2onnx")
    import warnings

    built = _build([L.Input((12, 5)), L.Conv1D(6, 3, name="conv"), L.LSTM(3, name="lstm")], rng)
    built(np.zeros((1, 12, 5), "float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built.export(str(tmp_path / "k.onnx"), format="onnx", verbose=False)
    with pytest.raises(lc.UnsupportedError, match=r"conv.*\(Conv\): only 1-D convolutions .*--only|only=") as err:
        files.read(tmp_path / "k.onnx")
    assert "2-D convolution" in str(err.value)


def test_legacy_h5_from_tf_keras_with_layers_around(rng, tmp_path):
    """tf.keras 2 saves a normalisation's axis as a positive number (2 for a sequence): still the features."""
    import tf_keras

    layers = tf_keras.layers
    built = tf_keras.Sequential([
        layers.InputLayer((12, 5)), layers.Conv1D(6, 3, padding="causal", activation="relu", name="conv"),
        layers.BatchNormalization(name="bn"), layers.LayerNormalization(name="ln"), layers.Activation("tanh", name="act"),
        layers.LSTM(3, return_sequences=True, name="lstm"), layers.GlobalAveragePooling1D(name="pool"),
        layers.Dense(2, name="head")])
    built.set_weights([np.abs(rng.normal(0, 0.5, w.shape)).astype("float32") + 0.3 if "variance" in v.name
                       else rng.normal(0, 0.5, w.shape).astype("float32")
                       for v, w in zip(built.weights, built.get_weights())])
    built.save(tmp_path / "legacy.h5")
    x = rng.normal(size=(2, 12, 5)).astype("float32")
    expected = built.predict(x, verbose=0)
    model = files.read(tmp_path / "legacy.h5")
    assert [layer.kind for layer in model] == ["conv1d", "batch_norm", "layer_norm", "activation", "lstm", "pooling",
                                               "dense"]
    assert model["conv"].padding == (2, 0)  # causal: (k - 1) zeros before
    ours = reference.run(model, x)[-1][0]
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5)


def test_npz_says_which_settings_it_cannot_keep(rng):
    conv = lc.Conv1D(name="conv", weight=rng.normal(size=(4, 3, 3)).astype("float32"), padding=(1, 1), stride=2)
    plain = lc.Conv1D(name="plain", weight=rng.normal(size=(4, 4, 1)).astype("float32"))
    verdicts = {layer.name: formats.get("npz").check_layer(layer, False) for layer in (conv, plain)}
    assert verdicts["conv"].verdict == "weights" and verdicts["conv"].needs == ("stride=2", "padding=[1, 1]")
    assert verdicts["plain"].verdict == "exact"  # PyTorch's defaults: what the .npz reads back with --kind


@pytest.mark.parametrize("key, value", [("padding", [-1, 2]), ("padding", "full"), ("groups", 0), ("stride", True),
                                        ("arrays", ["bogus"]), ("arrays", [["weight"]]), ("kind", ["conv1d"]),
                                        ("source", "x"), ("activation", "gelu_custom"), ("epsilon", 2.0)])
def test_archives_with_a_malformed_layer_spec_are_refused_by_name(key, value, rng, tmp_path):
    import struct

    weight = rng.normal(size=(4, 3, 2)).astype("float32")
    model = lc.Model((lc.Conv1D(name="conv", weight=weight, bias=np.ones(4, "float32")),
                      lc.BatchNorm(name="bn", mean=np.zeros(4, "float32"), variance=np.ones(4, "float32"))))
    lc.save(model, tmp_path / "good.safetensors")
    raw = (tmp_path / "good.safetensors").read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    specs = json.loads(header["__metadata__"]["layers"])
    specs[0 if key != "epsilon" else 1][key] = value
    header["__metadata__"]["layers"] = json.dumps(specs)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size:])
    with pytest.raises(lc.FormatError, match="bad.safetensors"):
        lc.load(tmp_path / "bad.safetensors")
