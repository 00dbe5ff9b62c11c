"""An archive for years: the SHA-256 of every metadata value as well as of every tensor, so that a flipped
bit anywhere (header or data) or an edited configuration is named by `verify FILE`, `load` and `convert`;
version 1 and 2 archives, which record no such digest, still load, with a note."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import lstm_convert as lc
from lstm_convert import files, formats
from lstm_convert.cli import main

from conftest import random_torch_lstm


def _archive(tmp_path, rng):
    layer = lc.from_torch(random_torch_lstm(rng, input_size=3, hidden_size=2))
    dense = lc.Dense(name="head", weight=rng.normal(size=(2, 2)).astype(np.float32),
                     bias=rng.normal(size=2).astype(np.float32))
    path = tmp_path / "a.safetensors"
    files.write(lc.Model((layer, dense)), path)
    return path


def _rewritten(path, target, change):
    """The archive's tensors with its metadata changed by ``change(metadata)``, written by safetensors itself."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as handle:
        metadata = dict(handle.metadata())
    change(metadata)
    save_file(load_file(str(path)), str(target), metadata=metadata)
    return target


def _intact(path) -> bool:
    """What `lstm-convert verify FILE` checks: every digest, then that the file reads as a whole."""
    try:
        formats.get("archive").integrity(path)
        files.read(path, "archive", check=False)
    except lc.LSTMConvertError:
        return False
    return True


def test_an_edited_configuration_is_named(tmp_path, rng, capsys):
    path = _archive(tmp_path, rng)

    def relu(metadata):
        layers = json.loads(metadata["layers"])
        layers[0]["activation"] = "relu"
        metadata["layers"] = json.dumps(layers, sort_keys=True)

    edited = _rewritten(path, tmp_path / "edited.safetensors", relu)
    with pytest.raises(lc.FormatError, match=r"the metadata key 'layers' \(the layers' configuration\) does not "
                                             r"match its SHA-256: the header was changed or damaged"):
        lc.load(edited)
    assert main(["verify", str(edited)]) == 1
    assert "the metadata key 'layers'" in capsys.readouterr().err
    assert main(["convert", str(edited), str(tmp_path / "out.pt")]) == 1
    assert not (tmp_path / "out.pt").exists()
    added = _rewritten(path, tmp_path / "added.safetensors", lambda m: m.update(note="hello"))
    with pytest.raises(lc.FormatError, match="the metadata key 'note' was added"):
        lc.load(added)
    removed = _rewritten(path, tmp_path / "removed.safetensors", lambda m: m.pop("non_finite"))
    with pytest.raises(lc.FormatError, match=r"the metadata key 'non_finite' \(.*\) was removed"):
        lc.load(removed)
    assert main(["verify", str(path)]) == 0
    assert capsys.readouterr().out.endswith("every tensor matches its SHA-256 and every metadata value its own; "
                                            "the archive is intact\n")


def test_a_flipped_bit_anywhere_is_detected(tmp_path, rng):
    """Every byte of the header (its JSON and the spaces after it) and of the data, one bit each."""
    path = _archive(tmp_path, rng)
    data = path.read_bytes()
    assert _intact(path)
    header_end = 8 + int.from_bytes(data[:8], "little")
    positions = list(range(header_end)) + list(range(header_end, len(data)))
    damaged = tmp_path / "d.safetensors"
    missed = []
    for k, at in enumerate(positions):
        flipped = bytearray(data)
        flipped[at] ^= 1 << (k % 8)
        damaged.write_bytes(flipped)
        if _intact(damaged):
            missed.append(at)
    assert missed == [], f"{len(missed)} flips not detected, first at bytes {missed[:10]} of {len(data)}"


@pytest.mark.parametrize("version", ["1", "2"])
def test_older_archives_load_with_a_note_that_their_configuration_is_not_covered(version, tmp_path, rng, capsys):
    path = _archive(tmp_path, rng)

    def older(metadata):
        metadata.pop("metadata_sha256")
        metadata["format_version"] = version
        if version == "1":  # what version 1 kept as Keras settings
            layers = json.loads(metadata["layers"])
            for spec in layers:
                for key in ("return_sequences", "return_state", "zero_output_for_mask", "stateful"):
                    spec.pop(key, None)
            metadata["layers"] = json.dumps(layers, sort_keys=True)

    old = _rewritten(path, tmp_path / f"v{version}.safetensors", older)
    model = lc.load(old)
    assert model == lc.load(path) or version == "1"
    assert main(["verify", str(old)]) == 0
    out = capsys.readouterr().out
    assert f"this archive is of format version {version}, which records no digest of its metadata" in out
    assert main(["convert", str(old), str(tmp_path / "new.safetensors")]) == 0
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "new.safetensors")]) == 0
    assert "every metadata value its own" in capsys.readouterr().out


def test_provenance_names_the_source_file_by_its_sha256_deterministically(tmp_path, rng, capsys):
    import hashlib
    import time

    assert main(["demo", "--out", str(tmp_path / "demo"), "-q"]) == 0
    seed = tmp_path / "demo" / "seed.keras"
    assert main(["convert", str(seed), str(tmp_path / "seed.pt"), "-q"]) == 0
    for src in (seed, tmp_path / "seed.pt"):
        first, second = tmp_path / f"{src.suffix[1:]}1.safetensors", tmp_path / f"{src.suffix[1:]}2.safetensors"
        assert main(["convert", str(src), str(first), "-q"]) == 0
        time.sleep(1.1)  # no clock time in the file: a second later, the same bytes
        assert main(["convert", str(src), str(second), "-q"]) == 0
        assert first.read_bytes() == second.read_bytes()
        from lstm_convert.adapters import archive

        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        assert archive.recorded(first) == {"source_file_sha256": digest}
        model = lc.load(first)
        assert model.source["file_format"] == ("keras" if src.suffix == ".keras" else "pt")
        assert model == files.read(src)  # the record is beside the model: what was read is what is loaded
        capsys.readouterr()
        assert main(["inspect", str(first)]) == 0
        assert f"source_file_sha256 {digest}" in capsys.readouterr().out.splitlines()[1]
    saved = lc.save(lc.load(first), tmp_path / "again.safetensors")  # saved from objects: no source file
    assert archive.recorded(saved) == {} and lc.load(saved) == lc.load(first)
