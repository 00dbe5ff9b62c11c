"""The archive's specification (docs/archive-format.md) is enough to read one: scripts/read_archive.py, written
from it with the standard library and NumPy alone, checks archives of every layer kind the tool writes and
computes the same function from the gate tensors; the specification's worked example is the seed model's
archive, byte for byte."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lstm_convert as lc
from lstm_convert import files, reference
from lstm_convert.cli import main

from conftest import random_torch_lstm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "read_archive.py"


def _reader():
    spec = importlib.util.spec_from_file_location("read_archive", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reader_uses_nothing_of_the_package():
    source = SCRIPT.read_text(encoding="utf-8")
    imported = set(re.findall(r"^\s*(?:import|from)\s+([\w.]+)", source, re.M))
    assert imported <= {"__future__", "hashlib", "json", "struct", "sys", "numpy"}, imported


def _layers(rng):
    """A model of every recurrent variant the tool writes, each as (name, model, runs): ``runs`` when the
    reader computes it (recurrent layers without masks, Dense, Embedding)."""
    lstm = lc.from_torch(random_torch_lstm(rng, input_size=4, hidden_size=3))
    keys = lstm.keys()
    r = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    gru = lc.from_torch(random_torch_lstm(rng, input_size=4, hidden_size=3, module="GRU"))
    gates_before = {k: dataclasses.replace(g) for k, g in gru.gates.items()}
    cases = {
        "lstm": lstm,
        "stacked bidirectional": lc.from_torch(random_torch_lstm(rng, input_size=4, hidden_size=3, num_layers=2,
                                                                 bidirectional=True)),
        "projection": lc.from_torch(random_torch_lstm(rng, input_size=4, hidden_size=3, proj_size=2)),
        "peepholes and clip": dataclasses.replace(lstm, peepholes={k: r(3) for k in keys if k[2] != "cell"}, clip=1.5),
        "coupled gates": dataclasses.replace(lstm, input_forget=True),
        "cell clip and layer norm": dataclasses.replace(lstm, cell_clip=0.7, layer_norm={k: r(3) for k in keys}),
        "forget bias": dataclasses.replace(lstm, forget_bias=1.0),
        "last step, backwards": dataclasses.replace(lstm, return_sequences=False, go_backwards=True),
        "merge sum": dataclasses.replace(lc.from_torch(random_torch_lstm(rng, input_size=4, hidden_size=3,
                                                                         bidirectional=True)), merge_mode="sum"),
        "gru": gru,
        "gru reset before": dataclasses.replace(gru, reset_after=False, gates=gates_before),
        "rnn relu": lc.from_torch(random_torch_lstm(rng, input_size=4, hidden_size=3, module="RNN",
                                                     nonlinearity="relu")),
        "float64": lc.from_torch(random_torch_lstm(rng, input_size=4, hidden_size=3, dtype="float64")),
    }
    out = [(name, lc.Model((layer, lc.Dense(name="head", weight=r(2, layer.output_size), bias=r(2),
                                            activation="softmax"))), True) for name, layer in cases.items()]
    out.append(("embedding", lc.Model((lc.Embedding(name="embed", weight=r(9, 4)), lstm)), True))
    out.append(("single-step cell", lc.Model((lc.from_torch(random_torch_lstm(rng, input_size=4, hidden_size=3,
                                                                              module="LSTMCell")),)), False))
    around = [lc.Masking(name="mask", size=4), lc.Conv1D(name="conv", weight=r(4, 4, 3), bias=r(4)),
              lc.BatchNorm(name="bn", scale=r(4), offset=r(4), mean=r(4), variance=np.abs(r(4)) + 0.1),
              lc.LayerNorm(name="ln", scale=r(4), offset=r(4), size=4), lc.Activation(name="act", activation="relu",
                                                                                   size=4)]
    out.append(("layers around", lc.Model((*around, lstm, lc.Pooling(name="pool", mode="average", size=3))), False))
    return out


def test_the_independent_reader_checks_and_runs_every_kind(tmp_path, rng):
    reader = _reader()
    for name, model, runs in _layers(rng):
        path = tmp_path / f"{name.replace(' ', '_').replace(',', '')}.safetensors"
        files.write(model, path)
        data = path.read_bytes()
        reader.check(data)  # every digest, and the tensors the specs call for
        if not runs:
            with pytest.raises(reader.Damaged, match="not run by this reader"):
                reader.run(data, np.zeros((1, 2, 4)))
            continue
        first = model.layers[0]
        x = rng.integers(0, 9, size=(3, 6)) if isinstance(first, lc.Embedding) else rng.normal(size=(3, 6, 4))
        ours = reader.run(data, x)
        want = reference.run(model, x)[-1][0]
        assert ours.shape == want.shape, name
        np.testing.assert_allclose(ours, want, rtol=1e-9, atol=1e-12, err_msg=name)


def test_the_independent_reader_sees_damage(tmp_path, rng):
    reader = _reader()
    path = tmp_path / "a.safetensors"
    files.write(_layers(rng)[0][1], path)
    data = path.read_bytes()
    for at in range(0, len(data), 97):
        flipped = bytearray(data)
        flipped[at] ^= 1 << (at % 8)
        with pytest.raises((reader.Damaged, ValueError, KeyError, TypeError)):
            reader.check(bytes(flipped))
    done = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith(f"{path}: intact (format version 3)"), done.stderr


def test_the_worked_example_is_the_seed_models_archive(tmp_path):
    """The specification's example, produced by the command it shows, is what that command prints today."""
    doc = (ROOT / "docs" / "archive-format.md").read_text(encoding="utf-8")
    block = doc.split("<!-- example -->\n```text\n", 1)[1].split("```", 1)[0]
    assert main(["demo", "--out", str(tmp_path / "demo"), "-q"]) == 0
    assert main(["convert", str(tmp_path / "demo" / "seed.keras"), str(tmp_path / "demo" / "seed.safetensors"),
                 "-q"]) == 0
    done = subprocess.run([sys.executable, str(SCRIPT), "demo/seed.safetensors", "--layout"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert block == "$ python scripts/read_archive.py demo/seed.safetensors --layout\n" + done.stdout
