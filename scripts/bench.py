"""Benchmark: what a user waits for, each command as a whole process, against a baseline run beside it.

    python scripts/bench.py                        # every row, as the README records it
    python scripts/bench.py --quick                # small files, two pairs: what CI runs
    python scripts/bench.py --readme README.md     # also write the figures into the README

Every row is a command and its baseline, run alternately pair by pair in one run (baseline, command,
baseline, command, ...), each writing a new output file whose removal before the run is not timed; the
row reports the median of the per-pair ratios of wall times, with their min and max, and each one's peak
resident memory (from ``wait4``) against the size of the file read. Only ratios measured side by side
mean anything on a shared machine; single times vary with the disk.

Baselines:
- ``copy``: load the file with ``safetensors.numpy.load_file`` and write it back with ``save_file``;
- ``script``: what people write to move a Keras LSTM to PyTorch (import TensorFlow, ``load_model``,
  ``get_weights``, reorder with NumPy, ``torch.save``);
- ``python``: ``python -c pass``, the floor of any command.

The files (made untimed, in child processes, so that no timed process inherits their pages): the state
dict of a PyTorch ``nn.LSTM(H, H, num_layers=4, bidirectional=True)`` in float32 as safetensors (369 MB
at H = 1024; 46 MB, 185 MB and 1.48 GB for the scaling rows), the same converted to the archive and to
``.pt``, a ``.keras`` model of the same layers, and a state dict of 2,000 small LSTMs (8,000 tensors).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Bytecode is cached as in an ordinary install (some environments set PYTHONDONTWRITEBYTECODE, which
# would have every command compile the package anew); the untimed first run of each row writes it.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV.update(TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
PY = sys.executable
CLI = [PY, "-m", "lstm_convert"]

COPY = """
import sys
from safetensors.numpy import load_file, save_file
save_file(load_file(sys.argv[1]), sys.argv[2], metadata={"format": "pt"})
"""

# What people write today to move a Keras bidirectional LSTM stack to PyTorch.
SCRIPT = """
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

BASELINES = {"copy": lambda src, out: [PY, "-c", COPY, str(src), str(out)],
             "script": lambda src, out: [PY, "-c", SCRIPT, str(src), str(out)],
             "python": lambda src, out: [PY, "-c", "pass"]}

SIZES = {"46 MB": 362, "185 MB": 724, "369 MB": 1024, "1.48 GB": 2048}  # label: H of the 4-layer stack
MAIN = "369 MB"


def _child(code: str) -> None:
    """Run ``code`` in a new interpreter, given on stdin (a long list of shapes exceeds an argument's limit)."""
    subprocess.run([PY, "-"], input=code, text=True, check=True, env=ENV)


def random_state_file(path: Path, shapes: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> Path:
    """A PyTorch-layout safetensors file of seeded random float32 tensors of these keys and shapes."""
    if not path.exists():
        _child(f"""
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng({seed})
tensors = {{key: rng.standard_normal(shape, dtype=np.float32) * 0.05 for key, shape in {shapes!r}}}
save_file(tensors, {str(path)!r}, metadata={{"format": "pt"}})
""")
    return path


def torch_file(path: Path, hidden: int, layers: int = 4, seed: int = 0) -> Path:
    """The state dict of ``nn.LSTM(hidden, hidden, num_layers=layers, bidirectional=True)``."""
    shapes = []
    for k in range(layers):
        fan_in = hidden if k == 0 else 2 * hidden
        for suffix in ("", "_reverse"):
            shapes += [(f"weight_ih_l{k}{suffix}", (4 * hidden, fan_in)),
                       (f"weight_hh_l{k}{suffix}", (4 * hidden, hidden)),
                       (f"bias_ih_l{k}{suffix}", (4 * hidden,)), (f"bias_hh_l{k}{suffix}", (4 * hidden,))]
    return random_state_file(path, shapes, seed)


def many_file(path: Path, count: int, hidden: int = 16, seed: int = 0) -> Path:
    """A state dict of ``count`` separate one-layer LSTMs (four tensors each)."""
    shapes = [(f"lstm{k}.{name}", shape) for k in range(count)
              for name, shape in (("weight_ih_l0", (4 * hidden, hidden)), ("weight_hh_l0", (4 * hidden, hidden)),
                                  ("bias_ih_l0", (4 * hidden,)), ("bias_hh_l0", (4 * hidden,)))]
    return random_state_file(path, shapes, seed)


def keras_file(path: Path, hidden: int, layers: int = 4, seed: int = 0) -> Path:
    if not path.exists():
        _child(f"""
import numpy as np, keras
rng = np.random.default_rng({seed})
model = keras.Sequential([keras.Input((None, {hidden}))] + [
    keras.layers.Bidirectional(keras.layers.LSTM({hidden}, return_sequences=True,
                               kernel_initializer="zeros", recurrent_initializer="zeros")) for _ in range({layers})])
model.set_weights([rng.standard_normal(w.shape, dtype=np.float32) * 0.05 for w in model.get_weights()])
model.save({str(path)!r})
""")
    return path


def converted(src: Path, dest: Path, *extra: str) -> Path:
    if not dest.exists():
        subprocess.run(CLI + ["convert", str(src), str(dest), *extra], check=True, env=ENV,
                       stdout=subprocess.DEVNULL)
    return dest


def timed(args: list[str], out: Path | None) -> tuple[float, int]:
    """Wall time and peak resident memory of one process; ``out`` (its output) is removed first, untimed."""
    if out is not None:
        out.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    error = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{error}")
    return seconds, usage.ru_maxrss * 1024  # kilobytes on Linux


def imports(args: list[str]) -> list[str]:
    """Which of NumPy and the frameworks a command imports (from ``python -X importtime``)."""
    done = subprocess.run([args[0], "-X", "importtime", *args[1:]], env=ENV, capture_output=True, text=True)
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    return [m for m in ("numpy", "torch", "tensorflow", "keras", "onnx", "h5py") if m in loaded]


def pairs(name: str, command: list[str], out: Path | None, baseline: str, src: Path, work: Path, count: int,
          check_imports: bool = False, base_src: Path | None = None) -> dict:
    """One row: ``command`` (reading ``src``) against its baseline (reading ``base_src``, by default
    ``src``: the copy baseline of a ``.pt`` reads the safetensors file of the same tensors)."""
    base_src = base_src or src
    base_out = work / f"baseline{base_src.suffix}"
    base_args = BASELINES[baseline](base_src, base_out)
    ratios, times, base_times, peak, base_peak = [], [], [], 0, 0
    timed(command, out)  # once untimed, so that the first pair does not pay for a cold page cache
    for _ in range(count):
        b, b_peak = timed(base_args, base_out if baseline != "python" else None)
        t, t_peak = timed(command, out)
        ratios.append(t / b)
        times.append(t)
        base_times.append(b)
        peak, base_peak = max(peak, t_peak), max(base_peak, b_peak)
    for leftover in (out, base_out):
        if leftover is not None:
            leftover.unlink(missing_ok=True)
    size = src.stat().st_size
    row = {"baseline": baseline, "file_bytes": size, "pairs": count, "ratio": statistics.median(ratios),
           "ratio_min": min(ratios), "ratio_max": max(ratios), "seconds": statistics.median(times),
           "baseline_seconds": statistics.median(base_times), "peak_bytes": peak, "baseline_peak_bytes": base_peak,
           "memory_vs_file": peak / size, "baseline_memory_vs_file": base_peak / size}
    if check_imports:
        row["imports"] = imports(command)
    print(f"  {name}: {row['ratio']:.2f} x {baseline} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}), "
          f"{row['memory_vs_file']:.2f} x file", file=sys.stderr, flush=True)
    return row


def run(work: Path, quick: bool, count: int) -> dict:
    sizes = {"3 MB": 96} if quick else SIZES
    main = "3 MB" if quick else MAIN
    hidden = sizes[main]
    files = {label: torch_file(work / f"torch_{h}.safetensors", h) for label, h in sizes.items()}
    src = files[main]
    archive = converted(src, work / "archive.safetensors")
    pt = converted(src, work / "state.pt")
    keras_model = keras_file(work / f"lstm_{hidden}.keras", hidden)
    onnx_model = converted(archive, work / "lstm.onnx")
    npz = converted(archive, work / "lstm.npz")
    many = many_file(work / "many.safetensors", 200 if quick else 2000)
    out = work / "out"
    rows = {}
    # A Python process holding NumPy is about 35 MB before it reads anything: memory is reported above that
    # floor too, or no small file could be within a fraction of its size.
    floor = max(timed([PY, "-c", "import numpy, safetensors.numpy"], None)[1] for _ in range(3))

    def row(name, command, dest, baseline, source, check_imports=False, base_src=None):
        rows[name] = pairs(name, command, dest, baseline, source, work, count, check_imports, base_src)
        size = rows[name]["file_bytes"]
        rows[name]["memory_above_floor_vs_file"] = max(0, rows[name]["peak_bytes"] - floor) / size

    row("convert torch safetensors -> archive", CLI + ["convert", str(src), f"{out}.safetensors"],
        Path(f"{out}.safetensors"), "copy", src)
    row("convert archive -> torch safetensors",
        CLI + ["convert", str(archive), f"{out}.safetensors", "--to", "torch"], Path(f"{out}.safetensors"), "copy",
        archive)
    row("convert archive -> .pt", CLI + ["convert", str(archive), f"{out}.pt"], Path(f"{out}.pt"), "copy", archive)
    row("convert .pt -> archive", CLI + ["convert", str(pt), f"{out}.safetensors"], Path(f"{out}.safetensors"),
        "copy", pt, base_src=src)
    row("convert .keras -> .pt", CLI + ["convert", str(keras_model), f"{out}.pt"], Path(f"{out}.pt"), "script",
        keras_model)
    for label, path in (("archive", archive), ("torch safetensors", src), (".pt", pt), (".keras", keras_model),
                        (".onnx", onnx_model), (".npz", npz)):
        row(f"inspect {label}", CLI + ["inspect", str(path)], None, "python", path, check_imports=True)
    row("lstm-convert --help", CLI + ["--help"], None, "python", src, check_imports=True)
    row("inspect --stats torch safetensors", CLI + ["inspect", str(src), "--stats"], None, "copy", src)
    for label, path in files.items():
        row(f"scaling {label}: torch safetensors -> archive", CLI + ["convert", str(path), f"{out}.safetensors"],
            Path(f"{out}.safetensors"), "copy", path)
    row(f"{200 if quick else 2000} LSTMs (state dict of {800 if quick else 8000} tensors) -> archive",
        CLI + ["convert", str(many), f"{out}.safetensors"], Path(f"{out}.safetensors"), "copy", many)
    return {"quick": quick, "pairs": count, "main_file_bytes": src.stat().st_size, "floor_bytes": floor,
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "rows": rows,
            "targets": targets(rows, quick)}


def targets(rows: dict, quick: bool) -> dict[str, bool]:
    files = [r for n, r in rows.items() if n.startswith(("convert", "scaling")) and ".keras" not in n]
    largest = "scaling 1.48 GB: torch safetensors -> archive"
    fast = [r for n, r in rows.items() if n in ("lstm-convert --help", "inspect archive", "inspect torch safetensors")]
    many = next(r for n, r in rows.items() if "LSTMs" in n)
    result = {
        "conversions within 1.1 x copy at 369 MB": all(r["ratio"] <= 1.1 for n, r in rows.items()
                                                      if n.startswith("convert") and ".keras" not in n),
        "peak memory above the floor within 0.25 x file (safetensors, .pt, archive)": all(
            r["memory_above_floor_vs_file"] <= 0.25 for r in files),
        "2,000 LSTMs within 2 x copy": many["ratio"] <= 2,
        "--help and inspect of safetensors within 4 x python, without NumPy or frameworks": all(
            r["ratio"] <= 4 and not r["imports"] for r in fast),
        ".keras -> .pt at least 10 x faster than the script": rows["convert .keras -> .pt"]["ratio"] <= 0.1,
    }
    if largest in rows:
        result["within 1.2 x copy at 1.48 GB"] = rows[largest]["ratio"] <= 1.2
    return result


def table(result: dict) -> str:
    lines = [f"{'command':<58} {'base':>6} {'ratio':>6} {'min':>5} {'max':>5} {'secs':>7} {'x file':>7} {'floor+':>7} "
             f"{'base x':>7}"]
    for name, r in result["rows"].items():
        note = f"  imports {', '.join(r['imports'])}" if r.get("imports") else ""
        lines.append(f"{name:<58} {r['baseline']:>6} {r['ratio']:>6.2f} {r['ratio_min']:>5.2f} {r['ratio_max']:>5.2f} "
                     f"{r['seconds']:>7.3f} {r['memory_vs_file']:>7.2f} {r['memory_above_floor_vs_file']:>7.2f} "
                     f"{r['baseline_memory_vs_file']:>7.2f}{note}")
    lines.append(f"median of {result['pairs']} pairs; ratio = command / baseline, pair by pair; x file = peak "
                 f"resident memory / size of the file read; floor+ = the same above the {result['floor_bytes'] / 1e6:.0f} MB "
                 f"of a Python process that has imported NumPy; base x = the baseline's x file")
    lines += [f"target {name}: {'met' if ok else 'MISSED'}" for name, ok in result["targets"].items()]
    return "\n".join(lines)


def to_readme(readme: Path, result: dict, command: str) -> None:
    text = readme.read_text(encoding="utf-8")
    block = (f"<!-- bench -->\n```\n$ {command}\n{table(result)}\n```\n<!-- /bench -->")
    new, count = re.subn(r"<!-- bench -->.*?<!-- /bench -->", lambda _: block, text, flags=re.S)
    if count != 1:
        raise SystemExit(f"{readme}: expected one <!-- bench --> ... <!-- /bench --> block")
    readme.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small files and two pairs (what CI runs)")
    parser.add_argument("--pairs", type=int, help="pairs per row (default 5; 2 with --quick)")
    parser.add_argument("--work", help="where to keep the generated files (default: a temporary directory)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--readme", help="write the table into this README's <!-- bench --> block")
    args = parser.parse_args(argv)
    count = args.pairs or (2 if args.quick else 5)
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        result = run(Path(args.work), args.quick, count)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(Path(tmp), args.quick, count)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.readme:
        shown = " ".join(["python scripts/bench.py", *(["--quick"] if args.quick else []),
                          *([f"--pairs {args.pairs}"] if args.pairs else [])])
        to_readme(Path(args.readme), result, shown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
