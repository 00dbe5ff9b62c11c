"""The canonical safetensors archive: bit-exact, self-describing, strict on read."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import random_keras_lstm, random_torch_lstm
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import lstm_convert as lc


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_round_trip_bit_identical(tmp_path, rng, dtype):
    weights = lc.from_torch(random_torch_lstm(rng, dtype=dtype, num_layers=2, bidirectional=True))
    path = lc.save(weights, tmp_path / "w.safetensors")
    loaded = lc.load(path)
    assert loaded == weights and loaded.dtype == dtype
    assert loaded.spec() == weights.spec()  # configuration -> metadata -> configuration


def test_keras_source_and_no_bias(tmp_path, rng):
    weights = lc.from_keras(random_keras_lstm(rng, use_bias=False, return_sequences=True))
    loaded = lc.load(lc.save(weights, tmp_path / "k.safetensors"))
    assert loaded == weights
    assert loaded.return_sequences is True
    assert loaded.source["framework"] == "keras"


def test_one_tensor_per_gate_and_role(tmp_path, rng):
    weights = lc.from_torch(random_torch_lstm(rng, hidden_size=3), name="enc")
    path = lc.save(weights, tmp_path / "a.safetensors")
    with safe_open(path, "np") as f:
        names, meta = set(f.keys()), f.metadata()
    assert names == {f"enc.l0.forward.{g}.{r}" for g in ("input", "forget", "cell", "output")
                     for r in ("W_x", "W_h", "b_x", "b_h")}
    assert meta["format"] == "lstm_convert" and meta["format_version"] == "3"
    assert meta["source"] == "torch" and meta["content"] == "layer"
    (spec,) = json.loads(meta["layers"])
    assert spec["hidden_size"] == 3 and spec["config"]["torch"] == {"batch_first": False, "dropout": 0.0, "prefix": ""}
    tensors = load_file(path)
    np.testing.assert_array_equal(tensors["enc.l0.forward.forget.W_h"], weights.gate("forget").W_h)


def test_strict_reading(tmp_path, rng):
    weights = lc.from_torch(random_torch_lstm(rng))
    tensors = load_file(lc.save(weights, tmp_path / "good.safetensors"))
    with safe_open(tmp_path / "good.safetensors", "np") as f:
        meta = f.metadata()

    def bad(name, tensors, meta):
        path = tmp_path / name
        save_file(tensors, path, metadata=meta)
        return path

    with pytest.raises(lc.FormatError, match=r"plain.safetensors: not an lstm_convert archive"):
        lc.load(bad("plain.safetensors", tensors, {}))
    missing = {k: v for k, v in tensors.items() if k != "lstm.l0.forward.cell.b_h"}
    with pytest.raises(lc.FormatError, match=r"tensor lstm.l0.forward.cell.b_h is missing"):
        lc.load(bad("missing.safetensors", missing, meta))
    extra = dict(tensors, stray=np.zeros(2, "float32"))
    with pytest.raises(lc.FormatError, match=r"tensors not described by the metadata: \['stray'\]"):
        lc.load(bad("extra.safetensors", extra, meta))
    wrong = dict(tensors, **{"lstm.l0.forward.cell.b_h": np.zeros(3, "float64")})
    with pytest.raises(lc.FormatError, match=r"cell.b_h has dtype float64, expected float32"):
        lc.load(bad("dtype.safetensors", wrong, meta))
    shape = dict(tensors, **{"lstm.l0.forward.cell.W_h": np.zeros((3, 4), "float32")})
    with pytest.raises(lc.FormatError, match=r"cell.W_h: expected shape \(3, 3\), got \(3, 4\)"):
        lc.load(bad("shape.safetensors", shape, meta))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(lc.FormatError, match=r"junk.safetensors: not a safetensors file \(header length \d+ exceeds the file.s 22 bytes\)"):
        lc.load(tmp_path / "junk.safetensors")
    with pytest.raises(lc.FormatError, match=r"absent.safetensors: no such file"):
        lc.load(tmp_path / "absent.safetensors")


def test_failed_save_leaves_nothing(tmp_path, rng):
    weights = lc.from_torch(random_torch_lstm(rng))
    target = tmp_path / "keep.safetensors"
    target.write_bytes(b"precious")
    with pytest.raises(lc.FormatError, match=r"no-such-dir/w.safetensors: cannot be written: the folder .*no-such-dir "
                                             r"does not exist$"):
        lc.save(weights, tmp_path / "no-such-dir" / "w.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]
    assert target.read_bytes() == b"precious"


def test_header_only_reading_holds_no_values_and_imports_neither_numpy_nor_a_framework(tmp_path, rng):
    from lstm_convert import files
    from lstm_convert._lazy import Placeholder

    weights = lc.from_torch(random_torch_lstm(rng, num_layers=2))
    path = lc.save(lc.Model((weights,)), tmp_path / "m.safetensors")
    torch_path = files.convert(path, tmp_path / "t.safetensors", dst_format="torch").path
    for source in (path, torch_path):
        header = files.read(source, header_only=True)
        full = files.read(source)
        for (name, a), (_, b) in zip(header.tensors(), full.tensors(), strict=True):
            assert isinstance(a, Placeholder) and a.shape == b.shape and a.dtype == b.dtype, name
    import subprocess
    import sys
    for argv in (["inspect", str(path)], ["inspect", str(torch_path)], ["--help"]):
        code = ("import sys\nfor m in ('numpy', 'torch', 'keras', 'tensorflow', 'onnx', 'h5py'): sys.modules[m] = None\n"
                "from lstm_convert.cli import main\n"
                f"raise SystemExit(main({argv!r}))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (argv, done.stderr)
        assert ("total" if argv[0] == "inspect" else "usage") in done.stdout
    assert "only the header was read; --scan reads the values" in subprocess.run(
        [sys.executable, "-m", "lstm_convert", "inspect", str(torch_path)], capture_output=True, text=True).stdout


def test_malformed_headers_are_refused_before_reading(tmp_path, rng):
    path = lc.save(lc.from_torch(random_torch_lstm(rng)), tmp_path / "good.safetensors")
    data = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(data[:-4])
    with pytest.raises(lc.FormatError, match=r"short.safetensors: tensor .* claims \d+ x 4 bytes at"):
        lc.load(tmp_path / "short.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(lc.FormatError, match=r"empty.safetensors: not a safetensors file \(shorter than"):
        lc.load(tmp_path / "empty.safetensors")


def test_integrity_digests(tmp_path, rng):
    from lstm_convert.cli import main

    weights = lc.from_torch(random_torch_lstm(rng))
    path = lc.save(weights, tmp_path / "a.safetensors")
    with safe_open(path, "np") as f:
        digests = json.loads(f.metadata()["sha256"])
    import hashlib
    assert digests["lstm.l0.forward.cell.W_h"] == hashlib.sha256(
        np.ascontiguousarray(weights.gate("cell").W_h).tobytes()).hexdigest()
    assert main(["verify", str(path)]) == 0
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(lc.FormatError, match=r"flipped.safetensors: tensor lstm.l0.forward.output.b_h does not "
                                             r"match its SHA-256: the file was changed or damaged"):
        lc.load(tmp_path / "flipped.safetensors")
    assert main(["verify", str(tmp_path / "flipped.safetensors")]) == 1
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["convert", str(tmp_path / "flipped.safetensors"), str(tmp_path / "out.pt")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written from a damaged archive


def test_output_is_deterministic(tmp_path, rng):
    from lstm_convert import files

    weights = lc.Model((lc.from_torch(random_torch_lstm(rng, num_layers=2)),))
    lc.save(weights, tmp_path / "src.safetensors")
    import time
    for name in ("a.safetensors", "t.safetensors", "m.pt", "m.onnx", "m.keras"):
        fmt = "torch" if name == "t.safetensors" else None
        first, second = tmp_path / f"1{name}", tmp_path / f"2{name}"
        files.convert(tmp_path / "src.safetensors", first, dst_format=fmt)
        time.sleep(1.1 if name.endswith(".keras") else 0)  # a clock that moves must not change the bytes
        files.convert(tmp_path / "src.safetensors", second, dst_format=fmt)
        assert first.read_bytes() == second.read_bytes(), name


def test_nan_and_infinity_reported_and_refused(tmp_path, rng, capsys):
    from lstm_convert.cli import main

    module = random_torch_lstm(rng)
    import torch
    with torch.no_grad():
        module.weight_hh_l0[4, 1] = float("nan")
        module.bias_ih_l0[0] = float("inf")
    weights = lc.from_torch(module)
    path = lc.save(weights, tmp_path / "nan.safetensors")
    with safe_open(path, "np") as f:
        assert json.loads(f.metadata()["non_finite"]) == ["lstm.l0.forward.input.b_x", "lstm.l0.forward.forget.W_h"]
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: lstm.l0.forward.forget.W_h holds NaN or infinity" in out
    assert main(["convert", str(path), str(tmp_path / "ok.pt")]) == 0  # kept as they are without --strict
    assert main(["convert", str(path), str(tmp_path / "strict.pt"), "--strict"]) == 1
    assert "holds NaN or infinity (and 1 more); refused by --strict" in capsys.readouterr().err
    assert not (tmp_path / "strict.pt").exists()
    # A PyTorch-layout file records nothing: inspect reads its header alone unless --scan reads the values.
    assert main(["convert", str(path), str(tmp_path / "t.safetensors"), "--to", "torch"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "t.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "NaN or infinity" not in out.replace("look for NaN and infinity", "")
    assert "note: only the header was read; --scan reads the values to look for NaN and infinity" in out
    assert main(["inspect", str(tmp_path / "t.safetensors"), "--scan"]) == 0
    out = capsys.readouterr().out
    assert "only the header" not in out
    assert "warning: lstm.l0.forward.forget.W_h holds NaN or infinity" in out
    assert "warning: lstm.l0.forward.input.b_x holds NaN or infinity" in out


def test_duplicate_names_are_refused(tmp_path, rng):
    path = lc.save(lc.from_torch(random_torch_lstm(rng)), tmp_path / "a.safetensors")
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = data[8:8 + length].decode()
    first = header.index('"lstm.l0.forward.input.W_x"')
    entry_end = header.index("}", first) + 1
    duplicated = header[:entry_end] + "," + header[first:entry_end] + header[entry_end:]
    duplicated = duplicated.rstrip() + " " * (-(len(duplicated.rstrip())) % 8)
    raw = duplicated.encode()
    (tmp_path / "dup.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length:])
    with pytest.raises(lc.FormatError, match=r"dup.safetensors: the header names tensor lstm.l0.forward.input.W_x twice"):
        lc.load(tmp_path / "dup.safetensors")


def sample(directory, rng):
    """An archive as the conformance suite (test_formats.py) reads it: a bidirectional LSTM and a Dense."""
    model = lc.Model((lc.from_torch(random_torch_lstm(rng, input_size=3, hidden_size=2, bidirectional=True),
                                    name="lstm"),
                      lc.Dense(name="dense", weight=rng.normal(size=(4, 4)).astype("float32"),
                               bias=rng.normal(size=4).astype("float32"))))
    return lc.save(model, directory / "sample.safetensors")
