"""The format registry, and the conformance suite that every registered format runs.

Each format ``NAME`` has its test file ``tests/test_NAME.py`` with a ``sample(directory, rng)`` that writes one
typical file of the format as its own framework writes it. On that sample every format must: be recognised by
content (renamed too), read into the canonical form, go through the archive and back bit for bit, write the
same bytes twice, refuse before writing what it cannot hold (leaving nothing behind), and compute with its own
runtime what the archive computes.
"""

from __future__ import annotations

import importlib
import os
import shutil

import numpy as np
import pytest

import lstm_convert as lc
from lstm_convert import files, formats
from lstm_convert.verify import verify


def _sample(name, directory, seed=7):
    try:
        module = importlib.import_module(f"test_{name}")
    except ModuleNotFoundError:
        pytest.fail(f"format {name!r} has no test file tests/test_{name}.py")
    if not hasattr(module, "sample"):
        pytest.fail(f"tests/test_{name}.py has no sample(directory, rng) for the conformance suite")
    directory.mkdir(exist_ok=True)
    return module.sample(directory, np.random.default_rng(seed))


def _copy(name, path, target):
    """Copy a sample to ``target``, with the files it is read with (named after ``target``)."""
    shutil.copyfile(path, target)
    stem = path.with_suffix("").name
    for companion in formats.get(name).companions(path):
        shutil.copyfile(companion, target.with_name(target.with_suffix("").name + companion.name[len(stem):]))


def _entries(directory):
    return sorted(p.name for p in directory.iterdir())


def _same_tensors(a, b):
    pairs = list(zip(a.tensors(), b.tensors(), strict=True))
    for (name, x), (other, y) in pairs:
        assert name == other and x.dtype == y.dtype and x.shape == y.shape, (name, other)
        assert np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes(), name


def test_registry_declares_each_format_once():
    seen = [f.name for f in formats.every()]
    assert seen == list(formats.NAMES)
    for fmt in formats.every():
        assert fmt.suffixes and all(s.startswith(".") and s == s.lower() for s in fmt.suffixes), fmt.name
        assert fmt.reads or fmt.writes
        assert (fmt.run is None) == (fmt.run_layers is None) or fmt.name == "h5", fmt.name
    with pytest.raises(lc.FormatError, match="unknown format 'tensorrt'; expected one of archive, keras"):
        formats.get("tensorrt")


@pytest.mark.parametrize("name", formats.NAMES)
def test_recognised_by_content(name, tmp_path):
    path = _sample(name, tmp_path / "s")
    assert formats.detect(path).name == name
    renamed = tmp_path / "renamed.bin"
    _copy(name, path, renamed)
    assert formats.detect(renamed).name == name
    if name != "archive":  # named as another format: refused, naming what it is, unless declared
        wrong = tmp_path / ("renamed.onnx" if name != "onnx" else "renamed.pt")
        _copy(name, path, wrong)
        title = formats.get(name).title
        article = "an" if name == "onnx" else "a"
        with pytest.raises(lc.FormatError) as raised:
            formats.detect(wrong)
        assert raised.value.cli_text() == (f"{wrong}: this is {article} {title}, not a {wrong.suffix} file; "
                                           f"pass --from {name} or rename it")
        assert str(raised.value).endswith(f"; read it as format {name!r} or rename it")
        assert formats.detect(wrong, name).name == name
        assert files.read(wrong, name) == files.read(path)


@pytest.mark.parametrize("name", formats.NAMES)
def test_round_trip_through_the_archive_bit_for_bit(name, tmp_path):
    fmt = formats.get(name)
    path = _sample(name, tmp_path / "s")
    model = files.read(path)
    archive = tmp_path / "a.safetensors"
    files.write(model, archive)
    back = files.read(archive)
    assert back == model  # every tensor bit for bit, the configuration and semantics
    if not fmt.writes:
        return
    first, second = tmp_path / f"1{fmt.suffixes[0]}", tmp_path / f"2{fmt.suffixes[0]}"
    files.write(back, first, name)
    again = files.read(first, name, kinds=_kinds(back))
    _same_tensors(again, model)
    files.write(again, second, name)
    assert first.read_bytes() == second.read_bytes(), "the same model must give the same bytes"
    assert _entries(tmp_path) == sorted(["s", "a.safetensors", first.name, second.name])  # no temporary file


def _kinds(model):
    """What a plain state dict cannot say about the model (an Embedding's lone weight)."""
    return {layer.name: "embedding" for layer in model.layers if isinstance(layer, lc.Embedding)}


def _unholdable():
    """An LSTM that only the archive holds: float64 weights (onnxruntime runs float32), peepholes and clip
    (neither Keras nor PyTorch has them)."""
    rng = np.random.default_rng(11)
    gates = {(0, "forward", g): lc.Gate(W_x=rng.normal(size=(2, 3)), W_h=rng.normal(size=(2, 2)),
                                        b_x=rng.normal(size=2), b_h=rng.normal(size=2))
             for g in ("input", "forget", "cell", "output")}
    peepholes = {(0, "forward", g): rng.normal(size=2) for g in ("input", "forget", "output")}
    layer = lc.RecurrentLayer(kind="lstm", input_size=3, hidden_size=2, gates=gates, name="lstm",
                              peepholes=peepholes, clip=3.0)
    return lc.Model((layer,))


@pytest.mark.parametrize("name", [f.name for f in formats.writable()])
def test_refused_before_anything_is_written(name, tmp_path):
    fmt = formats.get(name)
    model = _unholdable()
    verdict = fmt.check(model)
    target = tmp_path / f"out{fmt.suffixes[0]}"
    if name == "archive":  # the canonical form holds every layer
        assert verdict.exact
        return
    assert verdict.verdict == "impossible" and verdict.reasons and verdict.layers["lstm"].reason
    with pytest.raises(lc.UnsupportedError, match="lstm: "):
        files.write(model, target, name)
    assert _entries(tmp_path) == []
    target.write_bytes(b"keep me")  # an existing file is never replaced without overwrite
    with pytest.raises(lc.FormatError, match="already exists"):
        files.write(files.read(_sample("archive", tmp_path / "s")), target, name)
    assert target.read_bytes() == b"keep me"
    assert _entries(tmp_path) == sorted(["s", target.name])


@pytest.mark.parametrize("name", formats.NAMES)
def test_its_runtime_computes_what_the_archive_does(name, tmp_path):
    path = _sample(name, tmp_path / "s")
    archive = tmp_path / "a.safetensors"
    files.convert(path, archive)
    result = verify(path, archive, steps=4)
    assert result.ok, (result.rows, result.notes)
    assert result.rows[0]["layer"] == "model" and result.rows[0]["ok"]
    fmt = formats.get(name)
    if fmt.run is not None and name != "h5" or (name == "h5" and _installed("tf_keras")):
        assert result.runners[0] != "reference", result.notes


def _installed(module):
    return importlib.util.find_spec(module) is not None


def test_renamed_file_of_no_format_is_refused_naming_it(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(64))
    with pytest.raises(lc.FormatError, match="weights.bin: cannot tell the format from its content or the extension"):
        files.read(path)
