"""The canonical archive: one safetensors tensor per layer, direction, gate and role, the configuration
and provenance in its metadata, a SHA-256 per tensor (the schema is :mod:`lstm_convert.adapters.archive`).
It holds every layer exactly."""

from __future__ import annotations

from pathlib import Path

from . import Format, ReadOptions, is_safetensors, parsing, select_layers


def _recognise(path: Path, head: bytes) -> bool:
    if not is_safetensors(path, head):
        return False
    from .. import _safetensors
    from ..adapters.archive import is_archive
    from ..errors import LSTMConvertError

    try:
        return is_archive(_safetensors.File.open(path).metadata)
    except LSTMConvertError:
        return False


def _read(path: Path, options: ReadOptions):
    from ..adapters import archive
    from ..canonical import Model

    with parsing(path, "safetensors file", (OSError, ValueError, RecursionError)):
        loaded = archive.read(path, header_only=options.header_only, check=options.check)
    model = loaded if isinstance(loaded, Model) else Model((loaded,), source=loaded.source)
    return select_layers(model, options.only, str(path))


def _write(model, path: Path, before_rename) -> None:
    from ..adapters import archive

    archive.write(model, path, before_rename=before_rename)


def _integrity(path: Path) -> None:
    from ..adapters import archive

    archive.check_digests(path)


def _recorded_non_finite(path: Path) -> list[str] | None:
    from ..adapters import archive

    return archive.recorded_non_finite(path)


def _file_notes(path: Path) -> list[str]:
    from ..adapters import archive

    return archive.version_notes(path)


def _recorded(path: Path) -> dict[str, str]:
    from ..adapters import archive

    return archive.recorded(path)


FORMAT = Format(
    name="archive", title="lstm_convert archive", suffixes=(".safetensors",),
    holds="the canonical form: one tensor per gate and role, the configuration, what the model computes and "
          "SHA-256 digests; holds every layer exactly",
    recognise=_recognise, read=_read, write=_write, integrity=_integrity,
    recorded_non_finite=_recorded_non_finite, constants=True, file_notes=_file_notes, recorded=_recorded,
)
