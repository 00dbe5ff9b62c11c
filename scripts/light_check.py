"""The light install at work: run by .ci/run in a virtual environment holding lstm-convert with its core
dependencies only (NumPy, safetensors, h5py, tqdm), on files a full environment made.

    python scripts/light_check.py DIR     # DIR: seed.keras, seed.safetensors, seed.pt, seed.npz, seed.onnx, .msgpack, .eqx, .tflite

Every file is inspected and converted to every writable format. Each either succeeds and reads back as
the same model as the archive, or fails with the one line naming the extra to install; anything else
(an internal error, another message) fails the check.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

READ_NEEDS: dict[str, str] = {}  # the extra a format's reader needs: none today (ONNX is decoded without onnx)
WRITE_NEEDS: dict[str, str] = {}  # every format is written without its framework
TARGETS = {"archive": ".safetensors", "torch": ".pt", "npz": ".npz", "onnx": ".onnx", "keras": ".keras",
           "flax": ".msgpack", "equinox": ".eqx", "haiku": ".npz", "tflite": ".tflite"}
SOURCES = {"keras": "seed.keras", "archive": "seed.safetensors", "torch": "seed.pt", "npz": "seed.npz",
           "onnx": "seed.onnx", "flax": "seed.msgpack", "equinox": "seed.eqx", "tflite": "seed.tflite"}
# A Haiku file of several classes of module says nothing of their order: read back with --only in order.
READ_BACK = {"haiku": ["lstm", "linear"]}


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstm_convert", *argv], capture_output=True, text=True)


def main() -> int:
    present = [m for m in ("torch", "keras", "tensorflow", "onnx", "onnxruntime", "jax", "flax", "equinox", "haiku",
                           "ai_edge_litert")
               if importlib.util.find_spec(m)]
    if present:
        print(f"not a light environment: {', '.join(present)} installed", file=sys.stderr)
        return 2
    folder = Path(sys.argv[1])
    from lstm_convert import files

    reference = files.read(folder / SOURCES["archive"])
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name in SOURCES.items():
            src = folder / name
            needs = [READ_NEEDS[fmt]] if fmt in READ_NEEDS else []
            done = run("inspect", str(src))
            failures += check(f"inspect {name}", done, needs)
            for target, suffix in TARGETS.items():
                dst = Path(tmp) / f"{fmt}_to_{target}{suffix}"
                needed = needs or ([WRITE_NEEDS[target]] if target in WRITE_NEEDS else [])
                done = run("convert", str(src), str(dst), "--to", target, "-q")
                failures += check(f"convert {name} --to {target}", done, needed)
                readable = target not in READ_NEEDS  # a file the light install writes but cannot read back
                if not needed and done.returncode == 0 and readable and not same_weights(
                        files.read(dst, only=READ_BACK.get(target, ())), reference):
                    failures.append(f"convert {name} --to {target}: the weights read back differ")
    for line in failures:
        print(f"FAILED {line}", file=sys.stderr)
    print(f"light install: {len(SOURCES) * (len(TARGETS) + 1)} commands, {len(failures)} failed")
    return 1 if failures else 0


def same_weights(a, b) -> bool:
    """The same function from the LSTM's weights on: the float64 reference's outputs of the layers from the
    LSTM on agree within 1e-6 (Flax and Haiku keep an LSTM's biases as one vector, and Haiku's forget gate
    has its +1 apart, so their tensors need not be the same bits)."""
    import numpy as np

    from lstm_convert import Model, reference

    def run(model):
        at = next(k for k, layer in enumerate(model.layers) if layer.kind == "lstm")
        layers = Model(tuple(model.layers[at:]))
        x = np.random.default_rng(0).normal(size=(2, 5, layers.layers[0].input_size))
        return reference.run(layers, x, sequences=True)[-1][0]
    return bool(np.allclose(run(a), run(b), rtol=0, atol=1e-6))


def check(what: str, done: subprocess.CompletedProcess, needed: list[str]) -> list[str]:
    if needed:
        want = (f"lstm-convert: error: {needed[0]} is needed for this and is not installed: "
                f"pip install 'lstm-convert[{needed[0]}]'\n")
        return [] if done.returncode == 1 and done.stderr == want else [f"{what}: expected {want!r}, got "
                                                                         f"{done.returncode} {done.stderr!r}"]
    return [] if done.returncode == 0 and not done.stderr else [f"{what}: {done.returncode} {done.stderr!r}"]


if __name__ == "__main__":
    raise SystemExit(main())
