"""Hostile and interrupted input: no code runs from a file, no destination or temporary file is left behind."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from conftest import random_torch_lstm

import lstm_convert as lc
from lstm_convert import files
from lstm_convert.cli import main


class _Payload:
    """Unpickling this would create a file: the test of whether a reader runs code from a file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickles_that_would_run_code_are_refused(tmp_path):
    target = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"weight_ih_l0": _Payload(str(target))}, f)
    with pytest.raises(lc.FormatError, match=r"evil.pt: its pickle holds objects that are not tensor data; lstm_convert "
                                             r"loads only tensors and dicts of them, since anything else could run "
                                             r"code from the file$"):
        files.read(tmp_path / "evil.pt")
    assert main(["inspect", str(tmp_path / "evil.pt")]) == 1
    assert not target.exists()


def test_keras_lambda_layers_are_data_not_code(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3, 2)), keras.layers.Lambda(lambda t: t * 2, name="double")])
    with warnings.catch_warnings():  # Keras warns, once per process, that a lambda is unsafe to load
        warnings.simplefilter("ignore")
        model.save(tmp_path / "lambda.keras")
    with pytest.raises(lc.UnsupportedError, match=r"does not convert: double \(Lambda\); select the recurrent layers"):
        files.read(tmp_path / "lambda.keras")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_conversion_leaves_nothing(tmp_path, rng, sig):
    big = lc.Model((lc.from_torch(random_torch_lstm(rng, input_size=768, hidden_size=768, num_layers=4)),))
    src = lc.save(big, tmp_path / "big.safetensors")
    out = tmp_path / "out.pt"
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "lstm_convert", "convert", str(src), str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):  # it is writing: interrupt it now
                proc.send_signal(sig)
                break
            time.sleep(0.001)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 128 + sig:  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them
            break
        out.unlink(missing_ok=True)  # it finished before the temporary file was seen: try again
    else:
        pytest.skip("the conversion always finished before it could be interrupted")
    assert "interrupted; no partial file is left" in err
    left = sorted(p.name for p in tmp_path.iterdir())
    if left == ["big.safetensors", "out.pt"]:  # the signal came just after the rename: then the file is whole
        import torch
        assert set(torch.load(out, weights_only=True)) == set(lc.to_torch(big))
    else:
        assert left == ["big.safetensors"]
    assert lc.load(src) == big  # the source is untouched


def test_existing_destination_kept_when_conversion_fails(tmp_path, rng):
    weights = lc.Model((lc.from_torch(random_torch_lstm(rng, proj_size=2)),))
    src = lc.save(weights, tmp_path / "p.safetensors")
    (tmp_path / "p.keras").write_bytes(b"keep")
    assert main(["convert", str(src), str(tmp_path / "p.keras"), "--overwrite"]) == 1
    assert (tmp_path / "p.keras").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.keras", "p.safetensors"]
    assert np.array_equal(lc.load(src)[0].projections[(0, "forward")], weights[0].projections[(0, "forward")])


def _rezip(src, dst, replace):
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = replace.get(info.filename, zin.read(info))
            zout.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED
                          if info.filename == "config.json" else zipfile.ZIP_STORED)


def _seed_keras(tmp_path, rng):
    import keras
    from conftest import randomize_keras

    model = keras.Sequential([keras.Input((5, 7)), keras.layers.LSTM(2, name="lstm"), keras.layers.Dense(5, name="d")])
    randomize_keras(model, rng).save(tmp_path / "seed.keras")
    return tmp_path / "seed.keras"


def test_keras_config_and_weights_that_disagree(tmp_path, rng):
    import io
    import zipfile

    import h5py

    src = _seed_keras(tmp_path, rng)
    weights = zipfile.ZipFile(src).read("model.weights.h5")

    def edited(change):
        buffer = io.BytesIO(weights)
        with h5py.File(buffer, "r+") as h5:
            change(h5)
        return buffer.getvalue()

    cases = {
        "missing": (lambda h5: h5.__delitem__("layers/lstm/cell/vars/2"),
                    r"layer 'lstm' has variables \['0', '1'\] in /layers/lstm/cell/vars, expected \['0', '1', '2'\]"),
        "extra": (lambda h5: h5["layers/d/vars"].create_dataset("2", data=np.zeros(3, "float32"))
                  if "layers/d" in h5 else h5["layers/dense/vars"].create_dataset("2", data=np.zeros(3, "float32")),
                  r"layer 'd' has variables \['0', '1', '2'\]"),
        "misshapen": (lambda h5: (h5["layers/lstm/cell/vars"].__delitem__("1"),
                                  h5["layers/lstm/cell/vars"].create_dataset("1", data=np.zeros((2, 9), "float32"))),
                      r"lstm.recurrent_kernel: expected 8 along axis 1 \(4 gates x 2 units\), got shape \(2, 9\)"),
        "dtype": (lambda h5: (h5["layers/lstm/cell/vars"].__delitem__("2"),
                              h5["layers/lstm/cell/vars"].create_dataset("2", data=np.zeros(8, "int32"))),
                  r"/layers/lstm/cell/vars/2 has dtype int32, expected floating-point weights"),
    }
    for name, (change, message) in cases.items():
        path = tmp_path / f"{name}.keras"
        _rezip(src, path, {"model.weights.h5": edited(change)})
        with pytest.raises(lc.FormatError, match=message):
            files.read(path)
        assert main(["inspect", str(path)]) == 1


def test_zip_bombs_and_absurd_members_are_refused(tmp_path, rng):
    src = _seed_keras(tmp_path, rng)
    _rezip(src, tmp_path / "bomb.keras", {"config.json": b" " * (40 << 20)})  # 40 MB of spaces, deflated
    with pytest.raises(lc.FormatError, match=r"bomb.keras: config.json would expand from \d+ to 41943040 bytes: "
                                             r"refused as a zip bomb"):
        files.read(tmp_path / "bomb.keras")
    for data in (b"", b"PK\x03\x04 truncated"):
        (tmp_path / "broken.keras").write_bytes(data)
        with pytest.raises(lc.FormatError, match=r"broken.keras: not a readable .keras file"):
            files.read(tmp_path / "broken.keras")
