"""Model files: which format a path holds, reading it into a :class:`Model`, writing one out.

=========  =====================  ==========================================
format     extensions             read / write
=========  =====================  ==========================================
keras      .keras                 read without Keras; written through Keras
h5         .h5, .hdf5             legacy Keras model files, read only
torch      .pt, .pth              a state dict (torch.save / torch.load weights_only)
torch      .safetensors           a state dict in safetensors (``--to torch``)
archive    .safetensors           the canonical archive (the default for .safetensors)
onnx       .onnx                  LSTM / GRU / RNN operators, Dense, Embedding (onnx, onnxruntime)
=========  =====================  ==========================================

Reading a ``.safetensors`` file tells the archive from a PyTorch state dict
by its metadata. Writing checks that the target can hold every layer exactly
before any file is touched, and the file appears complete or not at all.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .canonical import Model
from .errors import FormatError, LSTMConvertError

FORMATS = ("keras", "h5", "torch", "archive", "onnx")
_BY_SUFFIX = {".keras": "keras", ".h5": "h5", ".hdf5": "h5", ".pt": "torch", ".pth": "torch",
              ".safetensors": "archive", ".onnx": "onnx"}
_WRITABLE = {"keras": (".keras",), "torch": (".pt", ".pth", ".safetensors"), "archive": (".safetensors",),
             "onnx": (".onnx",)}


def detect(path: str | os.PathLike, declared: str | None = None) -> str:
    """The format of an existing file: ``declared`` if given, else from its extension and content."""
    path = Path(path)
    if declared is not None:
        if declared not in FORMATS:
            raise FormatError(f"unknown format {declared!r}; expected one of {', '.join(FORMATS)}")
        return declared
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise FormatError(f"{path}: cannot tell the format from the extension {path.suffix!r}; "
                          f"use one of {', '.join(sorted(_BY_SUFFIX))} or say it with --from")
    if fmt == "archive" and path.is_file() and not _is_archive(path):
        return "torch"
    return fmt


def target_format(path: str | os.PathLike, declared: str | None = None) -> str:
    """The format to write ``path`` in: ``declared`` if given, else from the extension."""
    path = Path(path)
    fmt = declared or _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise FormatError(f"{path}: cannot tell the format to write from the extension {path.suffix!r}; "
                          "use .keras, .pt, .pth, .safetensors or .onnx, or say it with --to")
    if fmt not in _WRITABLE:
        raise FormatError(f"{path}: cannot write format {fmt!r}; writable: {', '.join(_WRITABLE)}")
    if path.suffix.lower() not in _WRITABLE[fmt]:
        raise FormatError(f"{path}: format {fmt!r} is written to {' or '.join(_WRITABLE[fmt])} files, "
                          f"not {path.suffix!r}")
    return fmt


def read(path: str | os.PathLike, fmt: str | None = None, *, kinds: Mapping[str, str] | None = None,
         header_only: bool = False, check: bool = True) -> Model:
    """Read any supported file into a :class:`Model`.

    ``header_only`` (for ``inspect``): safetensors files are not read past their
    header, and the arrays are placeholders with the right shapes and dtypes.
    An archive's tensors are checked against their SHA-256 unless ``check`` is False.
    """
    path = Path(path)
    fmt = detect(path, fmt)
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    try:
        return _read(path, fmt, kinds, header_only, check)
    except LSTMConvertError:
        raise
    except _MALFORMED as exc:  # what third-party parsers raise on damaged bytes
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise FormatError(f"{path}: not a readable {fmt} file ({type(exc).__name__}"
                          + (f": {message})" if message else ")")) from None


_MALFORMED = (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError, EOFError, AttributeError,
              OverflowError, UnicodeError, zipfile.BadZipFile, zlib.error, struct.error)


def _read(path: Path, fmt: str, kinds: Mapping[str, str] | None, header_only: bool, check: bool) -> Model:
    if fmt == "keras":
        from .adapters.keras_files import read_keras
        return read_keras(path)
    if fmt == "h5":
        from .adapters.keras_files import read_h5
        return read_h5(path)
    if fmt == "torch":
        from .adapters import torch_files
        if path.suffix.lower() == ".safetensors":
            return torch_files.read_safetensors(path, kinds=kinds, header_only=header_only)
        return torch_files.read_pt(path, kinds=kinds)
    if fmt == "onnx":
        from .adapters import onnx
        return onnx.read(path)
    from .adapters import safetensors
    loaded = safetensors.read(path, header_only=header_only, check=check)
    return loaded if isinstance(loaded, Model) else Model((loaded,), source=loaded.source)


@dataclass
class Report:
    """What a conversion wrote, and what the target does not keep (settings that are not weights)."""

    path: Path
    format: str
    notes: list[str] = field(default_factory=list)


def write(model: Model, path: str | os.PathLike, fmt: str | None = None, *, overwrite: bool = False,
          module: str | os.PathLike | None = None) -> Report:
    """Write ``model`` to ``path``, refusing before writing anything if the target cannot hold it exactly.

    ``module`` (with a PyTorch target) also writes a Python file whose ``Model`` computes the model from
    the state dict (see :mod:`lstm_convert.adapters.torch_module`).
    """
    path = Path(path)
    fmt = target_format(path, fmt)
    for target in (path, *([Path(module)] if module is not None else [])):
        if target.exists() and not overwrite:
            raise FormatError(f"{target}: already exists; pass --overwrite (overwrite=True) to replace it")
        if not target.parent.is_dir():
            raise FormatError(f"{target}: the directory {target.parent} does not exist")
    if module is not None:
        if fmt != "torch":
            raise FormatError(f"{module}: --module writes a PyTorch module beside a .pt or PyTorch .safetensors "
                              f"state dict, not beside a {fmt} file")
        if Path(module).suffix != ".py":
            raise FormatError(f"{module}: a module file must end in .py")
    check(model, fmt, module=module is not None)
    report = Report(path, fmt, notes=_dropped(model, fmt, path, module is not None))
    if module is not None:  # made before anything is written
        from .adapters import torch_module

        text = torch_module.source(model, origin=model.source.get("framework", ""))
    if fmt == "keras":
        from .adapters.keras_files import write_keras
        write_keras(model, path)
    elif fmt == "torch":
        from .adapters import torch_files
        if path.suffix.lower() == ".safetensors":
            torch_files.write_safetensors(model, path)
        else:
            torch_files.write_pt(model, path)
    elif fmt == "onnx":
        from .adapters import onnx
        onnx.write(model, path)
    else:
        from .adapters import safetensors
        safetensors.write(model, path)
    if module is not None:
        from ._files import atomic_write

        atomic_write(module, lambda tmp: tmp.write_text(text, encoding="utf-8"), suffix=".py")
    return report


def check(model: Model, fmt: str, *, module: bool = False) -> None:
    """Raise UnsupportedError if ``fmt`` cannot hold ``model`` exactly (with ``module``, a PyTorch state dict
    and the module that computes the model from it)."""
    if fmt == "keras":
        from .adapters.keras import check_chain, check_model
        check_chain(model)
        check_model(model)
    elif fmt == "torch":
        from .adapters.torch import state_chunks
        state_chunks(model)  # refuses what no PyTorch module holds; joins nothing
        if module:
            from .adapters import torch_module
            torch_module.check(model)
    elif fmt == "onnx":
        from .adapters.onnx import check_model
        check_model(model)


def non_finite(model: Model) -> list[str]:
    """The tensors that hold NaN or infinity (bfloat16 checked through float32)."""
    import numpy as np

    bad = []
    for name, array in model.tensors():
        values = array.astype(np.float32) if array.dtype.name == "bfloat16" else array
        if not np.isfinite(values).all():
            bad.append(name)
    return bad


def non_finite_of(path: str | os.PathLike, fmt: str, *, kinds: Mapping[str, str] | None = None) -> list[str]:
    """The tensors of a file that hold NaN or infinity: from an archive's header (recorded when it was
    written), else from the values."""
    if fmt == "archive":
        import json

        from . import _safetensors

        try:
            recorded = json.loads(_safetensors.File(path).metadata.get(_safetensors.NON_FINITE, "null"))
        except ValueError:
            recorded = None
        if isinstance(recorded, list):
            return [str(name) for name in recorded]
    return non_finite(read(path, fmt, kinds=kinds, check=False))


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, src_format: str | None = None,
            dst_format: str | None = None, overwrite: bool = False,
            kinds: Mapping[str, str] | None = None, strict: bool = False,
            settings: Mapping[str, Mapping[str, object]] | None = None,
            module: str | os.PathLike | None = None) -> Report:
    """Read ``src`` and write it to ``dst``; the source is never modified. ``strict`` refuses weights
    that hold NaN or infinity; ``settings`` states what the source cannot say (``{"lstm":
    {"return_sequences": False}}``, see :func:`lstm_convert.canonical.with_settings`); ``module`` also
    writes a PyTorch module file (see :func:`write`)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise FormatError(f"{dst}: is the source file; write to another path")
    fmt = target_format(dst, dst_format)
    if dst.exists() and not overwrite:
        raise FormatError(f"{dst}: already exists; pass --overwrite to replace it")
    src_fmt = detect(src, src_format)
    model = read(src, src_fmt, kinds=kinds, check=False)
    if settings:
        from .canonical import with_settings
        model = with_settings(model, settings)
    check(model, fmt, module=module is not None)
    if strict:
        bad = non_finite(model)
        if bad:
            raise FormatError(f"{src}: tensor {bad[0]} holds NaN or infinity"
                              + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "") + "; refused by --strict")
    if src_fmt != "archive":
        return write(model, dst, fmt, overwrite=overwrite, module=module)
    # The archive's digests are checked in another thread while the destination is written; the
    # destination is renamed into place only if they match.
    from concurrent.futures import ThreadPoolExecutor

    from ._files import guard
    from .adapters.safetensors import verify

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(verify, src)
        with guard(pending.result):
            return write(model, dst, fmt, overwrite=overwrite, module=module)


def _dropped(model: Model, fmt: str, path: Path, module: bool = False) -> list[str]:
    """What the written file does not compute by itself, and what it changes without changing the function."""
    skipped = model.config.get("keras", {}).get("skipped", [])
    notes = [f"skipped {entry}: the identity at inference" for entry in skipped]
    semantics = model.semantics()
    if fmt == "torch" and semantics and not module:
        notes.append(f"the state dict keeps every weight exactly, but not what the model computes around them "
                     f"({'; '.join(semantics)}); pass --module FILE.py for a module that does (lstm_convert "
                     "records it in the file, so verify and convert read it back)")
    if fmt == "onnx":
        notes += [f"{layer.name}: dtype {layer.dtype} is written as float32, exactly" for layer in model.layers
                  if layer.dtype in ("float16", "bfloat16")]
    return notes


def _is_archive(path: Path) -> bool:
    from . import _safetensors
    from .adapters.safetensors import is_archive
    from .errors import LSTMConvertError

    try:
        return is_archive(_safetensors.File(path).metadata)
    except LSTMConvertError:
        return True  # let the archive reader report what is wrong
