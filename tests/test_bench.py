"""The benchmark keeps working: run at a tiny size, its table and JSON checked. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def test_bench_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(BENCH), "--hidden", "16", "--layers", "1", "--repeat", "1",
                           "--work", str(tmp_path / "work"), "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {
        "copy baseline (safetensors load_file + save_file)", "convert torch safetensors -> archive",
        "convert archive -> torch safetensors", "convert archive -> .pt", "inspect archive",
        "typical script: .keras -> .pt via TensorFlow", "convert .keras -> torch safetensors",
        "lstm-convert --help"}
    assert all(row["seconds"] > 0 and row["peak_bytes"] > 0 for row in result["rows"].values())
    assert len(result["targets"]) == 5
    assert "target inspect under 0.3 s" in done.stdout
    # the conversions it timed produced the same weights
    from safetensors.numpy import load_file
    work = tmp_path / "work"
    original, back = load_file(work / "lstm_torch.safetensors"), load_file(work / "back_torch.safetensors")
    assert original.keys() == back.keys() and all((original[k] == back[k]).all() for k in original)
