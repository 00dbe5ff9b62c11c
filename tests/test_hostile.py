"""Crafted files, as a hostile user would hand them over: each attack in its own test, checked from outside
the process (exit status, the one line on stderr, peak memory, wall time) and for what it leaves behind.

No byte of another file may reach an output, no small file may take much more memory than it is, no
reader may hang, and nothing but the library's own errors may come out.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lstm_convert as lc
from lstm_convert import files

SECRET = b"SECRET-7f3a-do-not-leak!"


def cli(*args: str, timeout: float = 120) -> tuple[int, str, float]:
    """Run the command line in a new process: its exit status, stderr and wall time."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "lstm_convert", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"lstm-convert {' '.join(args)} ran longer than {timeout} s") from None
    return proc.returncode, err.decode(), time.monotonic() - start


# Run in a small Python of its own, so that the peak measured is the command's, not that of a copy of this
# test process (a fork counts the parent's pages as its own until it executes the command).
_MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
sys.stderr.buffer.write(done.stderr)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def memory_of(*args: str, timeout: float = 120) -> tuple[int, str, int]:
    """Exit status, stderr and peak resident memory in bytes of one run of the command line."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "lstm_convert", *args],
                          capture_output=True, text=True, timeout=timeout)
    code, peak = map(int, done.stdout.split())
    return code, done.stderr, peak


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def _seed_model(rng):
    import keras
    from conftest import randomize_keras

    model = keras.Sequential([keras.Input((5, 7)), keras.layers.LSTM(2, name="lstm"), keras.layers.Dense(5, name="d")])
    return randomize_keras(model, rng)


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET * 64)
    return path


@pytest.fixture
def seed_h5(tmp_path, rng):
    path = tmp_path / "seed.h5"
    _seed_model(rng).save(path)
    return path


@pytest.fixture
def seed_keras(tmp_path, rng):
    path = tmp_path / "seed.keras"
    _seed_model(rng).save(path)
    return path


def _h5_kernel(h5) -> str:
    """The name of the LSTM's kernel dataset in a legacy .h5 or a .keras weights file."""
    names = []
    h5.visit(names.append)
    return next(n for n in names if n.rpartition("/")[2] in ("kernel", "kernel:0") and "lstm" in n) \
        if "model_weights" in h5 else "layers/lstm/cell/vars/0"


def _replace(h5, name: str, make) -> None:
    """Replace dataset ``name`` by what ``make(group, leaf, shape, dtype)`` creates there."""
    old = h5[name]
    shape, dtype = old.shape, old.dtype
    group, _, leaf = name.rpartition("/")
    del h5[name]
    make(h5[group] if group else h5, leaf, shape, dtype)


def _keras_with(src, dst, change) -> None:
    """A copy of .keras ``src`` whose model.weights.h5 ``change(h5)`` edited."""
    import h5py

    with zipfile.ZipFile(src) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    buffer = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buffer, "r+") as h5:
        change(h5)
    members["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _external(secret):
    def make(group, leaf, shape, dtype):
        group.create_dataset(leaf, shape=shape, dtype=dtype,
                             external=[(str(secret), 0, int(np.prod(shape)) * dtype.itemsize)])
    return make


def _assert_refused(tmp_path, src, message):
    before = set(tmp_path.iterdir())
    with pytest.raises(lc.FormatError, match=message):
        files.read(src)
    for out in ("out.safetensors", "out.pt", "out.onnx"):
        code, err, _ = cli("convert", str(src), str(tmp_path / out))
        assert code == 1 and "Traceback" not in err
        assert one_line(err).startswith("lstm-convert: error: ")
        assert not (tmp_path / out).exists()
    assert set(tmp_path.iterdir()) == before  # no output, no temporary file: no byte of the secret anywhere


def test_h5_external_storage_is_refused(tmp_path, seed_h5, secret):
    import h5py

    with h5py.File(seed_h5, "r+") as h5:
        name = _h5_kernel(h5)
        _replace(h5, name, _external(secret))
    _assert_refused(tmp_path, seed_h5, rf"seed.h5: /{name} stores its values in other files \({secret}\): refused "
                                       r"\(HDF5 external storage; a model file must not read other files\)")


def test_keras_external_storage_is_refused(tmp_path, seed_keras, secret):
    _keras_with(seed_keras, tmp_path / "ext.keras", lambda h5: _replace(h5, "layers/lstm/cell/vars/0", _external(secret)))
    _assert_refused(tmp_path, tmp_path / "ext.keras",
                    r"ext.keras: model.weights.h5: /layers/lstm/cell/vars/0 stores its values in other files")


def test_h5_links_and_virtual_datasets_are_refused(tmp_path, seed_h5, secret):
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5.create_dataset("kernel", data=np.frombuffer((SECRET * 10)[:7 * 8 * 4], "float32").reshape(7, 8))
    cases = {
        "external_link": (lambda g, leaf, shape, dtype: g.__setitem__(leaf, h5py.ExternalLink(str(other), "/kernel")),
                          r"is an external link to .*other.h5:/kernel: refused"),
        "soft_link": (lambda g, leaf, shape, dtype: g.__setitem__(leaf, h5py.SoftLink("/model_weights")),
                      r"is a soft link to /model_weights: refused"),
        "virtual": (lambda g, leaf, shape, dtype: g.create_virtual_dataset(leaf, _layout(h5py, other, shape, dtype)),
                    r"is a virtual dataset \(its values are read from other datasets or files\): refused"),
    }
    for label, (make, message) in cases.items():
        path = _edited_h5(seed_h5, tmp_path / f"{label}.h5", make)
        _assert_refused(tmp_path, path, message)


def _edited_h5(src, dst, make):
    """A copy of .h5 ``src`` whose LSTM kernel ``make`` replaced (see :func:`_replace`)."""
    import shutil

    import h5py

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        _replace(h5, _h5_kernel(h5), make)
    return dst


def _layout(h5py, other, shape, dtype):
    layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
    layout[:] = h5py.VirtualSource(str(other), "kernel", shape=shape)
    return layout


def test_h5_datasets_larger_than_their_storage_are_refused(tmp_path, seed_h5):
    cases = {  # a huge dataset never written (fill values), and one compressed a thousandfold
        "unallocated": (lambda g, leaf, shape, dtype: g.create_dataset(leaf, shape=(20000, 20000), dtype="float32"),
                        r"declares 1600000000 bytes but stores 0: refused"),
        "bomb": (lambda g, leaf, shape, dtype: g.create_dataset(leaf, data=np.zeros((4000, 4000), "float32"),
                                                                chunks=(1000, 1000), compression="gzip"),
                 r"would expand from \d+ to 64000000 bytes: refused as a compression bomb"),
    }
    for label, (make, message) in cases.items():
        path = _edited_h5(seed_h5, tmp_path / f"{label}.h5", make)
        assert path.stat().st_size < 2 << 20
        code, err, peak = memory_of("convert", str(path), str(tmp_path / "out.pt"))
        assert code == 1 and re.search(message, one_line(err)), err
        assert peak < 400 << 20, peak  # the interpreter, NumPy and h5py: far below the declared sizes
        with pytest.raises(lc.FormatError, match=message):
            files.read(path)


CORPUS = sorted((Path(__file__).parent / "corpus").glob("*/*"))


@pytest.mark.parametrize("path", CORPUS, ids=[f"{p.parent.name}/{p.name}" for p in CORPUS])
def test_crash_corpus(path, tmp_path):
    """Files that once hung, crashed or raised a foreign exception in a reader (found by the fuzzers): each
    now ends, within its deadline, in one line naming the file."""
    import shutil

    copy = tmp_path / path.name
    shutil.copy(path, copy)
    start = time.monotonic()
    try:
        files.read(copy)
    except lc.LSTMConvertError as exc:
        assert str(copy) in str(exc)
    assert time.monotonic() - start < 8
    code, err, seconds = cli("inspect", str(copy))
    assert code in (0, 1) and seconds < 20
    if code:
        assert one_line(err).startswith(f"lstm-convert: error: {copy}: ")


def test_signals_end_a_hung_hdf5_read_at_once(tmp_path):
    """A file on which HDF5 loops forever: SIGTERM and Ctrl-C still end the command within a second, with
    128 + the signal's number, and no process is left behind."""
    import signal
    import shutil

    hang = tmp_path / "hang.h5"
    shutil.copy(Path(__file__).parent / "corpus" / "h5" / "hang-walk.h5", hang)
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([sys.executable, "-m", "lstm_convert", "convert", str(hang), str(tmp_path / "o.pt")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)  # well into the walk
        children = _children(proc.pid)
        assert children, "the walk runs in a child process"
        sent = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - sent < 1.0
        assert proc.returncode == 128 + sig and one_line(err) == "lstm-convert: interrupted; no partial file is left"
        time.sleep(0.2)
        assert not any(Path(f"/proc/{pid}").exists() for pid in children)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["hang.h5"]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rezip(src, dst, *, deflate=(), extra=()):
    """A copy of zip ``src`` with the members named in ``deflate`` compressed, and ``extra`` (name, bytes)
    members added."""
    import warnings

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name: that is the attack
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info),
                          compress_type=zipfile.ZIP_DEFLATED if info.filename in deflate else zipfile.ZIP_STORED)
        for name, data in extra:
            zout.writestr(name, data)


def _patch_central(path, member: str, compress_size: int, file_size: int) -> None:
    """Make the central directory lie about a member's sizes (its local header keeps the truth)."""
    import struct

    data = bytearray(path.read_bytes())
    name = member.encode()
    at = 0
    while True:
        at = data.find(b"PK\x01\x02", at)
        length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + length] == name:
            break
        at += 4
    struct.pack_into("<II", data, at + 20, compress_size, file_size)
    path.write_bytes(bytes(data))


def test_keras_zip_that_lies_about_sizes(tmp_path, seed_keras):
    padded = tmp_path / "padded.keras"  # weights deflated, with 20 MB of zeros that compress well
    _keras_with(seed_keras, padded, lambda h5: h5.create_dataset("pad", data=np.zeros(5 << 20, "float32")))
    _rezip(padded, tmp_path / "deflated.keras", deflate=("model.weights.h5",))
    assert (tmp_path / "deflated.keras").stat().st_size < 1 << 20
    lying = tmp_path / "lying.keras"
    lying.write_bytes((tmp_path / "deflated.keras").read_bytes())
    _patch_central(lying, "model.weights.h5", 0x7FFFFFF0, 0x7FFFFFF0)
    code, err, peak = memory_of("convert", str(lying), str(tmp_path / "out.pt"))
    assert code == 1 and re.fullmatch(
        rf"lstm-convert: error: {lying}: zip member 'model.weights.h5' declares 2147483632 -> 2147483632 bytes in "
        r"the central directory but \d+ -> 20\d{6} in its local header", one_line(err)), err
    assert peak < 300 << 20, peak
    assert not (tmp_path / "out.pt").exists()


def test_zip_members_outside_the_archive_or_twice_are_refused(tmp_path, seed_keras):
    _rezip(seed_keras, tmp_path / "traversal.keras", extra=[("../../evil.txt", b"x")])
    with pytest.raises(lc.FormatError, match=r"traversal.keras: zip member '../../evil.txt' points outside the "
                                             r"archive: refused"):
        files.read(tmp_path / "traversal.keras")
    _rezip(seed_keras, tmp_path / "twice.keras", extra=[("config.json", b"{}")])
    with pytest.raises(lc.FormatError, match=r"twice.keras: the zip holds two members named 'config.json': refused"):
        files.read(tmp_path / "twice.keras")


def test_deflated_pt_records_are_bounded(tmp_path):
    import torch

    torch.save({"weight": torch.zeros(25_000_000)}, tmp_path / "zeros.pt")  # 100 MB of zeros
    _rezip(tmp_path / "zeros.pt", tmp_path / "bomb.pt", deflate=set(zipfile.ZipFile(tmp_path / "zeros.pt").namelist()))
    assert (tmp_path / "bomb.pt").stat().st_size < 1 << 20
    code, err, peak = memory_of("inspect", str(tmp_path / "bomb.pt"))
    assert code == 1 and re.fullmatch(rf"lstm-convert: error: {tmp_path / 'bomb.pt'}: zeros/data/0 would expand from "
                                      r"\d+ to 100000000 bytes: refused as a zip bomb", one_line(err)), err
    assert peak < 400 << 20, peak


def test_onnx_external_data_stays_in_the_model_folder(tmp_path, rng, secret):
    import onnx
    from conftest import random_torch_lstm
    from onnx.external_data_helper import convert_model_to_external_data

    model = lc.Model((lc.from_torch(random_torch_lstm(rng, input_size=5, hidden_size=4)),))
    files.write(model, tmp_path / "inline.onnx")
    folder = tmp_path / "model"
    folder.mkdir()
    proto = onnx.load(tmp_path / "inline.onnx")
    convert_model_to_external_data(proto, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save_model(proto, folder / "m.onnx")
    assert files.read(folder / "m.onnx") == files.read(tmp_path / "inline.onnx")  # beside the model: read

    def variant(label, location=None, length=None):
        edited = onnx.load(folder / "m.onnx", load_external_data=False)
        tensor = next(t for t in edited.graph.initializer if t.external_data)
        for entry in tensor.external_data:
            if entry.key == "location" and location is not None:
                entry.value = location
            if entry.key == "length" and length is not None:
                entry.value = str(length)
        onnx.save_model(edited, folder / f"{label}.onnx")
        return folder / f"{label}.onnx", tensor.name

    (folder / "link.bin").symlink_to(secret)
    cases = {
        "absolute": (dict(location=str(secret)), r"refused \(external data must be a file beside the model, named "
                                                 r"without an absolute path or '\.\.'\)"),
        "parent": (dict(location="../secret.bin"), r"refused \(external data must be a file beside the model"),
        "symlink": (dict(location="link.bin"), r"which leads out of the model's folder \(a symlink to .*secret.bin\): "
                                               r"refused"),
        "length": (dict(length=10 ** 9), r"1000000000 bytes at offset \d+ in a file of \d+, expected \d+ bytes"),
    }
    for label, (change, message) in cases.items():
        path, name = variant(label, **change)
        with pytest.raises(lc.FormatError, match=rf"{label}.onnx: initializer '{re.escape(name)}' keeps its values "
                                                 rf"in .*{message}"):
            files.read(path)
        code, err, _ = cli("convert", str(path), str(tmp_path / "out.safetensors"))
        assert code == 1 and one_line(err) and not (tmp_path / "out.safetensors").exists()


def test_names_from_files_cannot_forge_lines(tmp_path, rng):
    import onnx
    from conftest import random_torch_lstm

    files.write(lc.Model((lc.from_torch(random_torch_lstm(rng, input_size=5, hidden_size=4)),)), tmp_path / "m.onnx")
    proto = onnx.load(tmp_path / "m.onnx")
    forged = "lstm\nwrote /etc/passwd (safetensors)\x1b[2K\u202e"
    for node in proto.graph.node:  # node names, and the inputs, so that the weights seem computed: refused by name
        node.name = node.name.replace("lstm", forged)
        node.input[:] = [i.replace("lstm", forged) for i in node.input]
    del proto.metadata_props[:]  # read as any exporter's file
    proto.producer_name = "exporter"
    onnx.save_model(proto, tmp_path / "forged.onnx")
    with pytest.raises(lc.UnsupportedError, match="node lstm\nwrote /etc/passwd"):  # the library keeps the text
        files.read(tmp_path / "forged.onnx")
    for args in (("inspect", str(tmp_path / "forged.onnx")),
                 ("convert", str(tmp_path / "forged.onnx"), str(tmp_path / "out.safetensors")),
                 ("verify", str(tmp_path / "forged.onnx"), str(tmp_path / "m.onnx"))):
        done = subprocess.run([sys.executable, "-m", "lstm_convert", *args], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 1 and not done.stdout
        line = one_line(done.stderr)  # the command line shows it escaped, on one line
        assert "\x1b" not in line and "\u202e" not in line
        assert r"node lstm\nwrote /etc/passwd (safetensors)\x1b[2K\u202e/LSTM" in line, line


@pytest.fixture
def small_archive(tmp_path, rng):
    from conftest import random_torch_lstm

    model = lc.Model((lc.from_torch(random_torch_lstm(rng, input_size=5, hidden_size=4)),))
    return model, lc.save(model, tmp_path / "small.safetensors")


def test_symlinks_at_the_destination_are_existing_files(tmp_path, small_archive):
    model, src = small_archive
    target = tmp_path / "target.pt"
    dangling, live = tmp_path / "dangling.pt", tmp_path / "live.pt"
    dangling.symlink_to(tmp_path / "nowhere.pt")
    target.write_bytes(b"keep")
    live.symlink_to(target)
    for link in (dangling, live):
        with pytest.raises(lc.FormatError, match=rf"{link.name}: already exists; pass overwrite=True to replace it"):
            files.convert(src, link)
        assert link.is_symlink()
    assert not (tmp_path / "nowhere.pt").exists()
    files.convert(src, live, overwrite=True)  # the link itself is replaced, its target never written through
    assert not live.is_symlink() and target.read_bytes() == b"keep"
    assert set(lc.files.read(live).layers[0].gates) == set(model.layers[0].gates)


def test_concurrent_conversions_to_one_new_destination(tmp_path, rng):
    """Without --overwrite, of conversions racing to one new path exactly one succeeds; the others fail with
    "already exists", and one whole file remains."""
    from conftest import random_torch_lstm

    big = lc.Model((lc.from_torch(random_torch_lstm(rng, input_size=512, hidden_size=512, num_layers=2)),))
    src = lc.save(big, tmp_path / "big.safetensors")
    out = tmp_path / "out.pt"
    for attempt in range(3):
        procs = [subprocess.Popen([sys.executable, "-m", "lstm_convert", "convert", str(src), str(out)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        codes = sorted(code for code, _ in results)
        assert codes[0] == 0 and codes.count(0) == 1, results
        for code, err in results:
            if code:
                assert re.fullmatch(rf"lstm-convert: error: {out}: already exists( \(it appeared while this file was "
                                    r"written\))?; pass --overwrite to replace it", one_line(err)), err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors", "out.pt"]
        assert lc.files.read(out) == lc.files.read(out)  # whole: it reads
        if any("appeared while" in err for _, err in results):
            break  # the race itself was seen: two wrote at once, one rename was refused
        out.unlink()


def test_stale_temporary_files_of_killed_runs_are_removed(tmp_path, small_archive):
    _, src = small_archive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".out.pt.lstm-convert-{pid}-0123456789ab.tmp"
    fresh = tmp_path / f".out.pt.lstm-convert-{pid}-ba9876543210.tmp"  # too recent: perhaps another machine's
    alive = tmp_path / f".out.pt.lstm-convert-{os.getpid()}-aaaaaaaaaaaa.tmp"  # a live writer's
    other = tmp_path / f".other.pt.lstm-convert-{pid}-0123456789ab.tmp"  # another destination's
    for path in (stale, fresh, alive, other):
        path.write_bytes(b"x" * 1000)
    old = time.time() - 3600
    for path in (stale, alive, other):
        os.utime(path, (old, old))
    files.convert(src, tmp_path / "out.pt")
    assert not stale.exists() and fresh.exists() and alive.exists() and other.exists()


def test_full_disk_names_the_destination(tmp_path, small_archive):
    import resource

    _, src = small_archive
    big = lc.Model((lc.from_torch(__import__("conftest").random_torch_lstm(np.random.default_rng(1), input_size=300,
                                                                           hidden_size=300)),))
    src = lc.save(big, tmp_path / "big.safetensors")
    out = tmp_path / "out.pt"
    done = subprocess.run([sys.executable, "-m", "lstm_convert", "convert", str(src), str(out)], capture_output=True,
                          text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)))
    assert done.returncode == 1
    assert one_line(done.stderr) == (f"lstm-convert: error: {out}: cannot be written: the file would be larger than "
                                     "the file system allows")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors", "small.safetensors"]


def test_ctrl_c_while_starting_is_quiet(tmp_path):
    """SIGINT or SIGTERM at any moment of the start-up: status 130 or 143, never a traceback."""
    import signal

    for delay in (0.05, 0.1, 0.2, 0.3):
        for sig in (signal.SIGINT, signal.SIGTERM):
            proc = subprocess.Popen([sys.executable, "-m", "lstm_convert", "demo"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            time.sleep(delay)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=60)
            if err.startswith("Fatal Python error: init_import_site"):
                continue  # on a loaded machine the signal came while Python itself started, before any program
            assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
            assert proc.returncode in (128 + sig, -sig), (delay, proc.returncode, err)


def test_a_destination_that_appears_while_writing_is_never_replaced(tmp_path):
    from lstm_convert import _atomic

    dest = tmp_path / "out.pt"

    def write(tmp):  # another process creates the destination while this one writes
        dest.write_bytes(b"theirs")
        tmp.write_bytes(b"mine")

    with _atomic.no_replace(), pytest.raises(lc.FormatError, match=r"out.pt: already exists \(it appeared while this "
                                                                    r"file was written\)"):
        _atomic.atomic_write(dest, write)
    assert dest.read_bytes() == b"theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]
    _atomic.atomic_write(dest, lambda tmp: tmp.write_bytes(b"mine"))  # allowed to replace: it does
    assert dest.read_bytes() == b"mine"


def _edit_header(src, dst, change) -> None:
    """A copy of safetensors ``src`` whose JSON header ``change(header)`` edited (the data kept)."""
    import json
    import struct

    data = src.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    change(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    dst.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length:])


def test_archive_settings_and_counts_are_refused(tmp_path, seed_keras):
    import json

    src = tmp_path / "seed.safetensors"
    files.convert(seed_keras, src)

    def metadata(key):  # an edit of one JSON value of the archive's metadata
        def edits(change):
            def edit(header):
                value = json.loads(header["__metadata__"][key])
                change(value)
                header["__metadata__"][key] = json.dumps(value)
            return edit
        return edits

    layers, model = metadata("layers"), metadata("model")

    def tensor(header):
        header[next(k for k in header if k != "__metadata__")]["dtype"] = ["F32"]

    cases = {  # (edit, target, the message)
        "layers": (layers(lambda s: s[0].update(num_layers=10 ** 9)), "out.pt",
                   r"layer spec 'lstm' says num_layers 1000000000 and directions 1, but the file holds \d+ tensors"),
        "activation": (layers(lambda s: s[1]["config"]["keras"].update(activation="relu")), "out.keras",
                       r"d: config\['keras'\] holds 'activation', which is not a Keras setting lstm_convert carries"),
        "unknown": (layers(lambda s: s[0]["config"]["keras"].update(bogus=1)), "out.keras",
                    r"lstm: config\['keras'\] holds 'bogus', which is not a Keras setting"),
        "dropout": (layers(lambda s: s[0]["config"]["keras"].update(dropout="x")), "out.keras",
                    r"lstm: config\['keras'\]\['dropout'\] is 'x', which Keras does not take"),
        "shape": (model(lambda m: m.update(input_shape=["a", "b"])), "out.keras",
                  r"model input_shape must hold positive integers or None, got \('a', 'b'\)"),
        "source": (model(lambda m: m.update(source="text")), "out.pt", r"model: source must be a mapping, got str$"),
        "dtype": (tensor, "out.pt", r"has dtype \['F32'\], not one lstm_convert reads"),
    }
    for label, (edit, target, message) in cases.items():
        path = tmp_path / f"{label}.safetensors"
        _edit_header(src, path, edit)
        start = time.monotonic()
        code, err, _ = cli("convert", str(path), str(tmp_path / target), timeout=60)
        assert code == 1 and re.search(message, one_line(err)), (label, err)
        assert time.monotonic() - start < 30 and not (tmp_path / target).exists()
    deep = tmp_path / "deep.safetensors"
    raw = b"[" * 100_000 + b"]" * 100_000
    deep.write_bytes(len(raw).to_bytes(8, "little") + raw)
    code, err, _ = cli("inspect", str(deep))
    assert code == 1 and one_line(err).endswith("(header is not JSON: nested deeper than any model configuration)")


def test_a_record_whose_counts_disagree_with_the_state_dict_is_refused_at_once(tmp_path, small_archive):
    """Found by the long fuzz run: a PyTorch-layout .safetensors whose lstm_convert record says num_layers
    2**49 made the reader build 2**49 gate keys (gigabytes, then the OOM killer)."""
    import json

    model, _ = small_archive
    src = tmp_path / "t.safetensors"
    files.write(model, src, "torch")

    def edit(header):
        record = json.loads(header["__metadata__"]["lstm_convert.model"])
        record["layers"][0]["num_layers"] = 2 ** 49
        header["__metadata__"]["lstm_convert.model"] = json.dumps(record)

    bad = tmp_path / "bad.safetensors"
    _edit_header(src, bad, edit)
    code, err, peak = memory_of("convert", str(bad), str(tmp_path / "out.pt"), timeout=60)
    assert code == 1 and one_line(err) == (
        f"lstm-convert: error: {bad}: the lstm_convert model record does not match the state dict (layer 'lstm': "
        "the record says num_layers 562949953421312, but the state dict holds num_layers 1)")
    assert peak < 300 * 2 ** 20 and not (tmp_path / "out.pt").exists()


def test_an_onnx_node_without_outputs_is_refused(tmp_path, small_archive):
    """Found by the long fuzz run (the ONNX wire cut): a node with no outputs raised IndexError."""
    import onnx

    model, _ = small_archive
    src = tmp_path / "t.onnx"
    files.write(model, src)
    proto = onnx.load(src)
    node = proto.graph.node[0]
    node.name = ""
    del node.output[:]
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(proto.SerializeToString())
    code, err, _ = cli("inspect", str(bad))
    assert code == 1 and one_line(err) == (f"lstm-convert: error: {bad}: node '{node.op_type}' ({node.op_type}) has "
                                           "no outputs; the file is damaged")
