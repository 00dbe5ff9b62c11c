"""Reading and writing the safetensors format tensor by tensor, with NumPy alone.

The format: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
(``{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets"}}``,
offsets relative to the end of the header), then the tensors' bytes,
contiguous, little-endian. Files written here are read by the safetensors
library and the other way round.

Reading maps the file and returns read-only arrays that view it: nothing is
copied until a tensor is used, and the header is checked against the file
before any of them is touched. Writing streams each tensor, given as chunks to
write one after the other (the gate blocks of a stacked tensor need not be
joined first), so memory never holds a second copy of the file.
"""

from __future__ import annotations

import json
import math
import operator
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from json.encoder import (
    encode_basestring_ascii as _quoted,  # what json.dumps writes of a str
)
from pathlib import Path
from typing import Any, NamedTuple

from . import _dtypes
from ._atomic import open_output
from ._gc import paused
from ._json import loads as _loads
from ._lazy import ITEMSIZE, Placeholder, np
from ._optional import require
from ._stream import SMALL, Stream
from .errors import FormatError

DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
          "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64",
          "BOOL": "bool"}
CODES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class _Duplicate(Exception):
    pass


def _unique_keys(pairs: list) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


class Entry(NamedTuple):  # a tuple: 16,000 of them are made in a few milliseconds
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class File:
    """An opened safetensors file: its metadata, its entries, and arrays viewing the mapped file.

    :meth:`open` returns the file last opened if it is the same, unchanged (recognising a file's format
    and then reading it parse its header once: 16,000 entries take about 0.15 s).
    """

    _last: tuple[tuple, File] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> File:
        try:
            info = os.stat(path)
            key = (os.path.realpath(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        except OSError:
            return cls(path)
        if cls._last is not None and cls._last[0] == key:
            return cls._last[1]
        opened = cls(path)
        cls._last = (key, opened)
        return opened

    @paused()
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as handle:
                head = handle.read(8)
                if len(head) < 8:
                    raise FormatError(f"{self.path}: not a safetensors file (shorter than its 8-byte header length)")
                length = int.from_bytes(head, "little")
                if length > min(size - 8, _MAX_HEADER):
                    raise FormatError(f"{self.path}: not a safetensors file (header length {length} exceeds "
                                      f"the file's {size} bytes)")
                raw = handle.read(length)
        except FileNotFoundError:
            raise FormatError(f"{self.path}: no such file") from None
        try:
            header = _loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
        except _Duplicate as exc:
            raise FormatError(f"{self.path}: the header names tensor {exc} twice") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise FormatError(f"{self.path}: not a safetensors file (header is not JSON: {exc})") from None
        if not isinstance(header, dict):
            raise FormatError(f"{self.path}: not a safetensors file (header is not a JSON object)")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise FormatError(f"{self.path}: __metadata__ must map names to strings")
        self.metadata: dict[str, str] = metadata
        self.data_start = 8 + length
        self.entries = {name: self._entry(name, info, size - self.data_start) for name, info in header.items()}
        spans = sorted((e.begin, e.end, e.name) for e in self.entries.values())
        position = 0
        for begin, end, name in spans:
            if begin != position:
                raise FormatError(f"{self.path}: tensor {name} starts at byte {begin}, expected {position} "
                                  "(tensors overlap or leave a gap)")
            position = end
        self._map: np.ndarray | None = None

    def _entry(self, name: str, info: object, available: int) -> Entry:
        if type(info) is dict and len(info) == 3:  # most entries: checked at once, the message found below
            code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
            dtype = DTYPES.get(code) if type(code) is str else None
            if dtype is not None and type(shape) is list and type(offsets) is list and len(offsets) == 2:
                begin, end = offsets
                count = 1
                for dim in shape:
                    if type(dim) is not int or dim < 0:
                        break
                    count *= dim
                else:
                    if type(begin) is int and type(end) is int and 0 <= begin <= end <= available \
                            and end - begin == count * ITEMSIZE[dtype]:
                        return Entry(name, dtype, tuple(shape), begin, end)
        if not isinstance(info, dict):
            raise FormatError(f"{self.path}: tensor {name}: header entry is not an object")
        dtype = DTYPES.get(info["dtype"]) if isinstance(info.get("dtype"), str) else None
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if dtype is None:
            raise FormatError(f"{self.path}: tensor {name} has dtype {info.get('dtype')!r}, not one lstm_convert reads")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise FormatError(f"{self.path}: tensor {name} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise FormatError(f"{self.path}: tensor {name} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        itemsize = ITEMSIZE[dtype]
        if not 0 <= begin <= end <= available or end - begin != math.prod(shape) * itemsize:
            raise FormatError(f"{self.path}: tensor {name} claims {math.prod(shape)} x {itemsize} bytes at "
                              f"[{begin}, {end}), but the file holds {available} bytes of data")
        return Entry(name, dtype, tuple(shape), begin, end)

    def keys(self) -> list[str]:
        """Tensor names in the order of their data."""
        return [e.name for e in sorted(self.entries.values(), key=lambda e: e.begin)]

    def dtype(self, name: str) -> np.dtype:
        dtype = self.entries[name].dtype
        if dtype == "bfloat16":
            require("ml_dtypes")  # registers bfloat16 with NumPy
        return np.dtype(dtype)

    def mismatches(self, digests: Mapping[str, str], block: int = 1 << 20) -> list[str]:
        """The tensors whose bytes do not hash to the recorded SHA-256 (all of them are checked).

        The file is read in blocks into one reused buffer rather than mapped, so that checking costs no
        memory beside a mapping of the same file (which resident-memory figures would count twice).
        """
        from hashlib import sha256

        bad = []
        buffer = bytearray(block)
        with open(self.path, "rb", buffering=0) as handle:
            for name in self.keys():
                entry = self.entries[name]
                digest = sha256()
                handle.seek(self.data_start + entry.begin)
                left = entry.end - entry.begin
                while left:
                    count = handle.readinto(memoryview(buffer)[:min(block, left)])
                    if not count:
                        break
                    digest.update(memoryview(buffer)[:count])
                    left -= count
                if left or digests.get(name) != digest.hexdigest():
                    bad.append(name)
        return bad

    def placeholder(self, name: str) -> Placeholder:
        """The tensor's shape and dtype, from the header alone (no values, no NumPy)."""
        entry = self.entries[name]
        return Placeholder(entry.shape, entry.dtype)

    def array(self, name: str) -> np.ndarray:
        """A read-only array viewing the tensor's bytes in the mapped file."""
        entry = self.entries[name]
        dtype = self.dtype(name)
        if entry.end == entry.begin:
            return np.zeros(entry.shape, dtype)
        if self._map is None:  # a plain array over the mapping: slicing an np.memmap costs 5 us a tensor
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r").view(np.ndarray)
        return self._map[self.data_start + entry.begin:self.data_start + entry.end].view(dtype).reshape(entry.shape)


_RUN = 1 << 20  # bytes of small tensors written with one call


def _is_small(array: np.ndarray) -> bool:
    """Whether a tensor of this one chunk is written and inspected with the other small ones: at most
    :data:`SMALL` bytes, C-ordered and little-endian (its bytes are then the array's buffer as it is)."""
    return 0 < array.nbytes <= SMALL and array.flags.c_contiguous and array.dtype.byteorder != ">"


def metadata_digests(metadata: Mapping[str, str], own: str) -> dict[str, str]:
    """The SHA-256 of the UTF-8 bytes of every metadata value but ``own`` (the key they are recorded
    under), by key, in key order: what lets a reader name the key that was changed."""
    from hashlib import sha256

    return {key: sha256(str(metadata[key]).encode("utf-8")).hexdigest() for key in sorted(metadata) if key != own}


_SECOND = operator.itemgetter(1)
_HEX = operator.methodcaller("hexdigest")


def _rows(*columns: list[str] | str) -> str:
    """The rows of ``columns`` joined, each row its columns' strings one after the other (a str column is the
    same in every row): one join, where formatting each row would run Python code per row."""
    count = next(len(c) for c in columns if not isinstance(c, str))
    pieces: list[str] = [""] * (count * len(columns))
    for k, column in enumerate(columns):
        pieces[k::len(columns)] = [column] * count if isinstance(column, str) else column
    return "".join(pieces)


def _entries(quoted_names: list[str], heads: list[str], begins: list[int], ends: list[int]) -> str:
    """The header's tensor entries, as json.dumps writes them (``"name":{"dtype":..,"shape":[..],
    "data_offsets":[b,e]}``), each followed by a comma."""
    return _rows(quoted_names, ":{", heads, ',"data_offsets":[', list(map(str, begins)), ",", list(map(str, ends)),
                 "]},")


def _entry_head(dtype: np.dtype, shape: tuple[int, ...]) -> str:
    return f'"dtype":"{CODES[_dtypes.name(dtype)]}","shape":[{",".join(map(str, shape))}]'


def _described_arrays(pairs: list[tuple[str, np.ndarray]], arrays: list[np.ndarray]) -> tuple[list, list, list, list]:
    """Names, JSON-quoted names, the plan of writing ``(name, array, small)`` and the header entries of tensors
    that are each one array, computed by map() over them all: no Python code runs per tensor."""
    from itertools import accumulate

    names = list(map(operator.itemgetter(0), pairs))
    kinds = list(zip(map(_DTYPE, arrays), map(_SHAPE, arrays)))
    sizes = list(map(_NBYTES, arrays))
    ends = list(accumulate(sizes))
    heads = {kind: _entry_head(*kind) for kind in set(kinds)}
    quoted_names = list(map(_quoted, names))
    parts = _entries(quoted_names, list(map(heads.__getitem__, kinds)), [0, *ends[:-1]], ends)
    swapped = {dtype for dtype, _ in heads if dtype.byteorder == ">"}
    small = [0 < size <= SMALL and contiguous for size, contiguous in zip(sizes, map(_C_CONTIGUOUS, arrays))]
    if swapped:
        small = [is_small and dtype not in swapped for is_small, (dtype, _) in zip(small, kinds)]
    return names, quoted_names, list(zip(names, arrays, small)), parts


def _described_chunks(pairs: list[tuple[str, Any]]) -> tuple[list, list, list, list]:
    """What :func:`_described_arrays` gives, of tensors given as chunks (or as other arrays), one by one."""
    names, quoted_names, plan, parts, offset = [], [], [], [], 0
    for name, chunks in pairs:
        if not isinstance(chunks, (list, tuple)):
            chunks = [chunks]
        chunks = [c if type(c) is np.ndarray else np.asarray(c) for c in chunks]
        first = chunks[0]
        if any(c.dtype != first.dtype or c.shape[1:] != first.shape[1:] for c in chunks):
            raise ValueError(f"{name}: chunks differ in dtype or trailing shape")
        if len(chunks) == 1:
            shape, nbytes, small = first.shape, first.nbytes, _is_small(first)
        else:
            shape = (sum(c.shape[0] for c in chunks), *first.shape[1:]) if first.ndim else ()
            nbytes, small = sum(c.nbytes for c in chunks), False
        label = _quoted(name)
        parts.append(_entries([label], [_entry_head(first.dtype, shape)], [offset], [offset + nbytes]))
        names.append(name)
        quoted_names.append(label)
        plan.append((name, first if small else chunks, small))
        offset += nbytes
    return names, quoted_names, plan, "".join(parts)


_DTYPE, _SHAPE, _NBYTES = operator.attrgetter("dtype"), operator.attrgetter("shape"), operator.attrgetter("nbytes")
_C_CONTIGUOUS = operator.attrgetter("flags.c_contiguous")


@paused()
def write(path: str | os.PathLike, tensors: Iterable[tuple[str, Sequence[np.ndarray]]],
          metadata: Mapping[str, str], *, digests: str | None = None, non_finite: str | None = None,
          header_digest: str | None = None, finish: Callable[[dict[str, str]], dict[str, str]] | None = None
          ) -> None:
    """Write ``(name, chunks)`` pairs: each tensor is its chunks one after the other (each C-ordered), whose
    leading axes concatenate; the dtype and trailing shape are the first chunk's. A tensor of one chunk may
    be given as the array itself.

    With ``digests``, the metadata key under which the SHA-256 of every tensor is recorded (as JSON), and
    ``non_finite``, the key under which the names of the tensors holding NaN or infinity are. The
    hashes are computed in a second thread while the data is written, and the header, whose length does
    not depend on them, is written again at the end. With ``header_digest``, the metadata key under which
    the SHA-256 of every other metadata value is recorded (see :func:`metadata_digests`). ``finish`` may
    change the metadata of the final header (values of the same length: what was known only at the end).
    """
    from hashlib import sha256

    # Each tensor's header entry, as json.dumps would write it, and whether it is small (see _is_small).
    # Per tensor this is all the work there is before the bytes: a state dict of thousands of small tensors
    # pays it thousands of times, so where every tensor is one array it is done by map() over them all.
    pairs = tensors if isinstance(tensors, list) else list(tensors)
    items = list(map(_SECOND, pairs))
    if set(map(type, items)) <= {np.ndarray}:
        names, quoted_names, plan, parts = _described_arrays(pairs, items)
    else:
        names, quoted_names, plan, parts = _described_chunks(pairs)
    del items
    if len(set(names)) != len(names):
        raise ValueError(f"tensor names given twice: {sorted(n for n in set(names) if names.count(n) > 1)[:5]}")
    if "__metadata__" in names:
        raise ValueError("a tensor cannot be named __metadata__")
    bad_names: list[str] = []
    # What json.dumps({"__metadata__": ..., **entries}) would give, the entries' part serialised once.
    tensors_json = "," + parts[:-1] if parts else ""
    del parts

    def header(hashes: Sequence[str] | None, bad: list[str], last: bool = False) -> bytes:
        """The header, with ``hashes`` the digests in the order of the tensors (None: an empty digests value)."""
        meta = dict(metadata) if not (last and finish) else finish(dict(metadata))
        if digests:  # what json.dumps of the {name: digest} object gives, joined at C speed
            meta[digests] = "" if hashes is None else "{" + _rows(quoted_names, ':"', hashes, '",')[:-1] + "}" \
                if names else "{}"
        if non_finite:
            meta[non_finite] = json.dumps(bad[:100] + ([f"... {len(bad) - 100} more"] if len(bad) > 100 else []))
        if header_digest:
            meta[header_digest] = json.dumps(metadata_digests(meta, header_digest), separators=(",", ":"))
        return ('{"__metadata__":' + json.dumps(meta, separators=(",", ":")) + tensors_json + "}").encode("utf-8")

    if digests:
        # The final header (digests, and which tensors hold NaN or infinity) is written at the end, in the
        # space reserved here: the length of the header with digests of 64 zeros, counted rather than built
        # (joining and escaping 32,000 digests twice cost a fifth of writing them), and 8 KB more.
        joined = "".join(quoted_names)
        text = 1 + len(joined) + 68 * len(names) if names else 2  # {"name":"<64 hex digits>",...}
        escaped = text + joined.count('"') + 2 * len(names) + joined.count("\\")  # as a JSON string's inside
        reserved = len(header(None, [])) + escaped + 8192
        placeholder = b" " * (reserved + -reserved % 8)
    else:
        placeholder = header(None, [])
        placeholder += b" " * (-len(placeholder) % 8)
    hashers: dict[str, Any] = {}  # of the tensors written in pieces, made as their first piece comes

    def inspect(name: str, piece: np.ndarray) -> None:
        hasher = hashers.get(name)
        if hasher is None:
            hasher = hashers[name] = sha256()
        hasher.update(piece.view(np.uint8).data)
        values = piece.astype(np.float32) if _dtypes.name(piece.dtype) == "bfloat16" else piece
        if values.dtype.kind == "f" and not np.isfinite(values).all() and name not in bad_names:
            bad_names.append(name)

    done: dict[str, str] = {}  # digests of the small tensors, hashed whole

    def inspect_run(keys: list[str], arrays: list[np.ndarray], joined: bytes) -> None:
        done.update(zip(keys, map(_HEX, map(sha256, arrays))))
        kinds = {array.dtype for array in arrays}
        if len(kinds) == 1 and arrays[0].dtype.kind == "f" and _dtypes.name(arrays[0].dtype) != "bfloat16":
            if np.isfinite(np.frombuffer(joined, arrays[0].dtype)).all():  # one scan for all of them
                return
        for key, array in zip(keys, arrays):
            values = array.astype(np.float32) if _dtypes.name(array.dtype) == "bfloat16" else array
            if values.dtype.kind == "f" and not np.isfinite(values).all() and key not in bad_names:
                bad_names.append(key)

    with open_output(path) as out:
        out.write(len(placeholder).to_bytes(8, "little"))
        out.write(placeholder)
        stream = Stream(out, inspect if digests else None)
        try:
            run: list[tuple[str, np.ndarray]] = []
            size = 0
            for name, chunks, small in plan:
                if small:  # chunks is the array
                    run.append((name, chunks))
                    size += chunks.nbytes
                    if size < _RUN:
                        continue
                if run:
                    stream.write_small(run, inspect_run if digests else None)
                    run, size = [], 0
                if not small:
                    for chunk in (chunks,) if type(chunks) is np.ndarray else chunks:
                        stream.write(name, chunk)
            if run:
                stream.write_small(run, inspect_run if digests else None)
            stream.finish()
        finally:
            stream.close()
        if digests:
            bad = set(bad_names)  # in the order of the tensors, whichever thread found them
            empty = sha256().hexdigest()  # a tensor of no bytes is never inspected
            hashes = list(map(done.__getitem__, names)) if len(done) == len(names) else [
                done.get(name) or (hashers[name].hexdigest() if name in hashers else empty) for name in names]
            final = header(hashes,
                           [n for n in names if n in bad], last=True)
            if len(final) > len(placeholder):  # finish() lengthened a value beyond the reserved space
                raise ValueError(f"the final header ({len(final)} bytes) outgrew the {len(placeholder)} reserved")
            final += b" " * (len(placeholder) - len(final))
            out.seek(8)
            out.write(final)
