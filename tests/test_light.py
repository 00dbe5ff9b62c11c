"""Without the frameworks (PyTorch, Keras, TensorFlow, ONNX, protobuf and JAX hidden from the import system):
every pair of formats either converts or says which extra to install; nothing else reaches the user."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lstm_convert.cli import main

HIDDEN = ("torch", "keras", "tensorflow", "tf_keras", "onnx", "onnxruntime", "google", "ml_dtypes", "jax", "flax", "equinox", "haiku")
TARGETS = {"archive": ".safetensors", "torch": ".pt", "npz": ".npz", "onnx": ".onnx", "keras": ".keras",
           "flax": ".msgpack", "equinox": ".eqx", "haiku": ".npz"}
READ_NEEDS: dict[str, str] = {}  # the extra a format's reader needs: none today (ONNX is decoded without onnx)
WRITE_NEEDS: dict[str, str] = {}  # every format is written without its framework


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("light")
    assert main(["demo", "--out", str(folder)]) == 0
    out = {"keras": folder / "seed.keras", "archive": folder / "seed.safetensors"}
    assert main(["convert", str(out["keras"]), str(out["archive"])]) == 0
    for fmt, suffix in (("torch", ".pt"), ("npz", ".npz"), ("onnx", ".onnx"), ("flax", ".msgpack"), ("equinox", ".eqx")):
        out[fmt] = folder / f"seed{suffix}"
        assert main(["convert", str(out["keras"]), str(out[fmt]), "--to", fmt]) == 0
    return out


def test_every_pair_converts_or_names_the_extra(sources, tmp_path):
    lines = []
    for src_fmt, src in sources.items():
        for target, suffix in TARGETS.items():
            lines.append(f"convert {src} {tmp_path / (src_fmt + '_to_' + target + suffix)} --to {target}")
        lines.append(f"inspect {src}")
    code = ("import sys, shlex\n"
            f"for m in {HIDDEN!r}: sys.modules[m] = None\n"
            "from lstm_convert.cli import main\n"
            f"for line in {lines!r}:\n"
            "    print('$', line, flush=True)\n"
            "    print('status', main(shlex.split(line)), flush=True)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("lstm-convert:")]
    statuses = [int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("status ")]
    assert len(statuses) == len(lines)
    assert "internal error" not in done.stderr, done.stderr
    expected_failures = []
    for line, status in zip(lines, statuses):
        words = line.split()
        source = READ_NEEDS.get(next(f for f, p in sources.items() if str(p) == words[1]))
        needed = [m for m in (source, WRITE_NEEDS.get(words[-1]) if words[0] == "convert" else None) if m]
        assert (status == 1) == bool(needed), (line, status)
        expected_failures += needed[:1]  # the source is read first
    assert errors == [f"lstm-convert: error: {m} is needed for this and is not installed: "
                      f"pip install 'lstm-convert[{m}]'" for m in expected_failures]
