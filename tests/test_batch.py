"""Many files at once: every convertible file of a folder, in worker processes, each atomically, failures
reported per file and never stopping the others, a summary, and exit status 1 when any failed."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lstm_convert as lc
from conftest import random_torch_lstm
from lstm_convert import files
from lstm_convert.cli import main


@pytest.fixture
def folder(tmp_path, rng):
    """Files of four formats (one in a subfolder), a whole pickled module, a damaged file and a text file."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    shutil.copyfile(tmp_path / "demo" / "seed.keras", src / "seed.keras")
    module = random_torch_lstm(rng, input_size=5, hidden_size=4)
    torch.save(module.state_dict(), src / "state.pt")
    torch.save(module, src / "module.pt")
    lc.save(lc.from_torch(random_torch_lstm(rng, input_size=3, hidden_size=6)), src / "sub" / "archive.safetensors")
    (src / "damaged.onnx").write_bytes(b"\x08\x07\x12\x00garbage")
    (src / "notes.txt").write_text("not a model")
    return src


def test_a_folder_converts_file_by_file_and_failures_do_not_stop_the_rest(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(folder), "--out-dir", str(out), "--to", "archive", "--recursive", "--jobs", "2"]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["file", "time", "result"]
    rows = {line.split()[0]: line for line in printed[1:-1]}
    assert sorted(rows) == sorted(str(folder / n) for n in ("damaged.onnx", "module.pt", "seed.keras", "state.pt",
                                                            "sub/archive.safetensors"))
    assert f"wrote {out / 'seed.safetensors'} (exact)" in rows[str(folder / "seed.keras")]
    assert "error: " in rows[str(folder / "damaged.onnx")]
    assert "holds a whole pickled model" in rows[str(folder / "module.pt")]
    assert printed[-1] == "5 files: 3 converted, 2 failed"
    # Each output is the source's canonical form, bit for bit; nothing else (no temporary file) is left.
    for name, written in (("seed.keras", "seed.safetensors"), ("state.pt", "state.safetensors"),
                          ("sub/archive.safetensors", "sub/archive.safetensors")):
        assert files.read(out / written) == files.read(folder / name), name
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "seed.safetensors", "state.safetensors", "sub", "sub/archive.safetensors"]


def test_without_recursive_a_folder_is_read_one_level_and_json_reports_each_file(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(folder / "seed.keras"), str(folder / "state.pt"), "--out-dir", str(out),
                 "--to", "onnx", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["ok"] is True and obj["converted"] == 2 and obj["failed"] == 0
    assert [f["destination"] for f in obj["files"]] == [str(out / "seed.onnx"), str(out / "state.onnx")]
    assert main(["convert", str(folder), "--out-dir", str(tmp_path / "flat"), "--to", "torch", "--json"]) == 1
    obj = json.loads(capsys.readouterr().out)
    from test_json import _valid

    _valid("convert_many", obj)
    assert [f["source"] for f in obj["files"]] == [str(folder / n) for n in ("damaged.onnx", "module.pt",
                                                                            "seed.keras", "state.pt")]
    assert [f["ok"] for f in obj["files"]] == [False, False, True, True]
    assert obj["files"][2]["verdict"] == "weights" and obj["files"][2]["notes"]  # return_sequences=False
    # Run again: each destination exists, and is refused without --overwrite, file by file.
    assert main(["convert", str(folder / "state.pt"), "--out-dir", str(tmp_path / "flat"), "--to", "torch",
                 "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["files"][0]["error"]
    assert error == {"type": "FormatError", "message": f"{tmp_path / 'flat' / 'state.pt'}: already exists; "
                                                       "pass --overwrite to replace it"}


def test_two_sources_for_one_destination_are_refused_by_name(folder, tmp_path, capsys):
    shutil.copyfile(folder / "state.pt", tmp_path / "state.pth")
    assert main(["convert", str(folder / "state.pt"), str(tmp_path / "state.pth"), "--out-dir", str(tmp_path / "o"),
                 "--to", "archive", "--jobs", "1"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].endswith(f"error: {tmp_path / 'state.pth'}: would be written to "
                             f"{tmp_path / 'o' / 'state.safetensors'}, as {folder / 'state.pt'} is")
    assert files.read(tmp_path / "o" / "state.safetensors") == files.read(folder / "state.pt")


@pytest.mark.parametrize("argv, message", [
    (["--out-dir", "o"], "--out-dir needs --to FORMAT"),
    (["--out-dir", "o", "--to", "torch", "--module", "m.py"], "--module is for one file, not with --out-dir"),
    (["--recursive"], "--recursive is for several files: give --out-dir DIR"),
    ([], "give SRC and DST, or several sources with --out-dir DIR --to FORMAT"),
])
def test_usage(folder, capsys, argv, message):
    assert main(["convert", str(folder / "state.pt"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lstm-convert convert [options] SRC DST") and err.endswith(f"error: {message}\n")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupted_batch_stops_its_workers_and_leaves_no_partial_file(tmp_path, rng, sig):
    """Ctrl-C reaches the whole process group; SIGTERM only the parent. Either way the workers stop, no
    temporary file stays, and every file that is there is whole."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "src"
    src.mkdir()
    big = lc.from_torch(random_torch_lstm(rng, input_size=768, hidden_size=768, num_layers=2))
    for i in range(6):
        lc.save(big, src / f"m{i}.safetensors")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "lstm_convert", "convert", str(src), "--out-dir", str(out),
                             "--to", "keras", "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(".lstm-convert-" in p.name for p in out.glob(".*")):
        time.sleep(0.02)  # until a worker is writing
    number = getattr(signal, sig)
    if sig == "SIGINT":
        os.killpg(proc.pid, number)
    else:
        proc.send_signal(number)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # a hang: ended here, so that its pipes do not outlive the test
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the interrupted batch did not end within 120 s")
    assert proc.returncode == 128 + number, err
    assert err.endswith("lstm-convert: interrupted; no partial file is left\n"), err
    left = sorted(p.name for p in out.iterdir())
    assert all(not name.startswith(".") for name in left), left
    assert len(left) < 6, left  # the workers stopped, not went on to the files left to do
    for name in left:
        assert files.read(out / name) == files.read(src / name.replace(".keras", ".safetensors")), name


def test_a_worker_stuck_past_sigterm_is_killed_and_its_temporary_file_removed(tmp_path):
    """A worker on which SIGTERM has no effect (stuck where no handler runs) is killed after the grace
    period, and the parent removes the temporary file it left; others' temporary files stay."""
    import multiprocessing
    import os
    import signal
    import time

    from lstm_convert import batch

    destination = tmp_path / "m.keras"
    ready = multiprocessing.get_context("fork").Event()

    def stuck() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        (tmp_path / f".m.keras.lstm-convert-{os.getpid()}-{'ab' * 6}.keras").write_bytes(b"half")
        ready.set()
        time.sleep(120)

    worker = multiprocessing.get_context("fork").Process(target=stuck)
    worker.start()
    assert ready.wait(30)
    other = tmp_path / f".m.keras.lstm-convert-{os.getpid()}-{'cd' * 6}.keras"
    other.write_bytes(b"another writer's")
    start = time.monotonic()
    batch._stop([worker], [destination], grace=0.5)
    assert time.monotonic() - start < 10
    assert not worker.is_alive() and worker.exitcode == -signal.SIGKILL
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]


def test_an_interrupt_the_code_swallows_still_ends_the_command(tmp_path):
    """Code that swallows KeyboardInterrupt (as Keras' bare ``except:`` and an import's lock callback do)
    cannot keep an interrupted command running: the last resort ends it with 130, the temporary file
    removed, the destination never written."""
    import signal
    import subprocess
    import sys
    import time

    script = f"""
import signal, time
from pathlib import Path
from lstm_convert import _atomic, cli

cli._LAST.append(cli._Output(json=False))
cli._LAST_RESORT = 1.0
signal.signal(signal.SIGINT, cli._interrupt)

def write(tmp):
    tmp.write_bytes(b"half")
    while True:
        try:
            time.sleep(0.01)
        except BaseException:
            pass

_atomic.atomic_write(Path({str(tmp_path / "out.bin")!r}), write)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(".lstm-convert-" in p.name for p in tmp_path.iterdir()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 130, err
    assert err == "lstm-convert: interrupted; no partial file is left\n", err
    assert list(tmp_path.iterdir()) == []
