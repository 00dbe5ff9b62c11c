"""Cost that grows with the work: passes over the data and per-tensor work counted, not timed.

Speed itself is measured by scripts/bench.py, as ratios to a baseline run beside each command."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lstm_convert import _safetensors, _stream, files


def many_lstms(path, count, hidden=4, seed=0):
    rng = np.random.default_rng(seed)
    tensors = {}
    for k in range(count):
        for name, shape in (("weight_ih_l0", (4 * hidden, 3)), ("weight_hh_l0", (4 * hidden, hidden)),
                            ("bias_ih_l0", (4 * hidden,)), ("bias_hh_l0", (4 * hidden,))):
            tensors[f"lstm{k}.{name}"] = rng.standard_normal(shape, dtype=np.float32)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


class Counted:
    """Counts the calls of one of lstm_convert's own functions, calling through."""

    def __init__(self, monkeypatch, owner, name):
        self.calls, original = 0, getattr(owner, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)


@pytest.mark.parametrize("count", [100, 400])
def test_small_tensors_share_hand_offs_and_the_header_is_parsed_once(tmp_path, monkeypatch, count):
    src = many_lstms(tmp_path / "many.safetensors", count)
    hand_offs = Counted(monkeypatch, _stream.Stream, "_hand_off")
    parses = Counted(monkeypatch, _safetensors.File, "__init__")
    out = tmp_path / "out.safetensors"
    files.convert(src, out)
    archive_bytes = sum(a.nbytes for a in load_file(out).values())
    assert hand_offs.calls <= archive_bytes // _stream.PIECE + 1  # not one per tensor (16 per LSTM here)
    assert parses.calls == 1  # recognising the format and reading it share one parse
    assert len(load_file(out)) == 16 * count


def test_each_byte_is_written_once_and_hashed_once(tmp_path, monkeypatch):
    """A tensor of several pieces: every piece written once and hashed once, in order, and its pages released
    (small pieces by the writing thread, the others by the inspecting one)."""
    rng = np.random.default_rng(1)
    big = rng.standard_normal((3 * _stream.PIECE // 4 + 5,), dtype=np.float32)  # three pieces and a bit
    small = rng.standard_normal((7, 3)).astype(np.float32)
    hashed = []
    original = _stream.Stream.__init__

    def counting(self, out, inspect=None):
        def counted(key, piece):
            hashed.append((key, piece.nbytes))
            inspect(key, piece)
        original(self, out, counted if inspect else None)
    monkeypatch.setattr(_stream.Stream, "__init__", counting)
    write_small = _stream.Stream.write_small

    def small_counted(self, items, inspect_run):  # small tensors: written and hashed together, each once
        hashed.extend((key, array.nbytes) for key, array in items)
        write_small(self, items, inspect_run)
    monkeypatch.setattr(_stream.Stream, "write_small", small_counted)
    released = Counted(monkeypatch, _stream, "release")
    path = tmp_path / "x.safetensors"
    _safetensors.write(path, [("big", [big[:100], big[100:]]), ("small", [small])], {}, digests="d")
    by_key = {}
    for key, nbytes in hashed:
        by_key[key] = by_key.get(key, 0) + nbytes
    assert by_key == {"big": big.nbytes, "small": small.nbytes}
    big_pieces = [n for k, n in hashed if k == "big"]  # a key's pieces in the order of its bytes
    assert big_pieces[:2] == [400, _stream.PIECE] and sum(big_pieces) == big.nbytes
    # 100 elements, then 3 full pieces and the rest; one small tensor, smaller than a page, so not released
    assert len(hashed) == 5 and released.calls == 4
    handle = _safetensors.File(path)
    digests = json.loads(handle.metadata["d"])
    assert digests == {"big": hashlib.sha256(big.tobytes()).hexdigest(),
                       "small": hashlib.sha256(small.tobytes()).hexdigest()}
    np.testing.assert_array_equal(handle.array("big"), big)
    # A small chunk after a large one of the same tensor waits for it: the digest is of the bytes in order.
    _safetensors.write(tmp_path / "y.safetensors", [("big", [big[:-100], big[-100:]])], {}, digests="d")
    assert json.loads(_safetensors.File(tmp_path / "y.safetensors").metadata["d"]) == {
        "big": hashlib.sha256(big.tobytes()).hexdigest()}


def test_released_pages_read_back_the_same(tmp_path):
    """Dropping the pages of a mapped source loses nothing: the data reads again from the file."""
    data = np.arange(3 * _stream.PIECE // 4, dtype=np.float32)
    save_file({"x": data}, str(tmp_path / "a.safetensors"))
    handle = _safetensors.File(tmp_path / "a.safetensors")
    view = handle.array("x")
    _stream.release(view)
    np.testing.assert_array_equal(view, data)
    copy = np.array(view)  # an array that owns its memory is left alone
    _stream.release(copy)
    np.testing.assert_array_equal(copy, data)


def test_pt_writer_streams_and_torch_reads_it(tmp_path):
    """The .pt writer computes each storage's CRC as it writes, and patches it into the header."""
    import torch

    from lstm_convert import _torch_save

    rng = np.random.default_rng(2)
    big = rng.standard_normal((_stream.PIECE // 2 + 3,), dtype=np.float32).reshape(-1, 1)
    small = rng.standard_normal((2, 3), dtype=np.float32)
    _torch_save.write(tmp_path / "x.pt", [("a.big", [big[:10], big[10:]]), ("a.small", [small.T])])
    import zipfile
    with zipfile.ZipFile(tmp_path / "x.pt") as archive:
        assert archive.testzip() is None  # every CRC right
    state = torch.load(tmp_path / "x.pt", weights_only=True)
    np.testing.assert_array_equal(state["a.big"].numpy(), big)
    np.testing.assert_array_equal(state["a.small"].numpy(), small.T)


def test_the_reserved_header_fits_names_that_json_escapes(tmp_path):
    """The final header's space is counted, not built: names with quotes, backslashes, control characters
    and non-ASCII letters still fit it exactly, with no more than the 8 KB reserve beside it."""
    rng = np.random.default_rng(2)
    names = ['a"b', "c\\d", "e\nf\tg", "h\u00e9", "i\U0001f600", "plain", "x" * 300]
    tensors = [(name, rng.standard_normal((3, 2)).astype(np.float32)) for name in names]
    path = tmp_path / "odd.safetensors"
    _safetensors.write(path, tensors, {"k": "v\u00e9"}, digests="d", non_finite="n", header_digest="h")
    loaded = load_file(path)
    assert sorted(loaded) == sorted(names)
    for name, array in tensors:
        np.testing.assert_array_equal(loaded[name], array)
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    text = raw[8:8 + length].decode("utf-8")
    header = json.loads(text)
    assert json.loads(header["__metadata__"]["d"]) == {name: hashlib.sha256(array.tobytes()).hexdigest()
                                                       for name, array in tensors}
    padding = len(text) - len(text.rstrip(" "))
    assert 8192 <= padding < 8192 + 8 and length % 8 == 0
