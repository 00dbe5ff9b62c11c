"""The canonical archive: one safetensors file, one tensor per gate and role.

Tensor names say layer, stacked index, direction, gate and role::

    <layer name>.l<k>.<forward|reverse>.<gate>.<W_x|W_h|b_x|b_h|p>
    <layer name>.l<k>.<direction>.projection.W_hr     (LSTM with proj_size)
    <layer name>.weight, <layer name>.bias              (Dense, Embedding)
    e.g. lstm.l0.forward.forget.W_h

The ``__metadata__`` header (string values only, as safetensors requires):

==================  =======================================================
key                 value
==================  =======================================================
``format``          ``lstm_convert``
``format_version``  schema version, currently ``2`` (``1`` is still read)
``content``         ``layer`` (one layer was saved) or ``model``
``layers``          JSON list of layer specs, in order (``spec()``)
``model``           JSON object: model-level config and source
``source``          the framework the weights came from (``keras``, ``torch``)
``sha256``          JSON object: tensor name -> SHA-256 of its bytes
``non_finite``      JSON list of the tensors holding NaN or infinity
``metadata_sha256`` JSON object: every other key -> SHA-256 of its value's
                    UTF-8 bytes (version 3 on)
==================  =======================================================

Reading checks that the tensors are exactly those the specs call for, with
the declared dtype and shapes, that their bytes match their SHA-256, and that
every metadata value matches its own (so that a changed configuration is named).
The whole format is specified in ``docs/archive-format.md``.
Needs NumPy alone (see ``_safetensors``).
"""

from __future__ import annotations

import contextvars
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._lazy import np

from .. import _safetensors as st
from .._atomic import atomic_write
from .._gc import paused
from .._json import loads as _loads
from ..canonical import LAYER_TYPES, Layer, Model
from ..errors import FormatError, LSTMConvertError

FORMAT = "lstm_convert"
FORMAT_VERSION = "3"
# Version 1 kept what a model computes (return_sequences, masking, the input) as Keras settings in each
# layer's ``config``; version 2 keeps it in fields of its own; version 3 adds the digest of every metadata
# value. Versions 1 and 2 are read (and upgraded), with a note that their configuration is not covered.
READABLE_VERSIONS = ("1", "2", "3")
UNCOVERED_VERSIONS = ("1", "2")
DIGESTS = "sha256"  # metadata key: JSON object, tensor name -> SHA-256 of its bytes
NON_FINITE = "non_finite"  # metadata key: JSON list of the tensors that hold NaN or infinity
HEADER_DIGESTS = "metadata_sha256"  # metadata key: JSON object, every other key -> SHA-256 of its value
_WHAT = {"layers": "the layers' configuration", "model": "the model's configuration and provenance",
         "sha256": "the tensors' digests", "non_finite": "the list of tensors holding NaN or infinity",
         "format": "the format's name", "format_version": "the format's version", "content": "what was saved",
         "source": "the framework the weights came from"}


# The SHA-256 of the file a conversion reads, computed while the archive is written (a Future), for the
# model's provenance: see lstm_convert.files.convert.
SOURCE_DIGEST: contextvars.ContextVar = contextvars.ContextVar("lstm_convert_source_digest", default=None)
_PENDING = "0" * 64  # what the digest's place holds until it is known


def write(weights: Layer | Model, path: str | os.PathLike, *,
          before_rename: Callable[[], None] | None = None) -> Path:
    """Save a layer or a model as a canonical archive at ``path`` (replaced atomically), tensor by tensor.
    Within :data:`SOURCE_DIGEST`, the model's record gains ``source_file``: the SHA-256 of the file converted
    (beside the model's ``source``, not in it, so that the model read back equals the model written)."""
    model = weights if isinstance(weights, Model) else None
    pending = SOURCE_DIGEST.get() if model is not None else None
    layers = list(model.layers) if model else [weights]
    tensors = [pair for layer in layers for pair in layer.tensors()]  # (name, array): one chunk each
    source = (model or weights).source.get("framework", "unknown")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "content": "model" if model else "layer",
        "layers": json.dumps([layer.spec() for layer in layers], sort_keys=True),
        "model": json.dumps({"config": {k: v for k, v in model.config.items() if k != "archive"},
                             "source": dict(model.source), **model.input_spec(),
                             **({"source_file": {"sha256": _PENDING}} if pending else {})} if model else {},
                            sort_keys=True),
        "source": source,
    }

    def finish(meta: dict[str, str]) -> dict[str, str]:
        digest = pending.result()  # the source file's, hashed beside the writing
        meta["model"] = meta["model"].replace(f'"source_file": {{"sha256": "{_PENDING}"}}',
                                              f'"source_file": {{"sha256": "{digest}"}}', 1)
        return meta

    return atomic_write(path, lambda tmp: st.write(tmp, tensors, metadata, digests=DIGESTS, non_finite=NON_FINITE,
                                                   header_digest=HEADER_DIGESTS, finish=finish if pending else None),
                        before_rename=before_rename)


def is_archive(metadata: dict[str, str] | None) -> bool:
    """Whether safetensors metadata declares an lstm_convert archive."""
    return bool(metadata) and metadata.get("format") == FORMAT


def check_digests(path: str | os.PathLike) -> None:
    """Check every tensor of an archive against the SHA-256 recorded when it was written; FormatError
    naming the tensors that differ."""
    path = Path(path)
    handle = st.File.open(path)
    _specs(path, handle.metadata)
    check_header(path, handle.metadata)
    digests = _json(path, handle.metadata, DIGESTS, dict)
    missing = sorted(set(handle.entries) - set(digests))
    if missing:
        raise FormatError(f"{path}: no SHA-256 recorded for tensors {missing}")
    bad = handle.mismatches(digests)
    if bad:
        raise FormatError(f"{path}: tensor {bad[0]} does not match its SHA-256"
                          + (f" (nor do {len(bad) - 1} more)" if len(bad) > 1 else "")
                          + ": the file was changed or damaged after it was written")


def check_header(path: Path, metadata: dict[str, str]) -> None:
    """FormatError naming the metadata key whose value does not match the SHA-256 recorded for it, or that
    was added or removed after writing (version 3 on; older archives record none)."""
    if metadata.get("format_version") in UNCOVERED_VERSIONS:
        return
    if HEADER_DIGESTS not in metadata:
        raise FormatError(f"{path}: records no digest of its metadata ({HEADER_DIGESTS}), which a version "
                          f"{metadata.get('format_version')} archive has: the header was changed or damaged")
    recorded = _json(path, metadata, HEADER_DIGESTS, dict)
    actual = st.metadata_digests(metadata, HEADER_DIGESTS)
    for key in sorted(set(recorded) | set(actual)):
        if key not in actual:
            problem = "was removed"
        elif key not in recorded:
            problem = "was added"
        elif recorded[key] != actual[key]:
            problem = "does not match its SHA-256"
        else:
            continue
        what = f" ({_WHAT[key]})" if key in _WHAT else ""
        raise FormatError(f"{path}: the metadata key {shown_key(key)}{what} {problem}: the header was changed or "
                          "damaged after it was written")


def shown_key(key: str) -> str:
    return repr(key) if len(key) <= 60 else repr(key[:57] + "...")


@paused()
def read(path: str | os.PathLike, *, header_only: bool = False, check: bool = True) -> Layer | Model:
    """Load a canonical archive: a layer if one was saved, else a :class:`Model`.

    The arrays view the mapped file; every tensor is checked against its
    SHA-256 unless ``check`` is False (the caller then checks, see
    `check_digests`). With ``header_only`` the tensors are not read at all:
    every array is a read-only placeholder of the right shape and dtype that
    takes no memory (for ``inspect``).
    """
    path = Path(path)
    handle = st.File.open(path)
    metadata = handle.metadata
    specs = _specs(path, metadata)
    if check:
        check_header(path, metadata)
    if metadata.get("format_version") == "1":
        specs = [_upgrade_spec(spec) for spec in specs]
    remaining = set(handle.entries)
    layers = [_layer(path, spec, handle, remaining, header_only) for spec in specs]
    if remaining:
        raise FormatError(f"{path}: tensors not described by the metadata: {sorted(remaining)}")
    if check and not header_only:
        check_digests(path)
    if metadata.get("content") == "layer":
        if len(layers) != 1:
            raise FormatError(f"{path}: content 'layer' but {len(layers)} layers described")
        return layers[0]
    model = _json(path, metadata, "model", dict)
    if metadata.get("format_version") == "1":  # the input was a Keras setting
        config = model.get("config") if isinstance(model.get("config"), dict) else {}
        keras = config.get("keras") if isinstance(config.get("keras"), dict) else {}
        moved = ("input_shape", "input_dtype")
        model = {**model, **{key: keras.get(key) for key in moved},
                 "config": {**config, **({"keras": {k: v for k, v in keras.items() if k not in moved}}
                                         if "keras" in config else {})}}
    shape = model.get("input_shape")
    try:
        return Model(tuple(layers), config=model.get("config", {}), source=model.get("source", {}),
                     input_shape=tuple(shape) if isinstance(shape, list) else shape,
                     input_dtype=model.get("input_dtype"), batch_size=model.get("batch_size"))
    except LSTMConvertError as exc:
        raise FormatError(f"{path}: {exc}") from None


def recorded(path: str | os.PathLike) -> dict[str, str]:
    """What the archive records about where it came from beyond its model: ``source_file_sha256``, the SHA-256
    of the file it was converted from (empty when it was saved from objects, or its record is unreadable)."""
    try:
        model = _loads(st.File.open(path).metadata.get("model", "{}"))
    except (ValueError, LSTMConvertError):
        return {}
    found = model.get("source_file") if isinstance(model, dict) else None
    digest = found.get("sha256") if isinstance(found, dict) else None
    return {"source_file_sha256": digest} if isinstance(digest, str) else {}


def version_notes(path: str | os.PathLike) -> list[str]:
    """A note on an archive of a version whose metadata no digest covers."""
    try:
        version = st.File.open(path).metadata.get("format_version")
    except LSTMConvertError:
        return []
    if version not in UNCOVERED_VERSIONS:
        return []
    return [f"this archive is of format version {version}, which records no digest of its metadata: a change to "
            "its layers' configuration would go unseen (convert it to a new archive to cover it)"]


def recorded_non_finite(path: str | os.PathLike) -> list[str] | None:
    """The tensors that held NaN or infinity when the archive was written, as its header records; None
    when it records nothing readable."""
    try:
        recorded = _loads(st.File.open(path).metadata.get(NON_FINITE, "null"))
    except ValueError:
        return None
    return [str(name) for name in recorded] if isinstance(recorded, list) else None


def _upgrade_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A version-1 layer spec in version 2's terms: the Keras settings that say what the layer computes
    become fields (with PyTorch's meaning, the whole sequence and no mask, where none was recorded)."""
    if not isinstance(spec.get("config"), dict):
        return spec  # reported as malformed when the layer is built
    keras = spec["config"].get("keras", {})
    keras = keras if isinstance(keras, dict) else {}
    defaults = {"embedding": {"mask_zero": False},
                "lstm": {"return_sequences": True, "return_state": False, "zero_output_for_mask": False,
                         "stateful": False}}.get("lstm" if spec.get("kind") in ("gru", "rnn") else spec.get("kind"))
    if not defaults:
        return spec
    config = {**spec["config"], "keras": {k: v for k, v in keras.items() if k not in defaults}}
    return {**{key: bool(keras.get(key, value)) for key, value in defaults.items()}, **spec, "config": config}


def _json(path: Path, metadata: dict[str, str], key: str, kind: type) -> Any:
    try:
        value = _loads(metadata[key])
    except (KeyError, ValueError) as exc:
        raise FormatError(f"{path}: metadata {key!r} is missing or not JSON ({exc})") from None
    if not isinstance(value, kind):
        raise FormatError(f"{path}: metadata {key!r} must be a JSON {kind.__name__}")
    return value


def _specs(path: Path, metadata: dict[str, str]) -> list[dict[str, Any]]:
    if not is_archive(metadata):
        raise FormatError(f"{path}: not an lstm_convert archive (metadata format is "
                          f"{metadata.get('format')!r}, expected {FORMAT!r})")
    if metadata.get("format_version") not in READABLE_VERSIONS:
        raise FormatError(f"{path}: archive format_version {metadata.get('format_version')!r} is not "
                          f"supported by this version of lstm_convert (it reads {', '.join(READABLE_VERSIONS)})")
    if metadata.get("content") not in ("layer", "model"):
        raise FormatError(f"{path}: metadata content {metadata.get('content')!r} is not 'layer' or 'model'")
    specs = _json(path, metadata, "layers", list)
    if not all(isinstance(s, dict) for s in specs):
        raise FormatError(f"{path}: metadata 'layers' must be a JSON list of objects")
    return specs


def _layer(path: Path, spec: dict[str, Any], handle: Any, remaining: set[str], header_only: bool) -> Layer:
    kind = spec.get("kind")
    cls = LAYER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise FormatError(f"{path}: unknown layer kind {spec.get('kind')!r}")
    dtype = spec.get("dtype")
    if kind in ("lstm", "gru", "rnn") or "num_layers" in spec:
        # Counts are checked against the tensors the file holds before anything loops over them.
        counts = [spec.get("num_layers"), spec.get("directions")]
        if not all(type(n) is int and n >= 1 for n in counts) or counts[0] * counts[1] > len(remaining):
            raise FormatError(f"{path}: layer spec {spec.get('name')!r} says num_layers {counts[0]!r} and "
                              f"directions {counts[1]!r}, but the file holds {len(remaining)} tensors not yet "
                              "described (at least one per layer and direction is needed)")

    def fetch(name: str) -> np.ndarray:
        if name not in remaining:
            raise FormatError(f"{path}: tensor {name} is missing")
        remaining.discard(name)
        array = handle.placeholder(name) if header_only else handle.array(name)
        if str(array.dtype) != dtype:
            raise FormatError(f"{path}: tensor {name} has dtype {array.dtype}, expected {dtype}")
        return array

    try:
        return cls.from_spec(spec, fetch)
    except KeyError as exc:
        raise FormatError(f"{path}: layer spec {spec.get('name')!r} lacks {exc}") from None
    except (LSTMConvertError, TypeError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{path}: {exc}") from None

