"""ONNX: our exports run by onnxruntime, files from the frameworks' own exporters read, onnx.reference agreement."""

from __future__ import annotations

import keras
import numpy as np
import onnx
import pytest
import torch
from conftest import random_torch_lstm, randomize_keras
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import lstm_convert as lc
from lstm_convert import describe, files, reference
from lstm_convert.adapters import onnx as onnx_adapter
from lstm_convert.cli import main


def _states(rng, model, batch):
    out = {}
    for layer in model.layers:
        if isinstance(layer, lc.RecurrentLayer):
            out[layer.name] = tuple(rng.normal(size=(layer.num_layers * layer.directions, batch, layer.hidden_size))
                                    .astype("float32") for _ in layer.state_names)
    return out


def test_keras_model_to_onnx_runs_in_onnxruntime(tmp_path, rng):
    model = keras.Sequential([
        keras.Input((None, 7)),
        keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True)),
        keras.layers.GRU(4, return_sequences=True),
        keras.layers.GRU(2, reset_after=False, return_sequences=True, name="reset_before"),
        keras.layers.SimpleRNN(3, activation="relu", return_sequences=True),
        keras.layers.LSTM(2, recurrent_activation="hard_sigmoid", go_backwards=True, return_sequences=True),
        keras.layers.Dense(5, activation="softmax"),
    ])
    randomize_keras(model, rng)
    model.save(tmp_path / "m.keras")
    assert main(["convert", str(tmp_path / "m.keras"), str(tmp_path / "m.onnx")]) == 0
    proto = onnx.load(tmp_path / "m.onnx")
    assert not [t for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("LSTM") == 2 and ops.count("GRU") == 2 and ops.count("RNN") == 1
    gru_flags = [helper.get_attribute_value(a) for n in proto.graph.node if n.op_type == "GRU"
                 for a in n.attribute if a.name == "linear_before_reset"]
    assert gru_flags == [1, 0]
    for batch, steps in ((3, 6), (1, 11)):  # dynamic batch and sequence length
        x = rng.normal(size=(batch, steps, 7)).astype("float32")
        got = onnx_adapter.run(tmp_path / "m.onnx", x)["output"]
        np.testing.assert_allclose(got, np.asarray(model(x)), rtol=0, atol=1e-5)
    result = lc.verify.verify(tmp_path / "m.keras", tmp_path / "m.onnx")
    assert result.runners == ("keras", "onnxruntime") and result.ok


def test_torch_to_onnx_with_initial_states(tmp_path, rng):
    module = random_torch_lstm(rng, input_size=7, hidden_size=3, num_layers=2, bidirectional=True,
                               batch_first=True)
    weights = lc.Model((lc.from_torch(module),))
    onnx_adapter.write(weights, tmp_path / "t.onnx", initial_states=True)
    x = rng.normal(size=(2, 5, 7)).astype("float32")
    states = _states(rng, weights, 2)
    # the exported graph takes each stacked layer's states separately
    feeds = {"lstm": tuple(s[0:2] for s in states["lstm"]), "lstm_l1": tuple(s[2:4] for s in states["lstm"])}
    got = onnx_adapter.run(tmp_path / "t.onnx", x, feeds)
    with torch.no_grad():
        y, (h, c) = module(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in states["lstm"]))
    np.testing.assert_allclose(got["output"], y.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([got["lstm.h_n"], got["lstm_l1.h_n"]]), h.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([got["lstm.c_n"], got["lstm_l1.c_n"]]), c.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("options", [{"module": "LSTM", "num_layers": 2, "bidirectional": True},
                                     {"module": "GRU", "bidirectional": True},
                                     {"module": "RNN", "num_layers": 2, "nonlinearity": "relu"}],
                         ids=["lstm", "gru", "rnn-relu"])
def test_reads_torch_onnx_exports(tmp_path, rng, dynamo, options):
    module = random_torch_lstm(rng, input_size=7, hidden_size=3, batch_first=True, **options).eval()
    x = rng.normal(size=(2, 5, 7)).astype("float32")
    with _quiet():  # the exporters warn about their own internals
        torch.onnx.export(module, (torch.from_numpy(x),), tmp_path / "t.onnx", dynamo=dynamo,
                          input_names=["x"], dynamic_axes=None if dynamo else {"x": {0: "batch", 1: "time"}})
    if dynamo and options["module"] == "RNN":  # this exporter unrolls nn.RNN into per-step MatMuls
        with pytest.raises(lc.LSTMConvertError, match=r"t.onnx: (node|layers) .*(carries weights|share weights)"):
            files.read(tmp_path / "t.onnx")
        return
    read = files.read(tmp_path / "t.onnx")
    assert [layer.kind for layer in read] == [options["module"].lower()] * options.get("num_layers", 1)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(reference.run(read, x)[-1][0], expected, rtol=0, atol=1e-5)
    assert main(["convert", str(tmp_path / "t.onnx"), str(tmp_path / "t.pt")]) == 0
    assert main(["convert", str(tmp_path / "t.onnx"), str(tmp_path / "t.keras")]) == 0
    np.testing.assert_allclose(np.asarray(keras.saving.load_model(tmp_path / "t.keras")(x)), expected,
                               rtol=0, atol=1e-5)
    assert lc.verify.verify(tmp_path / "t.onnx", tmp_path / "t.keras").ok


def _quiet():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def quiet():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield

    return quiet()


def test_reads_keras_onnx_export(tmp_path, rng):
    pytest.importorskip("tf2onnx")
    model = keras.Sequential([keras.Input((5, 7)), keras.layers.LSTM(3, return_sequences=True, name="lstm"),
                              keras.layers.Dense(2, name="dense")])
    randomize_keras(model, rng)
    x = rng.normal(size=(2, 5, 7)).astype("float32")
    model(x)
    with _quiet():
        model.export(str(tmp_path / "k.onnx"), format="onnx", verbose=False)
    read = files.read(tmp_path / "k.onnx")
    assert [layer.kind for layer in read] == ["lstm", "dense"]
    np.testing.assert_allclose(reference.run(read, x)[-1][0], np.asarray(model(x)), rtol=0, atol=1e-5)
    assert main(["convert", str(tmp_path / "k.onnx"), str(tmp_path / "k.pt")]) == 0
    assert lc.verify.verify(tmp_path / "k.onnx", tmp_path / "k.pt").ok


def _lstm_graph(rng, direction, directions, **attrs):
    hidden, features = 3, 4
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in
             (("W", (directions, 4 * hidden, features)), ("R", (directions, 4 * hidden, hidden)),
              ("B", (directions, 8 * hidden)), ("P", (directions, 3 * hidden)))]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "", "", "P"], ["Y", "Y_h", "Y_c"],
                            hidden_size=hidden, direction=direction, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")],
                              inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


@pytest.mark.parametrize("direction,directions", [("forward", 1), ("reverse", 1), ("bidirectional", 2)])
def test_peepholes_and_reverse_agree_with_onnx_reference(tmp_path, rng, direction, directions):
    proto = _lstm_graph(rng, direction, directions)
    onnx.save(proto, tmp_path / "p.onnx")
    layer = files.read(tmp_path / "p.onnx").layers[0]
    assert layer.peepholes and layer.backward == (direction == "reverse")
    x = rng.normal(size=(6, 2, 4)).astype("float32")  # ONNX is time-major
    y, y_h, y_c = ReferenceEvaluator(proto).run(None, {"X": x})
    seq, (h, c) = reference.forward(layer, x.transpose(1, 0, 2))
    np.testing.assert_allclose(seq, y.transpose(2, 0, 1, 3).reshape(2, 6, -1), rtol=0, atol=1e-5)
    np.testing.assert_allclose(h, y_h, rtol=0, atol=1e-5)
    np.testing.assert_allclose(c, y_c, rtol=0, atol=1e-5)
    # held in the archive and written back to ONNX bit for bit; refused towards the frameworks
    assert lc.load(lc.save(layer, tmp_path / "p.safetensors")) == layer
    onnx_adapter.write(layer, tmp_path / "back.onnx")
    assert files.read(tmp_path / "back.onnx").layers[0].peepholes.keys() == layer.peepholes.keys()
    with pytest.raises(lc.UnsupportedError, match=r"peepholes \(P\).* have no nn.LSTM equivalent"):
        lc.to_torch(layer)
    with pytest.raises(lc.UnsupportedError, match=r"peepholes \(P\).* have no Keras equivalent"):
        lc.to_keras(layer)


@pytest.mark.parametrize("attrs", [{"clip": 0.7}, {"input_forget": 1}], ids=["clip", "input-forget"])
def test_clip_and_input_forget_agree_with_onnxruntime(tmp_path, rng, attrs):
    import onnxruntime

    proto = _lstm_graph(rng, "bidirectional", 2, **attrs)
    onnx.save(proto, tmp_path / "c.onnx")
    layer = files.read(tmp_path / "c.onnx").layers[0]
    x = rng.normal(size=(6, 2, 4)).astype("float32")
    y, y_h, y_c = onnxruntime.InferenceSession(str(tmp_path / "c.onnx")).run(None, {"X": x})
    seq, (h, c) = reference.forward(layer, x.transpose(1, 0, 2))
    np.testing.assert_allclose(seq, y.transpose(2, 0, 1, 3).reshape(2, 6, -1), rtol=0, atol=1e-5)
    np.testing.assert_allclose(c, y_c, rtol=0, atol=1e-5)


def test_onnx_refusals(tmp_path, rng):
    projected = lc.from_torch(random_torch_lstm(rng, proj_size=2))
    with pytest.raises(lc.UnsupportedError, match=r"proj_size=2 \(weight_hr\) has no ONNX equivalent"):
        files.write(lc.Model((projected,)), tmp_path / "p.onnx")
    assert not (tmp_path / "p.onnx").exists()
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07not onnx at all")
    with pytest.raises(lc.FormatError, match=r"junk.onnx: not a readable ONNX model"):
        files.read(tmp_path / "junk.onnx")


class Tagger(torch.nn.Module):
    """Embedding -> bidirectional GRU -> Linear: a small sequence tagger."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 6)
        self.rnn = torch.nn.GRU(6, 4, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, tokens):
        return self.head(self.rnn(self.embed(tokens))[0])


def test_pt_file_with_embedding_to_onnx_and_inspect(tmp_path, rng, capsys):
    module = Tagger()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.normal(0, 0.5, tuple(p.shape)).astype("float32")))
    torch.save(module.state_dict(), tmp_path / "tagger.pt")
    assert main(["convert", str(tmp_path / "tagger.pt"), str(tmp_path / "tagger.onnx"),
                 "--kind", "embed=embedding"]) == 0
    tokens = rng.integers(0, 20, size=(2, 7))
    with torch.no_grad():
        expected = module(torch.from_numpy(tokens)).numpy()
    got = onnx_adapter.run(tmp_path / "tagger.onnx", tokens)
    np.testing.assert_allclose(got["output"], expected, rtol=0, atol=1e-5)
    assert [n.op_type for n in onnx.load(tmp_path / "tagger.onnx").graph.node][:1] == ["Gather"]
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "tagger.onnx")]) == 0
    text = capsys.readouterr().out
    assert "rnn              GRU" in text and "reset (r)  [0, 4:8]" in text
    assert main(["verify", str(tmp_path / "tagger.pt"), str(tmp_path / "tagger.onnx"), "--kind",
                 "embed=embedding"]) == 0


def test_stacked_state_dict_through_onnx_and_back_to_torch(tmp_path, rng, capsys):
    """A bare nn.LSTM state dict (keys without a prefix) of a 2-layer bidirectional stack becomes one ONNX
    operator per layer; reading it back, each layer is its own module, so the keys no longer collide."""
    from safetensors.numpy import load_file
    module = random_torch_lstm(rng, input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    torch.save(module.state_dict(), tmp_path / "stack.pt")
    assert main(["convert", str(tmp_path / "stack.pt"), str(tmp_path / "stack.onnx")]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "stack.onnx")]) == 0
    assert main(["convert", str(tmp_path / "stack.onnx"), str(tmp_path / "back.safetensors"), "--to", "torch"]) == 0
    state = load_file(tmp_path / "back.safetensors")
    assert sorted(k.split(".")[0] for k in state if k.endswith("weight_ih_l0")) == ["lstm", "lstm_l1"]
    lower, upper = torch.nn.LSTM(3, 4, bidirectional=True, batch_first=True), \
        torch.nn.LSTM(8, 4, bidirectional=True, batch_first=True)
    lower.load_state_dict({k.split(".", 1)[1]: torch.from_numpy(v) for k, v in state.items() if k.startswith("lstm.")})
    upper.load_state_dict({k.split(".", 1)[1]: torch.from_numpy(v) for k, v in state.items()
                           if k.startswith("lstm_l1.")})
    x = torch.from_numpy(rng.normal(size=(2, 5, 3)).astype("float32"))
    module.batch_first = True
    with torch.no_grad():
        expected, _ = module(x)
        got, _ = upper(lower(x)[0])
    assert got.shape == expected.shape == (2, 5, 8)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=1e-6)


def sample(directory, rng):
    """An ONNX file of a GRU and a Dense (as this tool writes it), for the conformance suite (test_formats.py)."""
    model = lc.Model((lc.from_torch(random_torch_lstm(rng, input_size=3, hidden_size=2, module="GRU"), name="gru"),
                      lc.Dense(name="dense", weight=rng.normal(size=(4, 2)).astype("float32"),
                               bias=rng.normal(size=4).astype("float32"))))
    files.write(model, directory / "sample.onnx")
    return directory / "sample.onnx"


def test_weights_computed_from_initializers_are_read(tmp_path, rng):
    """Exporters split, join, reorder and retype weights between an initializer and the operator: W made by
    Concat + Unsqueeze of two halves, R by Transpose, B by Slice of a longer vector, all read at read time."""
    hidden, features = 3, 4
    w = rng.normal(size=(4 * hidden, features)).astype("float32")
    r = rng.normal(size=(4 * hidden, hidden)).astype("float32")
    b = rng.normal(size=8 * hidden + 5).astype("float32")
    inits = [numpy_helper.from_array(w[:2 * hidden], "w_top"), numpy_helper.from_array(w[2 * hidden:], "w_bottom"),
             numpy_helper.from_array(np.ascontiguousarray(r.T), "r_t"), numpy_helper.from_array(b, "b_long"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             numpy_helper.from_array(np.array([0], np.int64), "start"),
             numpy_helper.from_array(np.array([8 * hidden], np.int64), "end")]
    nodes = [helper.make_node("Concat", ["w_top", "w_bottom"], ["w_2d"], axis=0),
             helper.make_node("Unsqueeze", ["w_2d", "axis0"], ["W"]),
             helper.make_node("Transpose", ["r_t"], ["r_2d"], perm=[1, 0]),
             helper.make_node("Unsqueeze", ["r_2d", "axis0"], ["R"]),
             helper.make_node("Slice", ["b_long", "start", "end"], ["b_1d"]),
             helper.make_node("Unsqueeze", ["b_1d", "axis0"], ["B"]),
             helper.make_node("LSTM", ["x", "W", "R", "B"], ["Y", "Y_h", "Y_c"], hidden_size=hidden, name="lstm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 2, features])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [5, 1, 2, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "folded.onnx")
    (layer,) = files.read(tmp_path / "folded.onnx").layers
    # ONNX blocks i, o, f, c: the forget gate is block 2, the input-side bias the first half of B
    np.testing.assert_array_equal(layer.gate("forget").W_x, w[2 * hidden:3 * hidden])
    np.testing.assert_array_equal(layer.gate("output").W_h, r[hidden:2 * hidden])
    np.testing.assert_array_equal(layer.gate("cell").b_h, b[4 * hidden + 3 * hidden:8 * hidden])
    x = rng.normal(size=(5, 2, features)).astype("float32")
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got, _ = reference.forward(layer, x.transpose(1, 0, 2))
    assert got.shape == (2, 5, hidden)
    np.testing.assert_allclose(got, want[:, 0].transpose(1, 0, 2), atol=1e-5)


def test_batch_major_operators_are_read(tmp_path, rng):
    """layout=1: X (batch, time, features) and Y (batch, time, directions, hidden), as Keras and
    batch_first=True keep the data; the weights are laid out as with layout=0."""
    hidden, features = 3, 4
    w, r = rng.normal(size=(1, 3 * hidden, features)), rng.normal(size=(1, 3 * hidden, hidden))
    b = rng.normal(size=(1, 6 * hidden))
    inits = [numpy_helper.from_array(a.astype("float32"), n) for a, n in ((w, "W"), (r, "R"), (b, "B"))]
    inits.append(numpy_helper.from_array(np.array([2], np.int64), "axis2"))
    nodes = [helper.make_node("GRU", ["x", "W", "R", "B"], ["Y"], hidden_size=hidden, layout=1,
                              linear_before_reset=1, name="gru"),
             helper.make_node("Squeeze", ["Y", "axis2"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, features])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 5, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "batch_major.onnx")
    (layer,) = files.read(tmp_path / "batch_major.onnx").layers
    x = rng.normal(size=(2, 5, features)).astype("float32")
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got, _ = reference.forward(layer, x)
    assert got.shape == want.shape == (2, 5, hidden)
    np.testing.assert_allclose(got, want, atol=1e-5)
    files.write(files.read(tmp_path / "batch_major.onnx"), tmp_path / "written.onnx")  # written with layout=0
    assert all(a.name != "layout" for n in onnx.load(tmp_path / "written.onnx").graph.node for a in n.attribute)


def _reverse_graph(rng, path, *, last_only):
    hidden, features = 3, 4
    inits = [numpy_helper.from_array(rng.normal(size=shape).astype("float32"), name) for name, shape in
             (("W", (1, 4 * hidden, features)), ("R", (1, 4 * hidden, hidden)), ("B", (1, 8 * hidden)))]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xt", "W", "R", "B"], ["Y", "Y_h"], hidden_size=hidden, direction="reverse",
                              name="lstm")]
    if last_only:
        nodes.append(helper.make_node("Squeeze", ["Y_h", "axis0"], ["out"]))
        shape = [2, hidden]
    else:
        nodes += [helper.make_node("Squeeze", ["Y", "axis1"], ["ys"]),
                  helper.make_node("Transpose", ["ys"], ["out"], perm=[1, 0, 2])]
        shape = [2, 5, hidden]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, features])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return model


def test_reverse_only_last_step_becomes_keras_go_backwards(tmp_path, rng):
    graph = _reverse_graph(rng, tmp_path / "rev.onnx", last_only=True)
    (layer,) = files.read(tmp_path / "rev.onnx").layers
    assert layer.backward and not layer.return_sequences
    assert describe.conversions(layer)["keras"]["verdict"] == "exact"
    files.convert(tmp_path / "rev.onnx", tmp_path / "rev.keras")
    loaded = keras.saving.load_model(tmp_path / "rev.keras", compile=False)
    assert loaded.layers[-1].go_backwards
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    want = ReferenceEvaluator(graph).run(None, {"x": x})[0]
    got = keras.ops.convert_to_numpy(loaded(x))
    assert got.shape == want.shape == (2, 3)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_reverse_only_whole_sequence_is_refused_towards_keras(tmp_path, rng):
    _reverse_graph(rng, tmp_path / "rev_seq.onnx", last_only=False)
    with pytest.raises(lc.UnsupportedError, match="lstm: a reverse-only ONNX layer whose whole output sequence is used"):
        files.convert(tmp_path / "rev_seq.onnx", tmp_path / "rev_seq.keras")
    assert not (tmp_path / "rev_seq.keras").exists()


@pytest.mark.parametrize("name", ["around", "repeated", "embedding"])
def test_the_writer_encodes_protobuf_as_protobuf_does(name, tmp_path, rng):
    """The writer encodes its messages itself (no onnx package needed): each part it writes is what
    protobuf's own serializer makes of the same message, and the file loads and passes onnx's checker."""
    import keras
    import onnx

    from conftest import randomize_keras
    from lstm_convert.adapters.onnx import build
    from test_keras_data import MODELS

    source = keras.Sequential(MODELS[name](), name="sequential")
    randomize_keras(source, rng)
    source.save(tmp_path / "source.keras")
    model = files.read(tmp_path / "source.keras")
    if name == "around":  # a SimpleRNN that reads its input backwards has no ONNX form written here
        model = files.read(tmp_path / "source.keras", only=["conv", "bn", "ln", "act", "bi", "gru"])
    head, graph, _ = build(model)
    assert onnx.ModelProto.FromString(head).SerializeToString() == head
    assert onnx.GraphProto.FromString(graph).SerializeToString() == graph
    path = files.write(model, tmp_path / "m.onnx").path
    onnx.checker.check_model(onnx.load(path))


def test_attributes_are_encoded_as_onnx_helper_encodes_them():
    """Every kind of attribute value the writer may pass, NumPy scalars included, against onnx.helper."""
    import onnx

    from lstm_convert import _onnx_proto

    cases = {"an_int": 3, "a_bool": True, "a_numpy_int": np.int64(-2), "a_float": 0.25, "a_numpy_float": np.float32(1.5),
             "a_string": "forward", "ints": [1, 0, 2], "negative_ints": [-1, 5], "floats": [0.5, -2.0],
             "strings": ["Sigmoid", "Tanh"]}
    ours = _onnx_proto.make_node("Op", ["x", "w"], ["y"], name="n", **cases)
    theirs = onnx.helper.make_node("Op", ["x", "w"], ["y"], name="n", **cases).SerializeToString()
    assert ours == theirs
    info = _onnx_proto.make_tensor_value_info("input", _onnx_proto.TensorProto.FLOAT, ["batch", "time", 7])
    assert info == onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", "time", 7]).SerializeToString()
