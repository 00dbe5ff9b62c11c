"""Fuzzing every reader: valid files, truncated, with bytes flipped or header bytes edited, must give either a
model or the library's own error, never another exception, a hang or a crash.

The number of examples per reader is bounded for CI; LSTM_CONVERT_FUZZ_EXAMPLES=2000 runs longer.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_torch_lstm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstm_convert as lc
from lstm_convert import files, formats
from lstm_convert.describe import describe

EXAMPLES = int(os.environ.get("LSTM_CONVERT_FUZZ_EXAMPLES", "25"))
VALID: dict[str, tuple[bytes, str, str | None]] = {}
COMPANIONS: dict[str, dict[str, bytes]] = {}  # the files a sample is read with, by their name's tail


CASES = (*formats.NAMES, "torch-safetensors")  # every registered format's sample, and a PyTorch .safetensors


@pytest.fixture(scope="module", autouse=True)
def valid_files(tmp_path_factory):
    """One small valid file per registered format (its test file's sample), as bytes."""
    work = tmp_path_factory.mktemp("valid")
    for name in formats.NAMES:
        path = importlib.import_module(f"test_{name}").sample(work, np.random.default_rng(3))
        VALID[name] = (path.read_bytes(), path.suffix, name)
        stem = path.with_suffix("").name
        COMPANIONS[name] = {c.name[len(stem):]: c.read_bytes() for c in formats.get(name).companions(path)}
    module = random_torch_lstm(np.random.default_rng(3), input_size=3, hidden_size=2)
    files.write(lc.Model((lc.from_torch(module),)), work / "t.safetensors", "torch")
    VALID["torch-safetensors"] = ((work / "t.safetensors").read_bytes(), ".safetensors", "torch")
    yield


def _mutations():
    return st.one_of(
        st.tuples(st.just("truncate"), st.floats(0, 1)),
        st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
        st.tuples(st.just("header"), st.integers(0, 511), st.integers(0, 255)),
        st.tuples(st.just("splice"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    )


def _mutate(data: bytes, mutation: tuple) -> bytes:
    kind = mutation[0]
    if kind == "truncate":
        return data[:int(len(data) * mutation[1])]
    if kind == "flip":
        buf = bytearray(data)
        buf[min(int(len(buf) * mutation[1]), len(buf) - 1)] ^= 1 << mutation[2]
        return bytes(buf)
    if kind == "header":
        buf = bytearray(data)
        buf[mutation[1] % len(buf)] = mutation[2]
        return bytes(buf)
    at = int(len(data) * mutation[1])
    return data[:at] + mutation[2] + data[at:]


@pytest.mark.parametrize("name", CASES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=not os.environ.get("LSTM_CONVERT_FUZZ_EXAMPLES"))
@given(mutation=_mutations())
def test_readers_only_raise_their_own_errors(name, mutation):
    data, suffix, fmt = VALID[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(_mutate(data, mutation))
        _companions(name, path)
        for inventory in (False, True):  # converting it, and listing everything for inspect
            try:
                model = files.read(path, fmt, inventory=inventory)
                describe(model, fmt, str(path))
            except lc.LSTMConvertError:
                pass


def _companions(name: str, path: Path) -> None:
    for tail, content in COMPANIONS.get(name, {}).items():
        path.with_name(path.with_suffix("").name + tail).write_bytes(content)


@pytest.mark.parametrize("name", CASES)
def test_empty_truncated_and_wrong_magic_give_one_line(tmp_path, name):
    import subprocess
    import sys

    data, suffix, fmt = VALID[name]
    for label, content in (("empty", b""), ("truncated", data[:len(data) // 2]), ("magic", b"\x00" * 8 + data[8:])):
        path = tmp_path / f"{label}{suffix}"
        path.write_bytes(content)
        _companions(name, path)
        with pytest.raises(lc.LSTMConvertError, match=rf"{label}{suffix}"):
            files.read(path, fmt)
        done = subprocess.run([sys.executable, "-m", "lstm_convert", "inspect", str(path), "--from", fmt],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("LSTM_CONVERT_FUZZ_EXAMPLES"))
@given(mutation=_mutations())
def test_torchscript_reader_only_raises_its_own_errors(mutation):
    """The TorchScript data.pkl, mutated, read by the restricted unpickler inside an intact zip."""
    import io
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "ts.pt"
        module = random_torch_lstm(np.random.default_rng(5), input_size=3, hidden_size=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.script(module), source)
        buffer = io.BytesIO()
        with zipfile.ZipFile(source) as original, zipfile.ZipFile(buffer, "w") as out:
            for info in original.infolist():
                data = original.read(info)
                out.writestr(info.filename, _mutate(data, mutation) if info.filename.endswith("data.pkl") else data)
        path = Path(tmp) / "fuzz.pt"
        path.write_bytes(buffer.getvalue())
        try:
            files.read(path)
        except lc.LSTMConvertError:
            pass
