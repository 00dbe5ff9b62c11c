"""Model files: which format a path holds, reading it into a :class:`Model`, writing one out.

The formats are the registry's (:mod:`lstm_convert.formats`); this module only iterates it. Writing
checks that the target can hold every layer exactly before any file is touched, and the file appears
complete or not at all. Reading names the file in every error: a reader turns what its parser raises on
damaged bytes into :class:`FormatError`; anything else is a bug of this library and is not hidden.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import _atomic, _progress, _stream, formats
from ._gc import paused
from .canonical import Model
from .errors import FormatError

FORMATS = formats.NAMES


def detect(path: str | os.PathLike, declared: str | None = None) -> str:
    """The name of the format of an existing file: ``declared`` if given, else from its content and extension."""
    return formats.detect(path, declared).name


def target_format(path: str | os.PathLike, declared: str | None = None) -> str:
    """The name of the format to write ``path`` in: ``declared`` if given, else from the extension."""
    return formats.for_writing(path, declared).name


@paused()  # thousands of small objects and no cycles: see lstm_convert._gc
def read(path: str | os.PathLike, fmt: str | None = None, *, kinds: Mapping[str, str] | None = None,
         header_only: bool = False, check: bool = True, only: Sequence[str] = (), inventory: bool = False,
         config: object = None, forget_bias: float | None = None) -> Model:
    """Read any supported file into a :class:`Model`.

    ``header_only`` (for ``inspect``): safetensors files are not read past their
    header, and the arrays are placeholders with the right shapes and dtypes.
    An archive's tensors are checked against their SHA-256 unless ``check`` is False.
    ``only`` (shell-style patterns on Keras layer names, state-dict module prefixes, ONNX node or output
    names, archive layer names) reads just the layers they select; what the tool does not convert is
    refused all together unless ``inventory`` (for ``inspect``) lists it in ``model.config["unconverted"]``.
    ``config`` is the architecture of a weights-only file (a legacy Keras ``.h5`` from ``save_weights``): a
    ``.keras`` or ``.json`` file, a model configuration, or a Keras model. ``forget_bias`` is what the LSTM
    cells of a TensorFlow checkpoint added to their forget gates at run time (default: each class's own).
    A checkpoint is named by its prefix or its ``.index`` file.
    """
    path = formats.located(path)
    form = formats.detect(path, fmt)
    if not path.is_file():
        raise FormatError(f"{path}: no such file" if not path.exists() else
                          f"{path}: is a directory, not a file; give the file in it" if path.is_dir() else
                          f"{path}: not a regular file")
    if form.read is None:
        raise FormatError(f"{path}: format {form.name!r} is written, not read")
    if config is not None and not form.architecture:
        raise FormatError(f"{path}: a {form.title} file holds its own architecture; an architecture (--config) is "
                          "given only for a weights-only Keras .h5 or a TensorFlow 2 checkpoint")
    options = formats.ReadOptions(kinds=dict(kinds or {}), header_only=header_only, check=check, only=tuple(only),
                                  inventory=inventory, config=config, forget_bias=forget_bias)
    try:
        model = form.read(path, options)
    except OSError as exc:  # the file itself cannot be read (permissions, a device error)
        raise FormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except MemoryError:  # the readers bound what a file can ask for; this is what the machine lacks
        raise FormatError(f"{path}: reading it needs more memory than this machine has free") from None
    except RecursionError:
        raise FormatError(f"{path}: its structure nests deeper than lstm_convert reads") from None
    if only:  # what the layers were selected by: runners compute just these layers of the file
        import dataclasses

        model = dataclasses.replace(model, config={**model.config, "selected": list(only)})
    return model


@dataclass
class Report:
    """What a conversion wrote, and what the target does not keep (settings that are not weights)."""

    path: Path
    format: str
    notes: list[str] = field(default_factory=list)
    verdict: str = "exact"  # or "weights": a state dict that keeps the weights, the model needing its module


@paused()  # thousands of small objects and no cycles: see lstm_convert._gc
def write(model: Model, path: str | os.PathLike, fmt: str | None = None, *, overwrite: bool = False,
          module: str | os.PathLike | None = None) -> Report:
    """Write ``model`` to ``path``, refusing before writing anything if the target cannot hold it exactly.

    ``module`` (with a format that has one, a PyTorch state dict) also writes a Python file whose
    ``Model`` computes the model from the written file (see :mod:`lstm_convert.adapters.torch_module`).
    """
    path = Path(path)
    form = formats.for_writing(path, fmt)
    _check_destinations(form, path, module, overwrite)
    verdict = form.check(model, module=module is not None)
    verdict.refuse()
    return _write(model, path, form, verdict, module, None, overwrite)


def _check_destinations(form: formats.Format, path: Path, module: str | os.PathLike | None,
                        overwrite: bool) -> None:
    for target in (path, *([Path(module)] if module is not None else [])):
        if _atomic.exists(target) and not overwrite:
            raise FormatError(f"{target}: already exists", remedy="pass overwrite=True to replace it",
                              hint="pass --overwrite to replace it")
        if target.is_dir() and not target.is_symlink():
            raise FormatError(f"{target}: is a directory; give a file name")
        if not target.parent.is_dir():
            raise FormatError(f"{target}: the directory {target.parent} does not exist")
    if module is not None:
        if form.module_source is None:
            raise FormatError(f"{module}: a module file is written beside a PyTorch state dict, not beside "
                              f"{form.title} files")
        if Path(module).suffix != ".py":
            raise FormatError(f"{module}: a module file must end in .py")


def _write(model: Model, path: Path, form: formats.Format, verdict: formats.Verdict,
           module: str | os.PathLike | None, before_rename, overwrite: bool) -> Report:
    """Write a model that ``verdict`` accepted; ``before_rename`` must pass before any file is renamed into place,
    and without ``overwrite`` no file that appears meanwhile at a destination is replaced."""

    model = form.prepared(model)  # a constant the format has no place for, folded into the weights
    skipped = model.config.get("keras", {}).get("skipped", [])
    report = Report(path, form.name, notes=[f"skipped {entry}: the identity at inference" for entry in skipped] + assumed(model) + verdict.notes, verdict=verdict.verdict)
    text = form.module_source(model) if module is not None else None  # made before anything is written
    _progress.expect(sum(array.nbytes for _, array in model.tensors()))
    with _atomic.no_replace(not overwrite):
        try:
            form.write(model, path, before_rename)
        except MemoryError:  # the temporary file is gone already (atomic_write removes it on any exception)
            raise FormatError(f"{path}: writing it needs more memory than this machine has free") from None
        if text is not None:
            _atomic.atomic_write(module, lambda tmp: tmp.write_text(text, encoding="utf-8"), suffix=".py",
                                 before_rename=before_rename)
    return report


@contextlib.contextmanager
def _source_digest(src: Path, form: formats.Format):
    """While an archive is read and written from ``src``: the SHA-256 of ``src``'s bytes, hashed in a thread of
    its own (hashlib lets go of the interpreter), which the archive's final header records. Leaving the block
    stops the hashing (a conversion refused or failed does not wait for it)."""
    if form.name != "archive" or not src.is_file():  # a SavedModel folder: its files are not one file
        yield
        return
    import threading

    from .adapters.archive import SOURCE_DIGEST

    stop = threading.Event()

    def digest() -> str | None:
        from hashlib import sha256

        hasher = sha256()
        with open(src, "rb") as handle:
            view = memoryview(bytearray(256 << 10))  # little memory beside the mapped source
            while not stop.is_set():
                count = handle.readinto(view)
                if not count:
                    return hasher.hexdigest()
                hasher.update(view[:count])
        return None

    pending = _Pending(digest)  # a thread of its own (concurrent.futures would import logging: a megabyte)
    try:
        with _stream.beside():
            token = SOURCE_DIGEST.set(pending)
            try:
                yield
            finally:
                SOURCE_DIGEST.reset(token)
    finally:
        stop.set()
        pending.thread.join()


class _Pending:
    """``work()`` run in a thread of its own; :meth:`result` waits for what it returned (or raises what it
    raised)."""

    def __init__(self, work):
        import threading

        self._value: object = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = work()
            except BaseException as exc:  # handed to the thread that asks for the result
                self._error = exc
        self.thread = threading.Thread(target=run, name="lstm-convert source digest", daemon=True)
        self.thread.start()

    def result(self):
        self.thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def check(model: Model, fmt: str, *, module: bool = False) -> None:
    """Raise UnsupportedError if ``fmt`` cannot hold ``model`` exactly (with ``module``, together with the
    module file that computes the model)."""
    formats.get(fmt).check(model, module=module).refuse()


def assumed(model: Model) -> list[str]:
    """Notes on the settings a source file did not hold and that were taken as PyTorch's defaults (a state
    dict's convolutions and normalisations), with how to state them."""
    names = {"eps": "epsilon"}
    out = []
    for layer in model.layers:
        taken = layer.config.get("torch", {}).get("assumed", [])
        if taken:
            shown = ", ".join(f"{names.get(key, key)}={getattr(layer, names.get(key, key))!r}" for key in taken)
            out.append(f"{layer.name}: the file does not hold {', '.join(names.get(k, k) for k in taken)}; PyTorch's "
                       f"defaults were taken ({shown}): if the module was built otherwise, state it with --set "
                       f"{layer.name}.SETTING=VALUE")
    return out


def non_finite(model: Model) -> list[str]:
    """The tensors that hold NaN or infinity (bfloat16 checked through float32)."""
    import numpy as np

    bad = []
    for name, array in model.tensors():
        values = array.astype(np.float32) if array.dtype.name == "bfloat16" else array
        if not np.isfinite(values).all():
            bad.append(name)
    return bad


def non_finite_of(path: str | os.PathLike, fmt: str, model: Model) -> list[str] | None:
    """The tensors of ``model``, read from ``path``, that hold NaN or infinity: from the file's header where
    the format records them (the archive), else from the values; None when ``model`` was read from the
    header alone (a PyTorch-layout safetensors file for ``inspect``), so its values are unknown."""
    from ._lazy import Placeholder

    form = formats.get(fmt)
    recorded = form.recorded_non_finite(Path(path)) if form.recorded_non_finite is not None else None
    if recorded is not None:
        return recorded
    if any(isinstance(array, Placeholder) for _, array in model.tensors()):
        return None
    return non_finite(model)


@paused()  # thousands of small objects and no cycles: see lstm_convert._gc
def convert(src: str | os.PathLike, dst: str | os.PathLike, *, src_format: str | None = None,
            dst_format: str | None = None, overwrite: bool = False,
            kinds: Mapping[str, str] | None = None, strict: bool = False,
            settings: Mapping[str, Mapping[str, object]] | None = None,
            module: str | os.PathLike | None = None, only: Sequence[str] = (), config: object = None,
            forget_bias: float | None = None) -> Report:
    """Read ``src`` and write it to ``dst``; the source is never modified. ``strict`` refuses weights
    that hold NaN or infinity; ``settings`` states what the source cannot say (``{"lstm":
    {"return_sequences": False}}``, see :func:`lstm_convert.canonical.with_settings`); ``module`` also
    writes a PyTorch module file (see :func:`write`); ``only`` converts just the layers it selects (see
    :func:`read`); ``config`` is the architecture of a weights-only source and ``forget_bias`` what a
    TensorFlow checkpoint's LSTM cells added at run time (see :func:`read`)."""
    src, dst = formats.located(src), Path(dst)
    if dst.is_dir() and not dst.is_symlink():
        raise FormatError(f"{dst}: is a directory; give the name of the file to write")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise FormatError(f"{dst}: is the source file; write to another path")
    form = formats.for_writing(dst, dst_format)
    if _atomic.exists(dst) and not overwrite:
        raise FormatError(f"{dst}: already exists", remedy="pass overwrite=True to replace it",
                          hint="pass --overwrite to replace it")
    # An archive records the SHA-256 of the file it came from: hashed in a thread of its own from here on,
    # beside the reading and the writing.
    with _source_digest(src, form):
        source = formats.detect(src, src_format)
        _progress.phase(f"reading {src}", 1, 3)
        model = read(src, source.name, kinds=kinds, check=source.integrity is None, only=only, config=config,
                     forget_bias=forget_bias)
        _progress.phase("checking the conversion", 2, 3)
        if settings:
            from .canonical import with_settings
            model = with_settings(model, settings)
        _check_destinations(form, dst, module, overwrite)
        verdict = form.check(model, module=module is not None)
        verdict.refuse()
        if strict:
            bad = non_finite(model)
            if bad:
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                raise FormatError(f"{src}: tensor {bad[0]} holds NaN or infinity{more}", remedy="refused by strict=True",
                                  hint="refused by --strict")
        _progress.phase(f"writing {dst}", 3, 3)
        if source.integrity is None:
            report = _write(model, dst, form, verdict, module, None, overwrite)
        else:  # the source's digests are checked in another thread while the destination is written; the
            # destination is renamed into place only if they match
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=1) as pool, _stream.beside():
                pending = pool.submit(source.integrity, src)
                report = _write(model, dst, form, verdict, module, pending.result, overwrite)
    report.notes[:0] = source.read_notes(model) + source.file_notes(src)
    return report
