"""Writes .tflite files with TensorFlow's own converter from tf_keras models, and what tf_keras computes.

    TF_USE_LEGACY_KERAS=1 python tests/tflite_converter.py OUT_DIR SEED CASE...

Run in a process of its own (the converter fuses an LSTM into one operator only for tf_keras layers, chosen
before TensorFlow is imported). Every weight gets seeded random values; ``OUT_DIR/<case>.tflite`` is the
converted model, ``OUT_DIR/<case>.npz`` seeded inputs ``x`` (3 sequences) and tf_keras' outputs ``y``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as K

L = K.layers
CASES = {
    # LSTM -> Bidirectional(LSTM) -> Dense(softmax): REVERSE_V2, two LSTM operators, STRIDED_SLICE, CONCATENATION.
    "stacked_bidirectional": ((6, 3), lambda: [L.LSTM(4, return_sequences=True), L.Bidirectional(L.LSTM(5)),
                                               L.Dense(2, activation="softmax")]),
    # Bidirectional sequences (the backward one reversed back), then an LSTM with go_backwards.
    "sequences_backwards": ((6, 3), lambda: [L.Bidirectional(L.LSTM(4, return_sequences=True)),
                                             L.LSTM(3, go_backwards=True), L.Dense(2)]),
    # Large enough that dynamic-range quantisation turns its weights into int8.
    "quantised": ((5, 40), lambda: [L.LSTM(48), L.Dense(2)]),
    # A SimpleRNN, which the converter writes as a loop of plain operators.
    "simple_rnn": ((6, 3), lambda: [L.SimpleRNN(4), L.Dense(2)]),
}


def main(out: Path, seed: int, cases: list[str]) -> None:
    rng = np.random.default_rng(seed)
    for case in cases:
        shape, layers = CASES[case]
        model = K.Sequential([L.Input(shape, batch_size=1), *layers()])
        model.set_weights([rng.normal(scale=0.6, size=w.shape).astype(np.float32) for w in model.get_weights()])
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if case == "quantised":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        (out / f"{case}.tflite").write_bytes(converter.convert())
        x = rng.normal(size=(3, *shape)).astype(np.float32)
        y = np.concatenate([model(x[i:i + 1]).numpy() for i in range(len(x))])
        np.savez(out / f"{case}.npz", x=x, y=y)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
