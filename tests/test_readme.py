"""The README stays true: its API examples run, its gate table is gates.py's, its commands are CI's."""

from __future__ import annotations

from pathlib import Path

from lstm_convert.gates import gate_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    """The README's fenced blocks of ``language`` ("" for plain fences), fences paired in order."""
    blocks, current, kind = [], None, None
    for line in README.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, kind = [], line[3:].strip()
            else:
                if kind == language:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_api_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as running python in that folder: the generated module imports
    blocks = _blocks("python")
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "lstm.safetensors").exists()


def test_gate_tables_match_gates_module():
    for kind in ("lstm", "gru", "rnn"):
        assert gate_table(kind) in README, kind


def test_format_table_is_the_registry():
    from lstm_convert import formats

    assert formats.table() in README


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    (commands,) = [b for b in _blocks("") if "pip install" in b]
    lines = [line for line in commands.splitlines() if line.strip()]
    assert len(lines) == 2
    assert "lstm-convert demo" in lines[0]
    assert lines[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
