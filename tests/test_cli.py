"""The command line: the demo's figures, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lstm_convert.cli import main


README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _readme_output(command: str) -> str:
    block = README.split(f"$ {command}\n", 1)[1]
    return block.split("\n$ ", 1)[0].split("```", 1)[0]


def test_demo_reports_the_seed_counts_and_agreement(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", "demo"]) == 0
    out = capsys.readouterr().out
    assert "Parameters (Keras count_params): lstm 80, dense 15, total 95" in out
    assert "LSTM(7, 2, batch_first=True), 88 parameters" in out
    assert "  cell    c [:, 2H:3H]      g [2H:3H]          (2, 7)  (2, 2)  (2,)  (2,)  20" in out
    assert "archive reloaded bit for bit: True" in out
    assert out.rstrip().endswith("OK: within 1e-5")
    assert (tmp_path / "demo" / "seed_lstm.safetensors").exists()
    # The README shows the real output of the commands on the demo's seed model.
    for command in ("lstm-convert inspect demo/seed.keras", "lstm-convert convert demo/seed.keras demo/seed.pt",
                    "lstm-convert inspect demo/seed.pt"):
        assert main(command.split()[1:]) == 0
        assert capsys.readouterr().out.rstrip("\n") == _readme_output(command).rstrip("\n"), command


def test_errors_are_one_line_with_exit_status_1(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.modules['keras'] = None\nfrom lstm_convert.cli import main\n"
         f"raise SystemExit(main(['demo', '--out', {str(tmp_path)!r}]))"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == ("lstm-convert: error: keras is needed for this and is not installed: "
                           "pip install 'lstm-convert[keras]'\n")


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    capsys.readouterr()
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lstm-convert ") and "lstm-convert: error: argument COMMAND: invalid choice" in err
