"""The shortcuts taken for speed keep every check and every byte: settings checked once per combination
(types included), gates of read-only arrays kept as they are, the garbage collector paused while files are
read and written, a writer hashing its own pieces beside another hashing thread, and pages of a mapped
source dropped once written."""

from __future__ import annotations

import dataclasses
import gc
import io

import numpy as np
import pytest
from safetensors.numpy import save_file

from lstm_convert import ConfigError, Gate, RecurrentLayer, _gc, _safetensors, _stream, files
from lstm_convert.adapters import archive

GATES = ("input", "forget", "cell", "output")


def make(rng, input_size=3, hidden=2, **kwargs):
    gates = {(0, "forward", g): Gate(*(rng.normal(size=s).astype("float32") for s in
                                       ((hidden, input_size), (hidden, hidden), (hidden,), (hidden,))))
             for g in GATES}
    return RecurrentLayer(kind="lstm", input_size=input_size, hidden_size=hidden, gates=gates, **kwargs)


@pytest.mark.parametrize("setting, good, bad, message", [
    ("input_size", 1, True, "input_size must be a positive integer, got True"),
    ("clip", 1, True, "clip must be a positive number or None, got True"),
    ("return_state", True, 1, "return_state must be True or False, got 1"),
    ("forget_bias", 1.0, True, "forget_bias must be a finite number"),
])
def test_settings_checked_once_are_still_refused_when_of_another_type(rng, setting, good, bad, message):
    """True == 1 and hash(True) == hash(1): a combination remembered as checked is told apart by its types."""
    layer = make(rng, input_size=1) if setting == "input_size" else make(rng)
    dataclasses.replace(layer, **{setting: good})  # checked, and remembered
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(layer, **{setting: bad})


def test_an_unhashable_setting_gets_its_message(rng):
    with pytest.raises(ConfigError, match=r"activation \['tanh'\] is not one of"):
        make(rng, activation=["tanh"])


def test_gates_of_a_mapped_file_are_its_read_only_views_and_other_arrays_are_frozen(tmp_path, rng):
    layer = make(rng)
    mutable = layer.gate("input").W_x
    assert not mutable.flags.writeable  # a view made read-only; the caller's array is left writeable
    save_file({"weight_ih_l0": rng.normal(size=(8, 3)).astype("float32"),
               "weight_hh_l0": rng.normal(size=(8, 2)).astype("float32")}, str(tmp_path / "s.safetensors"))
    read = files.read(tmp_path / "s.safetensors").layers[0]
    mapped = _safetensors.File.open(tmp_path / "s.safetensors").array("weight_ih_l0")
    assert read.gate("forget").W_x.ctypes.data == mapped[2:4].ctypes.data  # the file's bytes, not a copy
    with pytest.raises(ValueError, match="read-only"):
        read.gate("forget").W_x[0, 0] = 1.0
    np.testing.assert_array_equal(read.gate("forget").W_x, mapped[2:4])


def test_the_collector_is_paused_while_reading_and_restored_after(tmp_path, rng):
    tensors = {f"lstm{k}.{name}": rng.normal(size=shape).astype("float32") for k in range(300)
               for name, shape in (("weight_ih_l0", (8, 3)), ("weight_hh_l0", (8, 2)))}
    save_file(tensors, str(tmp_path / "many.safetensors"))
    runs = []

    def count(phase, info):
        if phase == "start":
            runs.append(info["generation"])
    gc.callbacks.append(count)
    try:
        assert gc.isenabled()
        files.read(tmp_path / "many.safetensors")
        # 2,400 canonical arrays made, and no collection among them: at most the one as the collector resumes
        assert len(runs) <= 1 and gc.isenabled()
        gc.disable()
        with _gc.paused():
            pass
        assert not gc.isenabled()  # paused by the program: left so
    finally:
        gc.enable()
        gc.callbacks.remove(count)


def test_hashing_in_the_writing_thread_writes_the_same_bytes(tmp_path, rng):
    """Beside another hashing thread the writer inspects its own pieces: the archive is byte for byte the
    one written with the inspecting thread (tensors of several pieces, small tensors among them)."""
    fan_in = _stream.PIECE // (4 * 64) + 16  # each W_x, (64, fan_in) float32, is two pieces
    gates = {(0, "forward", g): Gate(*(rng.normal(size=shape).astype("float32") for shape in
                                       ((64, fan_in), (64, 64), (64,), (64,)))) for g in GATES}
    layer = RecurrentLayer(kind="lstm", input_size=fan_in, hidden_size=64, gates=gates)
    archive.write(layer, tmp_path / "threaded.safetensors")
    with _stream.beside():
        assert _stream.Stream(io.BytesIO(), lambda key, piece: None).pool is None
        archive.write(layer, tmp_path / "inline.safetensors")
    assert (tmp_path / "inline.safetensors").read_bytes() == (tmp_path / "threaded.safetensors").read_bytes()
    threaded = _stream.Stream(io.BytesIO(), lambda key, piece: None)
    assert threaded.pool is not None
    threaded.close()


def _resident_kb(path) -> int:
    total, inside = 0, False
    with open("/proc/self/smaps") as handle:
        for line in handle:
            parts = line.split()
            if parts and "-" in parts[0] and not parts[0].endswith(":"):
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(parts[1])
    return total


def test_a_mapped_source_is_not_left_resident_after_writing(tmp_path, rng):
    """Thousands of small tensors and a few large ones: once written, their pages are dropped from the
    mapping (the file's bytes stay readable, from the page cache)."""
    tensors = {f"lstm{k}.{name}": rng.normal(size=shape).astype("float32") for k in range(400)
               for name, shape in (("weight_ih_l0", (128, 3)), ("weight_hh_l0", (128, 32)),
                                   ("bias_ih_l0", (128,)), ("bias_hh_l0", (128,)))}
    tensors |= {"big.weight_ih_l0": rng.normal(size=(4096, 300)).astype("float32"),
                "big.weight_hh_l0": rng.normal(size=(4096, 1024)).astype("float32")}
    src = tmp_path / "mixed.safetensors"
    save_file(tensors, str(src))
    files.convert(src, tmp_path / "out.safetensors")
    assert src.stat().st_size > 25 << 20
    assert _resident_kb(src) < 4096  # of some 28 MB, without counting the pages that stay in the page cache
    back = files.read(tmp_path / "out.safetensors")
    big = next(layer for layer in back.layers if layer.name == "big")
    np.testing.assert_array_equal(big.gate("cell").W_h, tensors["big.weight_hh_l0"][2048:3072])
