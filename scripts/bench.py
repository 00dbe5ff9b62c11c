"""Benchmark: file conversions against the cost of copying the same bytes, as whole processes.

    python scripts/bench.py                        # the default: a 4-layer bidirectional LSTM, 1024 units
    python scripts/bench.py --hidden 64 --repeat 1 --json out.json   # tiny, as the test runs it

It writes, in a work directory, the state dict of a PyTorch ``nn.LSTM(H, H,
num_layers=L, bidirectional=True)`` in float32 as safetensors (about 370 MB at
the default size; made with NumPy: the same keys, shapes and dtype, without
needing PyTorch) and a ``.keras`` model of the same layers, then times each
command in its own process, ``--repeat`` times, and reports the median time,
the ratio to its baseline and the peak resident memory (from ``wait4``):

- ``convert`` PyTorch-layout safetensors -> canonical archive, archive ->
  PyTorch-layout safetensors, and archive -> ``.pt``, against the copy baseline:
  a process that loads the file with ``safetensors.numpy.load_file`` and writes
  it back with ``save_file``;
- ``inspect`` of the archive;
- ``.keras`` -> PyTorch-layout safetensors, against the script people write
  (import TensorFlow, ``keras.saving.load_model``, ``get_weights``, reorder the
  gates with NumPy, ``torch.save``);
- ``lstm-convert --help``.

Before each run, earlier writes are flushed to disk (``os.sync``, untimed), so
that no run pays for the previous one's write-back. It prints a table and writes
the same figures as JSON. Targets (on 2 cores):
conversions within 1.5x the copy baseline, peak memory within 2x the file
size, ``inspect`` and ``--help`` under 0.3 s, ``.keras`` conversion at least 5x
faster than the typical script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
PY = sys.executable

COPY = """
import sys
from safetensors.numpy import load_file, save_file
save_file(load_file(sys.argv[1]), sys.argv[2], metadata={"format": "pt"})
"""

# What people write today to move a Keras bidirectional LSTM stack to PyTorch.
TYPICAL = """
import sys
import numpy as np
import keras
import torch
model = keras.saving.load_model(sys.argv[1])
state = {}
for k, layer in enumerate(model.layers):
    for suffix, sub in (("", layer.forward_layer), ("_reverse", layer.backward_layer)):
        kernel, recurrent, bias = sub.get_weights()
        state[f"lstm.weight_ih_l{k}{suffix}"] = torch.from_numpy(np.ascontiguousarray(kernel.T))
        state[f"lstm.weight_hh_l{k}{suffix}"] = torch.from_numpy(np.ascontiguousarray(recurrent.T))
        state[f"lstm.bias_ih_l{k}{suffix}"] = torch.from_numpy(bias)
        state[f"lstm.bias_hh_l{k}{suffix}"] = torch.zeros_like(torch.from_numpy(bias))
torch.save(state, sys.argv[2])
"""


def make_files(work: Path, hidden: int, layers: int, seed: int = 0) -> dict[str, Path]:
    """The PyTorch-layout safetensors file and the .keras model the benchmark converts.

    Both are made in child processes: a child forked from a parent holding the
    arrays would inherit their pages, and the measured peak memory with them.
    """
    torch_file = work / "lstm_torch.safetensors"
    if not torch_file.exists():
        code = f"""
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng({seed})
tensors = {{}}
for k in range({layers}):
    fan_in = {hidden} if k == 0 else 2 * {hidden}
    for suffix in ("", "_reverse"):
        for name, shape in (("weight_ih", (4 * {hidden}, fan_in)), ("weight_hh", (4 * {hidden}, {hidden})),
                            ("bias_ih", (4 * {hidden},)), ("bias_hh", (4 * {hidden},))):
            tensors[f"{{name}}_l{{k}}{{suffix}}"] = rng.standard_normal(shape, dtype=np.float32) * 0.05
save_file(tensors, {str(torch_file)!r}, metadata={{"format": "pt"}})
"""
        subprocess.run([PY, "-c", code], check=True, env=ENV)
    keras_file = work / "lstm.keras"
    if not keras_file.exists():
        code = f"""
import numpy as np, keras
rng = np.random.default_rng({seed})
model = keras.Sequential([keras.Input((None, {hidden}))] + [
    keras.layers.Bidirectional(keras.layers.LSTM({hidden}, return_sequences=True,
                               kernel_initializer="zeros", recurrent_initializer="zeros")) for _ in range({layers})])
model.set_weights([rng.standard_normal(w.shape, dtype=np.float32) * 0.05 for w in model.get_weights()])
model.save({str(keras_file)!r})
"""
        subprocess.run([PY, "-c", code], check=True, env=ENV)
    return {"torch": torch_file, "keras": keras_file}


def measure(args: list[str], repeat: int, cleanup: Path | None = None) -> dict[str, float]:
    """Median wall time and the largest peak RSS of ``repeat`` runs of one command."""
    times, peaks = [], []
    for _ in range(repeat):
        if cleanup is not None and cleanup.exists():
            cleanup.unlink()
        os.sync()  # start every run with no earlier writes waiting to reach the disk (untimed)
        start = time.perf_counter()
        proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - start)
        peaks.append(usage.ru_maxrss * 1024)  # kilobytes on Linux
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr.read().decode()}")
        proc.stderr.close()
    return {"seconds": statistics.median(times), "peak_bytes": max(peaks)}


def run(work: Path, hidden: int, layers: int, repeat: int) -> dict:
    paths = make_files(work, hidden, layers)
    cli = [PY, "-m", "lstm_convert"]
    archive, back, pt, copy, from_keras, typical = (work / n for n in (
        "archive.safetensors", "back_torch.safetensors", "archive.pt", "copy.safetensors",
        "from_keras.safetensors", "typical.pt"))
    size = paths["torch"].stat().st_size
    rows = {}
    rows["copy baseline (safetensors load_file + save_file)"] = measure([PY, "-c", COPY, str(paths["torch"]),
                                                                         str(copy)], repeat, copy)
    rows["convert torch safetensors -> archive"] = measure(
        cli + ["convert", str(paths["torch"]), str(archive), "--overwrite"], repeat)
    rows["convert archive -> torch safetensors"] = measure(
        cli + ["convert", str(archive), str(back), "--to", "torch", "--overwrite"], repeat)
    rows["convert archive -> .pt"] = measure(cli + ["convert", str(archive), str(pt), "--overwrite"], repeat)
    rows["inspect archive"] = measure(cli + ["inspect", str(archive)], repeat)
    rows["typical script: .keras -> .pt via TensorFlow"] = measure([PY, "-c", TYPICAL, str(paths["keras"]),
                                                                     str(typical)], repeat, typical)
    rows["convert .keras -> torch safetensors"] = measure(
        cli + ["convert", str(paths["keras"]), str(from_keras), "--to", "torch", "--overwrite"], repeat)
    rows["lstm-convert --help"] = measure(cli + ["--help"], repeat)
    base = rows["copy baseline (safetensors load_file + save_file)"]["seconds"]
    script = rows["typical script: .keras -> .pt via TensorFlow"]["seconds"]
    for name, row in rows.items():
        if name.startswith("convert") and ".keras" not in name:
            row["ratio"] = row["seconds"] / base
        if ".keras" in name and name.startswith("convert"):
            row["ratio"] = row["seconds"] / script
        row["memory_vs_file"] = row["peak_bytes"] / size
    targets = {
        "conversions within 1.5x copy": all(r["ratio"] <= 1.5 for n, r in rows.items()
                                            if n.startswith("convert") and ".keras" not in n),
        "peak memory within 2x file": all(r["memory_vs_file"] <= 2.0 for n, r in rows.items()
                                          if n.startswith("convert") and ".keras" not in n),
        "inspect under 0.3 s": rows["inspect archive"]["seconds"] < 0.3,
        ".keras at least 5x faster than the script": script / rows["convert .keras -> torch safetensors"]["seconds"] >= 5,
        "--help under 0.3 s": rows["lstm-convert --help"]["seconds"] < 0.3,
    }
    return {"hidden": hidden, "layers": layers, "repeat": repeat, "file_bytes": size,
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "rows": rows, "targets": targets}


def table(result: dict) -> str:
    lines = [f"file: {result['file_bytes'] / 1e6:.0f} MB (hidden {result['hidden']}, {result['layers']} bidirectional "
             f"layers), median of {result['repeat']}",
             f"{'command':<52} {'seconds':>8} {'ratio':>7} {'peak MB':>8} {'x file':>7}"]
    for name, row in result["rows"].items():
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else ""
        lines.append(f"{name:<52} {row['seconds']:>8.3f} {ratio:>7} {row['peak_bytes'] / 1e6:>8.0f} "
                     f"{row['memory_vs_file']:>7.2f}")
    lines.append("ratios: conversions against the copy baseline; .keras conversion against the typical script")
    lines += [f"target {name}: {'met' if ok else 'MISSED'}" for name, ok in result["targets"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=1024, help="units and input size (default 1024)")
    parser.add_argument("--layers", type=int, default=4, help="stacked bidirectional layers (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command (default 3)")
    parser.add_argument("--work", help="where to keep the generated files (default: a temporary directory)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        result = run(Path(args.work), args.hidden, args.layers, args.repeat)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(Path(tmp), args.hidden, args.layers, args.repeat)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
