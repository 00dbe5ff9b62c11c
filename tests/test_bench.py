"""The benchmark keeps working: `--quick`, as CI runs it, its table, JSON and README block checked.
No timing is asserted (the figures are the README's, from a full run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def test_bench_quick(tmp_path):
    out, readme = tmp_path / "bench.json", tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- bench -->\nold\n<!-- /bench -->\n\nafter\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--pairs", "1", "--work", str(tmp_path / "work"),
                           "--json", str(out), "--readme", str(readme)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {"convert torch safetensors -> archive", "convert archive -> torch safetensors", "convert archive -> .pt",
            "convert .pt -> archive", "convert .keras -> .pt", "inspect archive", "inspect torch safetensors",
            "inspect .pt", "inspect .keras", "inspect .onnx", "inspect .npz", "lstm-convert --help"} <= set(rows)
    assert any(name.startswith("scaling") for name in rows) and any("LSTMs" in name for name in rows)
    for name, row in rows.items():
        assert row["pairs"] == 1 and row["ratio"] > 0 and row["peak_bytes"] > 0, name
        assert row["ratio_min"] <= row["ratio"] <= row["ratio_max"], name
    assert rows["convert .keras -> .pt"]["baseline"] == "script"
    assert rows["inspect archive"]["baseline"] == "python" and "imports" in rows["inspect archive"]
    assert "torch" not in rows["lstm-convert --help"]["imports"]
    assert len(result["targets"]) == 5
    assert "target 2,000 LSTMs within 2 x copy" in done.stdout
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and text.endswith("<!-- /bench -->\n\nafter\n")
    assert "$ python scripts/bench.py --quick --pairs 1" in text and "convert .pt -> archive" in text
