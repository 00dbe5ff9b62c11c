"""Writes TensorFlow 1 checkpoints with TensorFlow's own cells and Saver, and what TensorFlow computes with them.

    TF_USE_LEGACY_KERAS=1 python tests/tf1_checkpoints.py OUT_DIR           # every case
    TF_USE_LEGACY_KERAS=1 python tests/tf1_checkpoints.py OUT_DIR SEED      # OUT_DIR/sample/model only

Run in a process of its own (``tf.compat.v1.nn.rnn_cell`` needs the legacy Keras, chosen before TensorFlow
is imported). Every variable gets seeded random values (biases and gate biases included), the graph is run
on seeded inputs from non-zero initial states where a case takes them, and ``OUT_DIR/<case>/model`` is the
checkpoint, ``OUT_DIR/<case>.npz`` the inputs, initial states and TensorFlow's outputs and final states.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
cells = v1.nn.rnn_cell
BATCH, STEPS, FEATURES = 3, 6, 5


def _state(cell, rng):
    size = cell.state_size
    if isinstance(size, cells.LSTMStateTuple):
        return cells.LSTMStateTuple(*(rng.normal(size=(BATCH, s)).astype("float32") for s in size))
    return rng.normal(size=(BATCH, size)).astype("float32")


def case(name: str, out: Path, build, optimizer: bool = False, seed: int | None = None) -> None:
    rng = np.random.default_rng(sum(map(ord, name)) if seed is None else seed)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, STEPS, FEATURES])
        results = build(x, rng)  # name -> tensor, plus "feeds": {placeholder: value}
        feeds = results.pop("feeds", {})
        if optimizer:
            loss = tf.reduce_sum(tf.square(next(iter(results.values()))))
            v1.train.AdamOptimizer(0.01).minimize(loss, global_step=v1.train.get_or_create_global_step())
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            for var in v1.trainable_variables():
                var.load(rng.normal(0, 0.5, var.shape).astype("float32"), session)
            data = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
            values = session.run(results, {x: data, **feeds})
            (out / name).mkdir(parents=True, exist_ok=True)
            saver.save(session, str(out / name / "model"))
    np.savez(out / f"{name}.npz", x=data, **{f"feed_{k}": v for k, v in _named(feeds).items()}, **values)


def _named(feeds):
    return {key.name.split(":")[0].replace("/", "_"): value for key, value in feeds.items()}


def single(cell_fn, with_state=True):
    def build(x, rng):
        with v1.variable_scope("encoder"):
            cell = cell_fn()
            feeds, initial = {}, None
            if with_state:
                value = _state(cell, rng)
                if isinstance(value, cells.LSTMStateTuple):
                    c = v1.placeholder(tf.float32, value.c.shape, name="c0")
                    h = v1.placeholder(tf.float32, value.h.shape, name="h0")
                    initial, feeds = cells.LSTMStateTuple(c, h), {c: value.c, h: value.h}
                else:
                    h = v1.placeholder(tf.float32, value.shape, name="h0")
                    initial, feeds = h, {h: value}
            output, state = v1.nn.dynamic_rnn(cell, x, initial_state=initial, dtype=tf.float32)
        out = {"output": output, "feeds": feeds}
        if isinstance(state, cells.LSTMStateTuple):
            out.update(h=state.h, c=state.c)
        else:
            out["h"] = state
        return out
    return build


def stacked(x, rng):
    stack = cells.MultiRNNCell([cells.BasicLSTMCell(4), cells.GRUCell(3)])
    output, _ = v1.nn.dynamic_rnn(stack, x, dtype=tf.float32)
    head = v1.layers.dense(output, 2)
    return {"output": output, "head": head}


def bidirectional(x, rng):
    (fw, bw), _ = v1.nn.bidirectional_dynamic_rnn(cells.LSTMCell(3), cells.LSTMCell(3), x, dtype=tf.float32)
    return {"output": tf.concat([fw, bw], axis=-1)}


def keras_layers(out: Path):
    """A Keras model built in a TensorFlow 1 graph and saved by Saver (its variables named by the layers:
    ``enc/lstm_cell/kernel``), trained a step so that Adam's slots sit beside them; ``keras_layers.json`` is
    its architecture."""
    def build(x, rng):
        model = tf.keras.Sequential([tf.keras.Input((STEPS, FEATURES)),
                                     tf.keras.layers.LSTM(4, return_sequences=True, name="enc"),
                                     tf.keras.layers.GRU(3, name="g"), tf.keras.layers.Dense(2, name="head")])
        (out / "keras_layers.json").write_text(model.to_json())
        return {"output": model(x)}
    return build


def _save(out: Path, name: str, variables: dict, arrays: dict) -> None:
    """Variables of the given checkpoint names and values, saved by tf.compat.v1.train.Saver."""
    graph = tf.Graph()
    with graph.as_default():
        made = {key: v1.get_variable(f"v{k}", initializer=value) for k, (key, value) in enumerate(variables.items())}
        saver = v1.train.Saver(var_list=made)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            (out / name).mkdir(parents=True, exist_ok=True)
            saver.save(session, str(out / name / "model"))
    np.savez(out / f"{name}.npz", **arrays)


def block_ops(out: Path) -> None:
    """LSTMBlockFusedCell's and GRUBlockCell's variables (tf.contrib.rnn, gone from TensorFlow 2), computed by
    the ops those cells ran, which TensorFlow still has: BlockLSTM and GRUBlockCell."""
    rng = np.random.default_rng(41)
    units = 4
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    h0, c0 = (rng.normal(size=(BATCH, units)).astype("float32") for _ in range(2))
    kernel = rng.normal(0, 0.5, (FEATURES + units, 4 * units)).astype("float32")
    bias = rng.normal(0, 0.5, 4 * units).astype("float32")
    zeros = np.zeros(units, "float32")
    outs = tf.raw_ops.BlockLSTM(seq_len_max=np.int64(STEPS), x=np.swapaxes(x, 0, 1), cs_prev=c0, h_prev=h0, w=kernel,
                                wci=zeros, wcf=zeros, wco=zeros, b=bias, forget_bias=1.0, cell_clip=-1.0,
                                use_peephole=False)
    h_seq, c_seq = np.swapaxes(np.asarray(outs.h), 0, 1), np.swapaxes(np.asarray(outs.cs), 0, 1)
    _save(out, "fused", {"rnn/lstm_fused_cell/kernel": kernel, "rnn/lstm_fused_cell/bias": bias},
          {"x": x, "h0": h0, "c0": c0, "output": h_seq, "h": h_seq[:, -1], "c": c_seq[:, -1]})

    table = rng.normal(size=(10, FEATURES)).astype("float32")  # a variable of no cell
    _save(out, "extra", {"rnn/lstm_fused_cell/kernel": kernel, "rnn/lstm_fused_cell/bias": bias,
                         "lookup/table": table}, {})

    w_ru = rng.normal(0, 0.5, (FEATURES + units, 2 * units)).astype("float32")
    b_ru = rng.normal(0, 0.5, 2 * units).astype("float32")
    w_c = rng.normal(0, 0.5, (FEATURES + units, units)).astype("float32")
    b_c = rng.normal(0, 0.5, units).astype("float32")
    h, steps = h0, []
    for t in range(STEPS):
        h = np.asarray(tf.raw_ops.GRUBlockCell(x=x[:, t], h_prev=h, w_ru=w_ru, w_c=w_c, b_ru=b_ru, b_c=b_c).h)
        steps.append(h)
    _save(out, "gru_block", {"rnn/gru_cell/w_ru": w_ru, "rnn/gru_cell/b_ru": b_ru, "rnn/gru_cell/w_c": w_c,
                             "rnn/gru_cell/b_c": b_c},
          {"x": x, "h0": h0, "output": np.stack(steps, 1), "h": h})


def cudnn_saveables(out: Path) -> None:
    """What CudnnLSTM's and CudnnGRU's saveables (tf.contrib.cudnn_rnn) wrote from cuDNN's parameters: the
    cudnn-compatible cells' variables, and both sides of each bias beside their sum. The parameters are kept
    as cuDNN (and PyTorch) order them, for the test to run in PyTorch."""
    rng = np.random.default_rng(43)
    units = 3

    def params(gates):
        return {role: rng.normal(0, 0.5, (gates, *shape)).astype("float32")
                for role, shape in (("w", (units, FEATURES)), ("r", (units, units)), ("bw", (units,)),
                                    ("br", (units,)))}

    lstm = params(4)  # cuDNN's order i, f, c, o; the cells' i, c, f, o
    icfo = [0, 2, 1, 3]
    kernel = np.concatenate([np.concatenate([lstm["w"][g], lstm["r"][g]], 1) for g in icfo], 0).T
    b_in, b_rec = (np.concatenate([lstm[k][g] for g in icfo]) for k in ("bw", "br"))
    scope = "cudnn_lstm/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell"
    _save(out, "cudnn_lstm", {f"{scope}/kernel": np.ascontiguousarray(kernel), f"{scope}/bias": b_in + b_rec,
                              f"{scope}/bias_cudnn_0": b_in, f"{scope}/bias_cudnn_1": b_rec},
          {f"cudnn_{k}": v for k, v in lstm.items()})

    gru = params(3)  # cuDNN's order r, u, c (PyTorch's r, z, n)
    gates = np.concatenate([np.concatenate([gru["w"][g], gru["r"][g]], 1) for g in (0, 1)], 0).T
    b_r, b_u = (np.concatenate([gru[k][g] for g in (0, 1)]) for k in ("bw", "br"))
    scope = "cudnn_gru/multi_rnn_cell/cell_0/cudnn_compatible_gru_cell"
    _save(out, "cudnn_gru", {f"{scope}/gates/kernel": np.ascontiguousarray(gates), f"{scope}/gates/bias": b_r + b_u,
                             f"{scope}/candidate/input_projection/kernel": np.ascontiguousarray(gru["w"][2].T),
                             f"{scope}/candidate/input_projection/bias": gru["bw"][2],
                             f"{scope}/candidate/hidden_projection/kernel": np.ascontiguousarray(gru["r"][2].T),
                             f"{scope}/candidate/hidden_projection/bias": gru["br"][2],
                             f"{scope}/bias_cudnn 0": b_r, f"{scope}/bias_cudnn 1": b_u},
          {f"cudnn_{k}": v for k, v in gru.items()})


def main() -> None:
    out = Path(sys.argv[1])
    if len(sys.argv) > 2:  # the conformance suite's sample: one LSTMCell of 3 units over 5 features
        case("sample", out, single(lambda: cells.LSTMCell(3), with_state=False), seed=int(sys.argv[2]))
        return
    case("lstm", out, single(lambda: cells.LSTMCell(4)))
    case("basic_lstm", out, single(lambda: cells.BasicLSTMCell(4, forget_bias=0.75)), optimizer=True)
    case("peephole", out, single(lambda: cells.LSTMCell(4, use_peepholes=True, num_proj=3)))
    case("gru", out, single(lambda: cells.GRUCell(4)))
    case("relu_lstm", out, single(lambda: cells.LSTMCell(4, activation=tf.nn.relu)))  # not in the checkpoint
    case("rnn", out, single(lambda: cells.BasicRNNCell(4)))
    case("stacked", out, stacked)
    case("bidirectional", out, bidirectional)
    case("keras_layers", out, keras_layers(out), optimizer=True)
    block_ops(out)
    cudnn_saveables(out)


if __name__ == "__main__":
    main()
