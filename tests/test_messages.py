"""What the command line says when a file is not what it should be, word for word: each message names the
file, says what it is, and what to do; none relays a third party's advice to load a file unsafely."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from lstm_convert.cli import main


def _error(capsys, argv: list[str]) -> str:
    """The one line a failing command prints (exit status 1, nothing on stdout)."""
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.endswith("\n") and err.count("\n") == 1, err
    return err.rstrip("\n")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTM(3, 2)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy pickle"])
def test_a_whole_pickled_module_says_how_to_save_its_state_dict(tmp_path, capsys, legacy):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.LSTM(3, 2), path, _use_new_zipfile_serialization=not legacy)
    assert _error(capsys, ["inspect", str(path)]) == (
        f"lstm-convert: error: {path}: holds a whole pickled model (torch.nn.modules.rnn.LSTM), not a state dict; "
        "lstm_convert reads state dicts, since loading a pickled model runs code from the file; if the file comes "
        "from a source you trust, save its state dict in Python and convert that: "
        f"model = torch.load('{path}', weights_only=False); "
        f"torch.save(model.state_dict(), '{tmp_path / 'model_state.pt'}')")
    # The two statements do what they say: the saved state dict converts.
    model = torch.load(path, weights_only=False)
    torch.save(model.state_dict(), tmp_path / "model_state.pt")
    assert main(["convert", str(tmp_path / "model_state.pt"), str(tmp_path / "a.safetensors")]) == 0


def test_a_users_own_module_class_is_named(tmp_path, capsys):
    path = tmp_path / "net.pt"
    torch.save(Net(), path)
    line = _error(capsys, ["convert", str(path), str(tmp_path / "x.safetensors")])
    assert line.startswith(f"lstm-convert: error: {path}: holds a whole pickled model ({__name__}.Net), not a "
                           "state dict;"), line
    assert "weights_only=True" not in line and "\\x1b" not in line
    assert not (tmp_path / "x.safetensors").exists()


def test_a_pickle_of_other_objects_is_refused_without_pytorchs_advice(tmp_path, capsys):
    import collections

    path = tmp_path / "odd.pt"
    torch.save({"counts": collections.Counter("abc")}, path)
    assert _error(capsys, ["inspect", str(path)]) == f"lstm-convert: error: {path}: counts: expected a tensor, got Counter"
    path = tmp_path / "ops.pt"
    torch.save({"op": torch.nn.functional.relu}, path)
    line = _error(capsys, ["inspect", str(path)])
    assert line == (f"lstm-convert: error: {path}: its pickle holds torch.nn.functional.relu, which is not tensor "
                    "data; lstm_convert loads only tensors and dicts of them, since anything else could run code "
                    "from the file")


def test_a_file_named_as_another_format_says_what_it_is(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    keras_as_safetensors = tmp_path / "weights.safetensors"
    shutil.copyfile(tmp_path / "seed.keras", keras_as_safetensors)
    assert _error(capsys, ["inspect", str(keras_as_safetensors)]) == (
        f"lstm-convert: error: {keras_as_safetensors}: this is a Keras 3 model, not a .safetensors file; "
        "pass --from keras or rename it")
    assert main(["convert", str(tmp_path / "seed.keras"), str(tmp_path / "seed.onnx")]) == 0
    onnx_as_pt = tmp_path / "model.pt"
    shutil.copyfile(tmp_path / "seed.onnx", onnx_as_pt)
    capsys.readouterr()
    assert _error(capsys, ["convert", str(onnx_as_pt), str(tmp_path / "x.safetensors")]) == (
        f"lstm-convert: error: {onnx_as_pt}: this is an ONNX model, not a .pt file; pass --from onnx or rename it")
    assert main(["inspect", str(onnx_as_pt), "--from", "onnx"]) == 0


def test_directories_where_files_are_expected(tmp_path, capsys):
    folder = tmp_path / "x.keras"
    folder.mkdir()
    assert _error(capsys, ["inspect", str(folder)]) == (
        f"lstm-convert: error: {folder}: is a directory, not a file; give the file in it")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    capsys.readouterr()
    src = str(tmp_path / "demo" / "seed.keras")
    for extra in ([], ["--overwrite"]):
        assert _error(capsys, ["convert", src, str(folder), *extra]) == (
            f"lstm-convert: error: {folder}: is a directory; give the name of the file to write")
    assert list(folder.iterdir()) == []


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstm_convert", *argv], capture_output=True, text=True, timeout=120)


def test_debug_is_taken_anywhere_and_usage_errors_show_the_subcommands_usage(tmp_path):
    missing = str(tmp_path / "missing.pt")
    for argv in (["--debug", "inspect", missing], ["inspect", missing, "--debug"], ["inspect", "--debug", missing]):
        done = _run(*argv)
        assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr, argv
        assert done.stderr.rstrip().endswith(f"FormatError: {missing}: no such file"), argv
    done = _run("inspect", missing)
    assert done.returncode == 1 and done.stderr == f"lstm-convert: error: {missing}: no such file\n"
    done = _run("inspect", missing, "--bogus")
    assert done.returncode == 2 and done.stderr.startswith("usage: lstm-convert inspect ")
    assert done.stderr.endswith("lstm-convert inspect: error: unrecognized arguments: --bogus\n")
    done = _run("convert", missing)
    assert done.returncode == 2 and done.stderr.startswith("usage: lstm-convert convert ")
    assert done.stderr.endswith("lstm-convert convert: error: give SRC and DST, or several sources with "
                                "--out-dir DIR --to FORMAT\n")


@pytest.mark.parametrize("command, positionals", [("inspect", ["file"]), ("convert", ["SRC"]),
                                                  ("verify", ["a", "b"])])
def test_positional_arguments_have_help(command, positionals):
    done = _run(command, "--help")
    assert done.returncode == 0
    section = done.stdout.split("positional arguments:\n", 1)[1].split("\n\n", 1)[0]
    lines = [line.split() for line in section.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert [words[0] for words in lines] == positionals
    assert all(len(words) > 2 for words in lines), section
