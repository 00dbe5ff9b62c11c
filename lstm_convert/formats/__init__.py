"""The file formats: one module per format, each declaring one :class:`Format`, collected by name.

A format module (``lstm_convert/formats/<name>.py``) ends with ``FORMAT = Format(...)``: its name,
suffixes, how its files are recognised by content, and the verbs

- ``read(path, options) -> Model``,
- ``write(model, path, before_rename)``: atomically, calling ``before_rename()`` last,
- ``check_layer(layer, module) -> LayerVerdict`` and ``check_model(model, module)`` (raising
  UnsupportedError): what the format can hold exactly, used by ``inspect``, ``convert --check`` and
  before anything is written (:meth:`Format.check` combines them),
- ``run(path, model, calls)`` and ``run_layers(path, model, x, states)``: the model, and its layers one
  by one, computed by the format's own runtime where it is installed (for ``verify``),

and what it records: the framework whose tensor layouts and parameter counts its files use, whether
its files take initial states, a digest check, a companion module file. Everything else in the package
(``files``, ``describe``, ``verify``, the command line, the README's format table, the conformance tests)
iterates :func:`every`; nothing outside a format's module branches on its name.

Modules are imported on first use, so naming the formats (for ``--help``) imports none of them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FormatError, LSTMConvertError, UnsupportedError

if TYPE_CHECKING:
    import numpy as np

    from ..canonical import Layer, Model

# The registered formats, in the order a file is tried against them: modules lstm_convert.formats.<name>.
NAMES = ("archive", "keras", "h5", "torch", "npz", "onnx", "tf_checkpoint", "flax", "equinox", "haiku", "tflite")
# What a state dict's keys cannot say, by module prefix (ReadOptions.kinds): a lone 2-D ``weight`` is an
# Embedding or a Linear without bias, an nn.RNN's nonlinearity is tanh or relu, a 3-D weight an nn.Conv1d,
# a 1-D weight an nn.LayerNorm.
KINDS = ("embedding", "linear", "rnn_tanh", "rnn_relu", "conv1d", "layer_norm")


@dataclass(frozen=True)
class ReadOptions:
    """What a reader may be told: ``kinds`` (what a PyTorch state dict cannot say, by module prefix),
    ``header_only`` (placeholders instead of values, for ``inspect``), ``check`` (verify recorded digests),
    ``only`` (shell-style patterns: read just the layers, modules or nodes they select, see :func:`selects`),
    ``inventory`` (for ``inspect``: content the tool does not convert is listed in the model's
    ``config["unconverted"]`` instead of refused), ``config`` (the architecture of a file that holds only
    weights, for formats with :attr:`Format.architecture`), ``forget_bias`` (what a TensorFlow LSTM cell
    added to its forget gate at run time, when not its class's default)."""

    kinds: Mapping[str, str] = field(default_factory=dict)
    header_only: bool = False
    check: bool = True
    only: tuple[str, ...] = ()
    inventory: bool = False
    config: Any = None
    forget_bias: float | None = None


class Note(str):
    """A note on a conversion in the library's terms; ``cli`` says the same in the command line's."""

    cli: str

    def __new__(cls, text: str, cli: str | None = None) -> Note:
        note = super().__new__(cls, text)
        note.cli = cli or text
        return note


@dataclass(frozen=True)
class LayerVerdict:
    """Whether a target holds one layer: ``exact``; ``weights`` (every weight exactly, but not ``needs``,
    what the layer computes around them); or ``impossible`` (``reason``, and what to do instead)."""

    verdict: str
    reason: str = ""
    needs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    error: UnsupportedError | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.verdict == "impossible":
            return {"exact": False, "verdict": "impossible", "reason": self.reason, "needs": []}
        return {"exact": self.verdict == "exact", "verdict": self.verdict, "needs": list(self.needs),
                "notes": list(self.notes)}


EXACT = LayerVerdict("exact")


def verdict_of(reason: str | None, layer: Layer) -> LayerVerdict:
    """The verdict of a weights-only target (a parameter tree): refused with ``reason`` when there is one,
    else every weight kept, exactly when the layer computes nothing beyond them."""
    if reason:
        return refused(UnsupportedError(reason))
    needs = tuple(layer.semantics())
    return LayerVerdict("weights" if needs else "exact", needs=needs)


def refused(error: UnsupportedError) -> LayerVerdict:
    """The verdict of a layer that ``error`` refuses (its message without the layer's name)."""
    return LayerVerdict("impossible", reason=str(error).split(": ", 1)[-1], error=error)


def judged(check: Callable[[Layer], None], layer: Layer, notes: Sequence[str] = ()) -> LayerVerdict:
    """``exact`` (with ``notes``) unless ``check(layer)`` raises UnsupportedError."""
    try:
        check(layer)
    except UnsupportedError as exc:
        return refused(exc)
    return LayerVerdict("exact", notes=tuple(notes))


@dataclass(frozen=True)
class Verdict:
    """Whether a target holds a whole model: per layer, and what stops the model beyond its layers."""

    target: str
    layers: Mapping[str, LayerVerdict]
    model_error: UnsupportedError | None = None
    model_notes: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "impossible"
        return "weights" if self.needs else "exact"

    @property
    def exact(self) -> bool:
        return self.verdict == "exact"

    @property
    def reasons(self) -> list[str]:
        layer_reasons = [f"{name}: {v.reason}" for name, v in self.layers.items() if v.verdict == "impossible"]
        return layer_reasons or ([str(self.model_error)] if self.model_error is not None else [])

    @property
    def needs(self) -> list[str]:
        return [f"{name}: {n}" for name, v in self.layers.items() for n in v.needs]

    @property
    def notes(self) -> list[str]:
        return [*self.model_notes, *(f"{name}: {n}" for name, v in self.layers.items() for n in v.notes)]

    @property
    def error(self) -> UnsupportedError | None:
        """What to raise: the model-level refusal (it names the first layer at fault), else a layer's."""
        if self.model_error is not None:
            return self.model_error
        return next((v.error for v in self.layers.values() if v.error is not None), None)

    def refuse(self) -> None:
        """Raise the refusal, if any."""
        if self.error is not None:
            raise self.error

    def as_dict(self) -> dict[str, Any]:
        return {"exact": self.exact, "verdict": self.verdict, "reasons": self.reasons, "needs": self.needs}


@dataclass(frozen=True)
class Run:
    """A model computed by a format's runtime: its output, the runtime's name, and a note for the user."""

    output: np.ndarray | None  # None: the runtime could not run it, and ``notes`` says why
    runner: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Format:
    """One file format: what it is called, how its files look, and its verbs (see the module docstring).

    ``layouts`` names the framework whose stacked tensors and parameter counts the files use (``None``
    for the canonical archive, which keeps one tensor per gate and role). ``initial_states`` is False
    when the format's models take none (they start from zero); ``runs_stateful`` when ``run`` carries
    states from one call to the next. ``integrity`` checks digests the file
    records, and may run while a conversion's destination is written. ``module_source`` makes the text
    of a Python module that computes the model from the written file (``--module``). ``notes`` says what a
    written file does not keep or changes without changing the function. ``architecture`` when some of its
    files hold only weights, read with an architecture given apart (:attr:`ReadOptions.config`). ``locate``
    maps a path that names the format's file without being it (a checkpoint's prefix) to the file;
    ``companions`` lists the other files a file is read with, each named as the file without its suffix
    plus a tail of its own (a checkpoint's ``.index`` and its ``.data-00000-of-00001``); ``read_notes``
    says what reading a model from the format assumed or changed (from its provenance: a folded constant);
    ``holder`` is what the notes call a file of the format that keeps weights without their model.
    """

    name: str
    title: str
    suffixes: tuple[str, ...]
    holds: str
    recognise: Callable[[Path, bytes], bool]
    layouts: str | None = None
    read: Callable[[Path, ReadOptions], Model] | None = None
    write: Callable[[Model, Path, Callable[[], None] | None], None] | None = None
    check_layer: Callable[[Layer, bool], LayerVerdict] = lambda layer, module: EXACT
    check_model: Callable[[Model, bool], None] = lambda model, module: None
    run: Callable[[Path, Model, list], Run | None] | None = None
    run_layers: Callable[[Path, Model, np.ndarray, dict], list | str] | None = None
    input_dims: Callable[[Path], list] | None = None
    initial_states: bool = True
    integrity: Callable[[Path], None] | None = None
    recorded_non_finite: Callable[[Path], list[str] | None] | None = None
    module_source: Callable[[Model], str] | None = None
    notes: Callable[[Model, bool], list[str]] = lambda model, module: []
    runs_stateful: bool = False
    runtime: str = "the float64 reference"
    architecture: bool = False
    locate: Callable[[Path], Path | None] | None = None
    companions: Callable[[Path], list[Path]] = lambda path: []
    read_notes: Callable[[Model], list[str]] = lambda model: []
    file_notes: Callable[[Path], list[str]] = lambda path: []  # about the file itself (an archive's version)
    recorded: Callable[[Path], dict[str, str]] = lambda path: {}  # what a file records beyond its model
    holder: str = "state dict"  # what a file of weights without their model is called, in the notes
    constants: bool = False  # holds an LSTM's forget_bias constant as such; otherwise it is folded into the bias

    def prepared(self, model: Model) -> Model:
        """``model`` as this format holds it: an LSTM's forget_bias constant folded into its forget gate's bias
        where the format has no such constant (see :func:`lstm_convert.canonical.folded`)."""
        from ..canonical import RecurrentLayer, folded

        if self.constants or not any(isinstance(layer, RecurrentLayer) and layer.forget_bias for layer in model.layers):
            return model
        return folded(model)

    @property
    def reads(self) -> bool:
        return self.read is not None

    @property
    def writes(self) -> bool:
        return self.write is not None

    def check(self, model: Model, *, module: bool = False) -> Verdict:
        """Whether this format holds ``model`` exactly; with ``module``, with the module file of
        :attr:`module_source` beside it."""
        constants = [f"{layer.name}: forget_bias {layer.forget_bias!r}, a constant {self.title}s have no place for, "
                     "is folded into the forget gate's bias (the function stays; the bias's bits change)"
                     for layer in model.layers if getattr(layer, "forget_bias", 0.0) and not self.constants]
        model = self.prepared(model)
        layers = {layer.name: self.check_layer(layer, module) for layer in model.layers}
        error = None
        try:
            self.check_model(model, module)
        except UnsupportedError as exc:
            error = exc
        return Verdict(self.name, layers, error, tuple(constants + self.notes(model, module)))

    def params(self, layer: Layer, model: Model | None = None) -> int:
        """``layer``'s parameters as this format's framework counts them (for the archive: as the
        framework the weights came from; where that is not one the tool writes, as its reader counted them,
        ``source["params"]``)."""
        if self.layouts is None and "params" in layer.source:
            return int(layer.source["params"])
        return layer.count_params(self.counted_as(model))

    def counted_as(self, model: Model | None = None) -> str:
        if self.layouts is not None:
            return self.layouts
        origin = model.source.get("framework") if model is not None else None
        return origin if origin in _COUNTED else "torch"


_COUNTED = ("keras", "torch", "tensorflow", "flax", "equinox", "haiku", "tflite")  # tensorflow, flax: as their readers counted them (source["params"])


def get(name: str) -> Format:
    """The format called ``name``; FormatError naming the known ones."""
    if name not in NAMES:
        raise FormatError(f"unknown format {name!r}; expected one of {', '.join(NAMES)}")
    return importlib.import_module(f".{name}", __name__).FORMAT


def every() -> list[Format]:
    """Every registered format, in :data:`NAMES` order."""
    return [get(name) for name in NAMES]


def writable() -> list[Format]:
    return [f for f in every() if f.writes]


def table() -> str:
    """The README's format table, written from the registry."""
    rows = ["| format | files | holds | read | write | `verify` runs it with |", "|---|---|---|---|---|---|"]
    for f in every():
        rows.append(f"| `{f.name}` | {', '.join(f'`{s}`' for s in f.suffixes)} | {f.holds} | "
                    f"{'yes' if f.reads else 'no'} | {'yes' if f.writes else 'no'} | {f.runtime} |")
    return "\n".join(rows)


def located(path: str | os.PathLike) -> Path:
    """The file ``path`` stands for: itself, or what a format's :attr:`Format.locate` makes of it (a
    TensorFlow checkpoint's prefix or folder stands for its ``.index`` file)."""
    path = Path(path)
    if path.is_file():
        return path
    for name in NAMES:
        form = get(name)
        found = form.locate(path) if form.locate is not None else None
        if found is not None:
            return found
    return path


def detect(path: str | os.PathLike, declared: str | None = None) -> Format:
    """The format of the file at ``path``: ``declared`` if given; else the format of its suffix that
    recognises its content; else, for a suffix no format claims (``.bin``), any format that recognises it;
    else the suffix's format, whose reader then says what is wrong. A file whose content is another
    format than its suffix says (an ONNX model named ``.pt``) is refused, naming what it is: which of the
    two the user meant is theirs to say (``declared``) or to fix (renaming it)."""
    path = located(path)
    if declared is not None:
        return get(declared)
    suffix = path.suffix.lower()
    readers = [f for f in every() if f.reads]
    by_suffix = [f for f in readers if suffix in f.suffixes]
    start = head(path)
    if start is not None:
        for fmt in by_suffix + [f for f in readers if f not in by_suffix]:
            if _recognises(fmt, path, start):
                if by_suffix and fmt not in by_suffix:
                    raise FormatError(f"{path}: this is {_article(fmt.title)} {fmt.title}, not a {path.suffix} file",
                                      remedy=f"read it as format {fmt.name!r} or rename it",
                                      hint=f"pass --from {fmt.name} or rename it")
                return fmt
    if by_suffix:
        return by_suffix[0]
    suffixes = sorted({s for f in readers for s in f.suffixes})
    what = "its content or " if start is not None else ""
    raise FormatError(f"{path}: cannot tell the format from {what}the extension {path.suffix!r}; "
                      f"use one of {', '.join(suffixes)}, or name the format ({', '.join(f.name for f in readers)})")


def _article(title: str) -> str:
    return "an" if title.startswith(("lstm_convert", "ONNX", "a", "e", "i", "o")) else "a"


def _recognises(fmt: Format, path: Path, start: bytes) -> bool:
    """Whether ``fmt`` takes the file; damaged bytes that its recogniser cannot parse mean no (its reader,
    if the file is then given to it, says what is wrong)."""
    try:
        return bool(fmt.recognise(path, start))
    except (LSTMConvertError, OSError, ValueError, RecursionError, MemoryError, EOFError):
        return False


def for_writing(path: str | os.PathLike, declared: str | None = None) -> Format:
    """The format to write ``path`` in: ``declared`` if given, else the first writable format of its suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if declared is not None:
        fmt = get(declared)
        if not fmt.writes:
            raise FormatError(f"{path}: cannot write format {fmt.name!r}; writable: "
                              f"{', '.join(f.name for f in writable())}")
        if suffix not in fmt.suffixes:
            raise FormatError(f"{path}: format {fmt.name!r} is written to {' or '.join(fmt.suffixes)} files, "
                              f"not {path.suffix!r}")
        return fmt
    fmt = next((f for f in writable() if suffix in f.suffixes), None)
    if fmt is None:
        suffixes = ", ".join(dict.fromkeys(s for f in writable() for s in f.suffixes))
        raise FormatError(f"{path}: cannot tell the format to write from the extension {path.suffix!r}; "
                          f"use {suffixes}, or name the format")
    return fmt


def head(path: Path, size: int = 64) -> bytes | None:
    """The first bytes of a regular file, or None if there is none to read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except (IsADirectoryError, FileNotFoundError, PermissionError, NotADirectoryError):
        return None


def selects(patterns: Sequence[str], name: str) -> bool:
    """Whether shell-style ``patterns`` select the layer, module or node ``name`` (every name when there are
    none): a pattern selects the names it matches and everything under a dotted or slashed prefix it matches
    (``decoder`` selects ``decoder.rnn``)."""
    if not patterns:
        return True
    import fnmatch

    prefixes = [name[:i] for i, ch in enumerate(name) if ch in "./"] + [name]
    return any(fnmatch.fnmatchcase(prefix, pattern) for pattern in patterns for prefix in prefixes)


def run_by_layers(module: str, runner: str, run_layers: Callable,
                  note: str) -> Callable[[Path, Model, list], Run | None]:
    """A format's ``run`` made of its ``run_layers``: the model's output is the last layer's, run one after
    another from zero states, where ``module`` (the framework) is installed and the input is one call;
    ``note`` (with ``{name}``, the file's name) says so."""

    def run(path: Path, model: Model, calls: list) -> Run | None:
        import importlib.util

        if importlib.util.find_spec(module) is None or len(calls) > 1:
            return None
        from .._lazy import np

        out = run_layers(path, model, calls[0], None)
        if isinstance(out, str) or out is None:
            return Run(None, "", (out,) if out else ())
        return Run(np.asarray(out[-1][0]), runner, (note.format(name=path.name),))
    return run


def order_by_patterns(names: Sequence[str], patterns: Sequence[str], picks: Callable[[str, str], bool] | None = None
                      ) -> list[str] | None:
    """``names`` in the order of the ``patterns`` that select them, when each pattern selects at most one and
    every name is selected (``picks(pattern, name)``, :func:`selects` by default); None otherwise. How a
    user says in which order separate parts of a file run, where the file does not say."""
    picks = picks or (lambda pattern, name: selects([pattern], name))
    by_pattern: dict[int, list[str]] = {}
    for name in names:
        first = next((k for k, pattern in enumerate(patterns) if picks(pattern, name)), None)
        if first is None:
            return None
        by_pattern.setdefault(first, []).append(name)
    if not patterns or any(len(group) > 1 for group in by_pattern.values()):
        return None
    return [by_pattern[k][0] for k in sorted(by_pattern)]


def check_selection(where: str, patterns: Sequence[str], names: Sequence[str]) -> None:
    """FormatError if a pattern selects none of ``names`` (what the file holds)."""
    for pattern in patterns:
        if not any(selects([pattern], name) for name in names):
            shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
            raise FormatError(f"{where}: the pattern {pattern!r} selects nothing; it holds {shown}",
                              remedy="select with only= patterns on these names",
                              hint="select with --only patterns on these names (lstm-convert inspect lists them)")


def select_layers(model: Model, only: Sequence[str], where: str) -> Model:
    """The layers of ``model`` that ``only`` selects by name, which must follow one another and must not
    take a mask from a layer left out; the model's input stays only when the selection starts at the first."""
    if not only:
        return model
    import dataclasses

    names = [layer.name for layer in model.layers]
    check_selection(where, only, names)
    picked = [i for i, name in enumerate(names) if selects(only, name)]
    gap = next((names[i] for i in range(picked[0], picked[-1] + 1) if i not in picked), None)
    if gap is not None:
        raise UnsupportedError(f"{where}: the selected layers do not follow one another ({gap!r} lies between "
                               "them); select one run of layers")
    before = model.layers[:picked[0]]
    masker = next((layer.name for layer in before if layer.kind == "masking" or getattr(layer, "mask_zero", False)),
                  None)
    if masker is not None:
        raise UnsupportedError(f"{where}: {names[picked[0]]!r} takes the mask that {masker!r} makes, which is not "
                               "selected", remedy=f"select {masker!r} too", hint=f"select {masker!r} too (--only)")
    layers = tuple(model.layers[i] for i in picked)
    if picked[0] == 0:
        return dataclasses.replace(model, layers=layers)
    return dataclasses.replace(model, layers=layers, input_shape=None, input_dtype=None)


def unconverted_error(where: str, entries: Sequence[Mapping[str, Any]], framework: str) -> UnsupportedError:
    """One refusal of everything a file holds that the tool does not convert, grouped by module or layer."""
    parts = []
    for entry in entries:
        tensors = ", ".join(f"{k} {tuple(v)}" for k, v in entry.get("tensors", {}).items())
        kind = entry["type"] if entry["type"] != "module" else ""
        parts.append(f"{entry['name']} ({kind}{': ' if kind and tensors else ''}{tensors})" if kind or tensors
                     else entry["name"])
    said = {entry["name"]: entry["kind"] for entry in entries if entry.get("kind")}  # what the keys cannot tell
    remedy = f"select the recurrent layers with only=[...], or keep the rest in {framework}"
    hint = f"select the recurrent layers with --only PATTERN (lstm-convert inspect lists them), or keep the rest in " \
        f"{framework}"
    if said:
        remedy += f"; or, if they are the modules their keys suggest, say so: kinds={said!r}"
        hint += "; or, if they are the modules their keys suggest, say so: " + " ".join(
            f"--kind {name}={kind}" for name, kind in said.items())
    return UnsupportedError(f"{where}: holds what lstm_convert does not convert: {'; '.join(parts)}",
                            remedy=remedy, hint=hint)


@contextlib.contextmanager
def parsing(path: Path, what: str, documented: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Within this block, the exceptions a parser documents for damaged input (``documented``) become one
    FormatError naming the file; the library's own errors pass; anything else is a bug and is not hidden."""
    try:
        yield
    except LSTMConvertError:
        raise
    except documented as exc:
        text = str(exc).strip()
        detail = f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__
        raise FormatError(f"{path}: not a readable {what} ({detail})") from None


# -- recognising files by content ---------------------------------------------------------------------

def is_zip(head: bytes) -> bool:
    return head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06")


def zip_errors() -> tuple[type[BaseException], ...]:
    """What zipfile and zlib document for a damaged zip: BadZipFile, NotImplementedError (an unknown
    compression or version), RuntimeError (an encrypted member), zlib.error, EOFError, OSError."""
    import zipfile
    import zlib

    return (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError,
            OSError, ValueError)


def zip_names(path: Path) -> list[str]:
    """The member names of a zip file, or [] if it is not one that can be listed."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except zip_errors():
        return []


def is_safetensors(path: Path, head: bytes) -> bool:
    """An 8-byte header length that fits the file, then a JSON object."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    size = int.from_bytes(head[:8], "little")
    try:
        return size + 8 <= path.stat().st_size
    except OSError:
        return False
