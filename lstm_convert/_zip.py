"""Zip files (``.keras``, ``.pt``) as hostile input: sizes are checked against what the file holds.

A zip's central directory says how large each member is; a crafted one lies. :class:`Zip` checks every
member against its own local header and against the file before anything is read: unique names that
stay inside the archive, data that lies within the file and overlaps no other member's, a stored member
as large as its data, a compressed one expanding at most :data:`MAX_RATIO` times. A member is then
read into a buffer of its declared size, never more.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

from .errors import FormatError

MAX_RATIO = 100  # a compressed member may expand this many times, at most (with a megabyte of slack)
_SLACK = 1 << 20
_LOCAL = struct.Struct("<IHHHHHIIIHH")


class Zip:
    """An opened zip whose every member was checked; ``read(name)`` its bytes, ``names`` in order."""

    def __init__(self, path: str | os.PathLike, what: str = "zip file"):
        self.path = Path(path)
        try:
            self.archive = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise FormatError(f"{self.path}: not a readable {what} ({exc})") from None
        self._starts: dict[str, int] = {}
        try:
            self._check(self.archive.infolist())
        except BaseException:
            self.archive.close()
            raise
        self.names = self.archive.namelist()

    def __enter__(self) -> Zip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.archive.close()

    def getinfo(self, name: str) -> zipfile.ZipInfo:
        return self.archive.getinfo(name)

    def namelist(self) -> list[str]:
        return list(self.names)

    def stored_span(self, name: str) -> tuple[int, int] | None:
        """Where a stored (uncompressed) member's bytes lie in the file, as (offset, size), checked against
        the file like every member; None for a compressed member."""
        info = self.archive.getinfo(name)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        return self._starts[name], info.file_size

    def read(self, name: str) -> bytes:
        """A member's bytes, decompressed into a buffer of its declared size (zipfile reads no further, and
        checks the CRC at the end)."""
        info = self.archive.getinfo(name)
        out = bytearray(info.file_size)
        view = memoryview(out)
        filled = 0
        with self.archive.open(info) as member:
            while filled < len(out):
                got = member.readinto(view[filled:])
                if not got:
                    break
                filled += got
            member.read(1)
        if filled != len(out):
            raise FormatError(f"{self.path}: {name} holds {filled} bytes, not the {info.file_size} it declares")
        view.release()
        return bytes(out)

    def _check(self, infos: list[zipfile.ZipInfo]) -> None:
        size = self.path.stat().st_size
        seen: set[str] = set()
        spans = []
        with open(self.path, "rb") as handle:
            for info in infos:
                name = info.filename
                if name in seen:
                    raise FormatError(f"{self.path}: the zip holds two members named {name!r}: refused")
                seen.add(name)
                parts = name.replace("\\", "/").split("/")
                if name.startswith(("/", "\\")) or ".." in parts or "\0" in name or ":" in parts[0]:
                    raise FormatError(f"{self.path}: zip member {name!r} points outside the archive: refused")
                handle.seek(info.header_offset)
                local = handle.read(_LOCAL.size)
                if len(local) < _LOCAL.size or local[:4] != b"PK\x03\x04":
                    raise FormatError(f"{self.path}: zip member {name!r} has no local header where the central "
                                      "directory says")
                (_, _, flags, method, _, _, _, packed, unpacked, name_length, extra_length) = _LOCAL.unpack(local)
                raw = handle.read(name_length)
                if name not in (raw.decode("utf-8", "replace"), raw.decode("cp437")):
                    raise FormatError(f"{self.path}: zip member {name!r} is named otherwise in its local header")
                if method != info.compress_type:
                    raise FormatError(f"{self.path}: zip member {name!r} has another compression in its local header")
                start = info.header_offset + _LOCAL.size + name_length + extra_length
                if not flags & 0x08 and packed != 0xFFFFFFFF and (packed, unpacked) != (
                        info.compress_size, info.file_size):
                    raise FormatError(f"{self.path}: zip member {name!r} declares {info.compress_size} -> "
                                      f"{info.file_size} bytes in the central directory but {packed} -> {unpacked} "
                                      "in its local header")
                if start + info.compress_size > size:
                    raise FormatError(f"{self.path}: zip member {name!r} claims {info.compress_size} bytes, more "
                                      "than the file holds")
                if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                    raise FormatError(f"{self.path}: zip member {name!r} is stored but declares {info.file_size} "
                                      f"bytes in {info.compress_size}")
                if info.file_size > MAX_RATIO * info.compress_size + _SLACK:
                    raise FormatError(f"{self.path}: {name} would expand from {info.compress_size} to "
                                      f"{info.file_size} bytes: refused as a zip bomb")
                spans.append((info.header_offset, start + info.compress_size, name))
                self._starts[name] = start
        spans.sort()
        for (_, end, name), (begin, _, other) in zip(spans, spans[1:]):
            if begin < end:
                raise FormatError(f"{self.path}: zip members {name!r} and {other!r} overlap: refused")
