"""Every command's --json output: one JSON object on stdout, errors included, against the schemas shipped in
lstm_convert/schemas.json, with the exit status the command has without --json."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest

from lstm_convert.cli import main

SCHEMAS = json.loads(resources.files("lstm_convert").joinpath("schemas.json").read_text(encoding="utf-8"))


def _valid(kind: str, obj: dict) -> None:
    schema = {**SCHEMAS[kind], "definitions": SCHEMAS["definitions"]}
    jsonschema.validate(obj, schema, cls=jsonschema.Draft202012Validator)


def _json(capsys, argv: list[str], status: int = 0) -> dict:
    """Run ``argv`` with --json: the status, nothing on stderr, and stdout one JSON object; and the same
    status without --json."""
    assert main([*argv, "--json"]) == status
    out, err = capsys.readouterr()
    assert err == "", err
    obj = json.loads(out)
    assert isinstance(obj, dict)
    assert main(argv) == status
    capsys.readouterr()
    return obj


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(folder)]) == 0
    return folder


def test_demo(capsys, demo_dir, tmp_path):
    obj = _json(capsys, ["demo", "--out", str(tmp_path)])
    _valid("demo", obj)
    assert obj["keras_tensors"] == {"kernel": [7, 8], "recurrent_kernel": [2, 8], "bias": [8]}
    assert obj["keras_params"] == {"lstm": 80, "dense": 15, "total": 95}
    assert obj["gates"]["forget"] == {"W_x": [2, 7], "W_h": [2, 2], "b_x": [2], "b_h": [2]}
    assert obj["ok"] is True and obj["archive"].endswith("seed_lstm.safetensors")


def test_inspect_every_format(capsys, demo_dir, tmp_path):
    files = [demo_dir / "seed.keras", demo_dir / "seed_lstm.safetensors"]
    for suffix, to in ((".pt", "torch"), (".safetensors", "torch"), (".npz", "npz"), (".onnx", "onnx")):
        out = tmp_path / f"seed_{to}{suffix}"
        assert main(["convert", str(demo_dir / "seed.keras"), str(out), "--to", to]) == 0
        files.append(out)
    capsys.readouterr()
    for path in files:
        obj = _json(capsys, ["inspect", str(path)])
        _valid("inspect", obj)
        assert obj["file"] == str(path) and obj["total_params"] in (80, 95, 103), path
    obj = _json(capsys, ["inspect", str(tmp_path / "seed_torch.safetensors")])
    assert obj["non_finite"] is None  # only the header was read
    assert _json(capsys, ["inspect", str(tmp_path / "seed_torch.safetensors"), "--scan"])["non_finite"] == []


def test_convert_written_checked_and_refused(capsys, demo_dir, tmp_path):
    src = str(demo_dir / "seed.keras")
    obj = _json(capsys, ["convert", src, str(tmp_path / "a.onnx"), "--overwrite"])
    _valid("convert", obj)
    assert obj["written"] is True and obj["verdict"] == "exact" and obj["bytes"] == (tmp_path / "a.onnx").stat().st_size
    obj = _json(capsys, ["convert", src, str(tmp_path / "a.pt"), "--check"])
    _valid("convert", obj)
    assert obj["written"] is False and obj["verdict"] == "weights" and obj["needs"] == ["lstm: return_sequences=False"]
    assert not (tmp_path / "a.pt").exists()
    obj = _json(capsys, ["convert", src, str(tmp_path / "a.pt"), "--overwrite"])  # the weights, with a note
    _valid("convert", obj)
    assert obj["written"] is True and obj["verdict"] == "weights" and obj["notes"]
    obj = _json(capsys, ["convert", src, str(tmp_path / "b.onnx"), "--set", "lstm.stateful=true"], status=1)
    _valid("error", obj)
    assert obj["error"]["type"] == "UnsupportedError" and "stateful=True" in obj["error"]["message"]
    assert not (tmp_path / "b.onnx").exists()
    obj = _json(capsys, ["convert", src, str(tmp_path / "a.onnx")], status=1)
    _valid("error", obj)
    assert obj["error"] == {"type": "FormatError", "path": str(tmp_path / "a.onnx"),
                            "message": f"{tmp_path / 'a.onnx'}: already exists; pass --overwrite to replace it"}


def test_verify_one_file_two_files_and_a_damaged_file(capsys, demo_dir, tmp_path):
    archive = demo_dir / "seed_lstm.safetensors"
    obj = _json(capsys, ["verify", str(archive)])
    _valid("verify", obj)
    assert obj == {"file": str(archive), "format": "archive", "intact": True, "notes": []}
    model = tmp_path / "seed.safetensors"
    assert main(["convert", str(demo_dir / "seed.keras"), str(model)]) == 0
    capsys.readouterr()
    obj = _json(capsys, ["verify", str(demo_dir / "seed.keras"), str(model)])
    _valid("verify", obj)
    assert obj["ok"] is True and obj["a"]["runner"] == "keras"
    assert {row["layer"] for row in obj["rows"]} == {"model", "lstm", "dense"}
    damaged = tmp_path / "damaged.safetensors"
    data = bytearray(archive.read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))
    obj = _json(capsys, ["verify", str(damaged)], status=1)
    _valid("error", obj)
    assert obj["error"]["path"] == str(damaged) and "SHA-256" in obj["error"]["message"]


def test_usage_errors_are_json_too(capsys):
    assert main(["inspect", "--json"]) == 2
    out, err = capsys.readouterr()
    assert err == ""
    obj = json.loads(out)
    _valid("error", obj)
    assert obj == {"error": {"type": "UsageError", "message": "the following arguments are required: file",
                             "path": None}}
    assert main(["convert", "a.pt", "b.onnx", "--bogus", "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["message"] == "unrecognized arguments: --bogus" and err == ""


def test_diff_and_plot(capsys, demo_dir, tmp_path):
    seed = str(demo_dir / "seed.keras")
    assert main(["convert", seed, str(tmp_path / "s.tflite")]) == 0
    capsys.readouterr()
    obj = _json(capsys, ["diff", seed, str(tmp_path / "s.tflite")])
    _valid("diff", obj)
    assert obj["identical"] and obj["bit_identical"] and len(obj["tensors"]) == 18
    obj = _json(capsys, ["plot", seed, "-o", str(tmp_path / "p.png"), "--overwrite"])
    _valid("plot", obj)
    assert obj["picture"] == str(tmp_path / "p.png")
    obj = _json(capsys, ["verify", str(demo_dir / "seed_lstm.safetensors")])
    _valid("verify", obj)
    assert obj["intact"] is True and obj["notes"] == []
