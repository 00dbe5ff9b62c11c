"""Progress on stderr only when it is a terminal (a real pseudo-terminal here), never in a pipe or in
--json output; --quiet silences it and the notes; --verbose adds timings."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios

import pytest

from lstm_convert.cli import main


def _on_terminal(*argv: str) -> tuple[int, str, str]:
    """Run the command line with stderr on a pseudo-terminal of 100 columns: status, stdout, stderr."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = dict(os.environ, LSTM_CONVERT_PROGRESS_DELAY="0")  # drawn at once, however quick the work
    proc = subprocess.Popen([sys.executable, "-m", "lstm_convert", *argv], stdout=subprocess.PIPE, stderr=terminal,
                            env=env)
    os.close(terminal)
    err = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        err += chunk
    out = proc.stdout.read().decode()
    proc.stdout.close()
    os.close(controller)
    return proc.wait(), out, err.decode(errors="replace")


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seed")
    assert main(["demo", "--out", str(folder)]) == 0
    return folder


def test_a_long_conversion_shows_progress_on_a_terminal_only(seed, tmp_path):
    src = str(seed / "seed_lstm.safetensors")
    status, out, err = _on_terminal("convert", src, str(tmp_path / "a.keras"))
    assert status == 0 and out == f"wrote {tmp_path / 'a.keras'} (keras)\n"
    assert f"writing {tmp_path / 'a.keras'} [2/3" in err, err  # the phase, with the steps done
    assert "\r" in err  # redrawn in place
    done = subprocess.run([sys.executable, "-m", "lstm_convert", "convert", src, str(tmp_path / "b.keras")],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, LSTM_CONVERT_PROGRESS_DELAY="0"))
    assert done.returncode == 0 and done.stderr == "", done.stderr  # a pipe: no progress
    for flag in ("--quiet", "--json"):
        status, out, err = _on_terminal("convert", src, str(tmp_path / f"c{flag}.keras"), flag)
        assert status == 0 and err == "", (flag, err)
    assert out.startswith("{")


def test_verify_shows_its_phases_on_a_terminal(seed):
    status, out, err = _on_terminal("verify", str(seed / "seed.keras"), str(seed / "seed.keras"))
    assert status == 0 and out.endswith("OK: the model outputs and every layer output agree within tolerance\n")
    assert re.search(r"running (A|B), a Keras 3 model", err), err


def test_quiet_silences_notes_and_verbose_adds_timings(seed, tmp_path, capsys):
    src = str(seed / "seed.keras")
    assert main(["convert", src, str(tmp_path / "a.pt")]) == 0
    out = capsys.readouterr().out
    assert "note: " in out  # return_sequences=False is not kept by a state dict
    assert main(["convert", src, str(tmp_path / "b.pt"), "-q"]) == 0
    out, err = capsys.readouterr()
    assert out == f"wrote {tmp_path / 'b.pt'} (torch)\n" and err == ""
    assert main(["convert", src, str(tmp_path / "c.pt"), "--verbose"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in err] == [
        f"reading {src}", "checking the conversion", f"writing {tmp_path / 'c.pt'}", "total"], err
    assert all(re.fullmatch(r"lstm-convert: .*: \d+\.\d\d s", line) for line in err), err
    assert main(["convert", src, str(tmp_path / "d.pt"), "-q", "-v"]) == 2  # one or the other
    assert "argument -v/--verbose: not allowed with argument -q/--quiet" in capsys.readouterr().err


def test_the_bar_follows_the_bytes_written(tmp_path, rng):
    """The bar, drawn into a buffer without delay: its total is the bytes to write, and it reaches it."""
    import io

    import lstm_convert as lc
    from conftest import random_torch_lstm
    from lstm_convert import _progress, files

    src = lc.save(lc.from_torch(random_torch_lstm(rng, input_size=300, hidden_size=400)), tmp_path / "a.safetensors")
    buffer = io.StringIO()
    with _progress.reporting(_progress.Bar(delay=0, stream=buffer, tick=0.001)):
        files.convert(src, tmp_path / "a.pt")
    text = buffer.getvalue()
    assert f"writing {tmp_path / 'a.pt'}" in text
    sizes = re.findall(r"writing a\.pt: +\d+%\|[^|]*\| ([\d.]+[kM]?)/([\d.]+[kM]?)", text)
    assert sizes, text[-500:]
