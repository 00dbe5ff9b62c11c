"""Converting many files at once: ``lstm-convert convert SRC... --out-dir DIR --to FORMAT``.

Each source (a file, or every convertible file of a folder, with ``recursive`` of its subfolders too) is
converted by :func:`lstm_convert.files.convert` in a worker process, atomically, into ``out_dir`` under
its own name (its path below the folder it was found in) with the target format's extension. A failure
is the outcome of its file and never stops the others; sources that would land on one destination are
refused before anything is written.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _atomic, formats
from .errors import FormatError, LSTMConvertError, SettingError


@dataclass
class Outcome:
    """What became of one source: ``destination`` written (``verdict``, ``notes``), or ``error``."""

    source: Path
    destination: Path
    seconds: float = 0.0
    verdict: str | None = None
    notes: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None  # "type" and "message"

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {"source": str(self.source), "destination": str(self.destination), "ok": self.ok,
                "verdict": self.verdict, "notes": list(self.notes), "error": self.error,
                "seconds": round(self.seconds, 3)}


def sources(paths: Iterable[str | os.PathLike], *, recursive: bool = False,
            skip: Path | None = None) -> list[tuple[Path, Path]]:
    """``(file, name)`` for every source: a file as it is (named by its file name), a folder's convertible
    files (named by their path below it), in sorted order; ``skip`` (the output folder) is not searched."""
    out = []
    for given in map(Path, paths):
        if given.is_dir():
            found = given.rglob("*") if recursive else given.iterdir()
            for path in sorted(p for p in found if p.is_file() and _convertible(p)):
                if skip is not None and skip.resolve() in path.resolve().parents:
                    continue
                out.append((path, path.relative_to(given)))
        elif given.exists():
            out.append((given, Path(given.name)))
        else:
            raise FormatError(f"{given}: no such file or folder")
    return out


def _convertible(path: Path) -> bool:
    """A file of a folder that a format reads: by its extension, or by its content (a renamed file);
    not the temporary files of a conversion."""
    if path.name.startswith(".") and ".lstm-convert-" in path.name:
        return False
    if any(path.suffix.lower() in f.suffixes for f in formats.every() if f.reads):
        return True
    try:
        formats.detect(path)
    except LSTMConvertError:
        return False
    return True


def plan(found: Sequence[tuple[Path, Path]], out_dir: Path, fmt: str) -> list[Outcome]:
    """Each source's destination in ``out_dir``; a source whose destination another one already takes is
    an outcome with that error."""
    suffix = formats.get(fmt).suffixes[0]
    taken: dict[Path, Path] = {}
    outcomes = []
    for path, name in found:
        destination = out_dir / name.with_suffix(suffix)
        outcome = Outcome(path, destination)
        first = taken.setdefault(destination.resolve(), path)
        if first != path:
            outcome.error = {"type": "FormatError",
                             "message": f"{path}: would be written to {destination}, as {first} is"}
        outcomes.append(outcome)
    return outcomes


def convert_many(paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike, fmt: str, *,
                 recursive: bool = False, jobs: int | None = None, overwrite: bool = False,
                 on_done: Callable[[Outcome, int, int], None] | None = None, **options: Any) -> list[Outcome]:
    """Convert every source to format ``fmt`` in ``out_dir`` (created if need be), in ``jobs`` worker
    processes (default: one per core, at most one per file); ``options`` are those of
    :func:`lstm_convert.files.convert` (``kinds``, ``strict``, ``settings``, ``only``, ``src_format``).
    ``on_done(outcome, done, total)`` is called as each file finishes. The outcomes in the sources' order."""
    if fmt not in formats.NAMES or not formats.get(fmt).writes:
        raise SettingError(f"format {fmt!r} is not one lstm_convert writes; writable: "
                           f"{', '.join(f.name for f in formats.writable())}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FormatError(f"{out_dir}: is not a folder; give a folder to write the files into")
    found = sources(paths, recursive=recursive, skip=out_dir)
    outcomes = plan(found, out_dir, fmt)
    todo = [o for o in outcomes if o.ok]
    total, done = len(outcomes), 0
    for outcome in outcomes:
        if not outcome.ok and on_done is not None:
            done += 1
            on_done(outcome, done, total)
    if not todo:
        return outcomes
    out_dir.mkdir(parents=True, exist_ok=True)
    for outcome in todo:
        outcome.destination.parent.mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    work = [(str(o.source), str(o.destination), fmt, overwrite, options) for o in todo]
    if jobs == 1:
        results = map(_convert_one, work)
        for outcome, result in zip(todo, results):
            done += 1
            _fill(outcome, result, on_done, done, total)
        return outcomes
    import multiprocessing
    import signal
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # Workers start fresh ("spawn"): the parent may hold threads (the progress bar), which forking copies badly.
    # They are born with SIGINT ignored (an ignored signal stays ignored across exec), so Ctrl-C reaches the
    # parent only, at any moment of their start; the parent then stops them with SIGTERM (see _stop).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_start)
        pending = {pool.submit(_convert_one_in_worker, job): outcome for job, outcome in zip(work, todo)}
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    workers = list(getattr(pool, "_processes", {}).values())  # the executor has no public way to them
    stop = functools.partial(_stop, workers, [o.destination for o in todo])
    _STOPPING.append(stop)  # also what the command line's last resort calls, should this thread be stuck
    try:
        for future in as_completed(pending):
            done += 1
            _fill(pending[future], future.result(), on_done, done, total)
    except BaseException:
        stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        _STOPPING.remove(stop)
    pool.shutdown(wait=True)
    return outcomes


_STOPPING: list = []  # in the parent: how to stop the running batches' workers, for an interrupt's last resort
_GRACE = 5.0  # seconds a stopped worker has to remove its temporary file and end before it is killed


def _stop(workers: list, destinations: list[Path], grace: float = _GRACE) -> None:
    """Stop the workers: SIGTERM (on which each removes its temporary file and ends); any still running
    ``grace`` seconds later (stuck where no signal handler runs) is killed, and the temporary files it left
    beside ``destinations`` are removed here."""
    for process in workers:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace
    for process in workers:
        process.join(max(0.0, deadline - time.monotonic()))
    stuck = [process for process in workers if process.is_alive()]
    for process in stuck:
        process.kill()
        process.join(grace)
    pids = {process.pid for process in workers if process.pid is not None}
    for destination in destinations:
        _atomic.remove_temporaries_of(destination, pids)


def _worker_start() -> None:
    import signal

    from ._hdf5 import _die_with_parent

    signal.signal(signal.SIGTERM, _terminated)
    _die_with_parent(signal.SIGTERM)  # a parent killed outright still stops its workers, which then clean up


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM in a worker: its temporary file is removed and it ends, at once. No exception is raised
    through the conversion: libraries on the way swallow ``KeyboardInterrupt`` (Keras' saving has a bare
    ``except:``; an import's lock callback reports and drops it), after which the worker would go on, or
    wait forever on a lock the interrupted import held."""
    _atomic.remove_unfinished()
    os._exit(128 + signum)


def _convert_one_in_worker(job: tuple) -> dict[str, Any]:
    return _convert_one(job)


def _fill(outcome: Outcome, result: Mapping[str, Any], on_done, done: int, total: int) -> None:
    outcome.seconds, outcome.verdict = result["seconds"], result.get("verdict")
    outcome.notes, outcome.error = list(result.get("notes", [])), result.get("error")
    if on_done is not None:
        on_done(outcome, done, total)


def _convert_one(job: tuple) -> dict[str, Any]:
    """In a worker: one conversion, its outcome as plain data (a failure included, never raised)."""
    from . import files

    src, dst, fmt, overwrite, options = job
    start = time.perf_counter()
    try:
        report = files.convert(src, dst, dst_format=fmt, overwrite=overwrite, **options)
    except LSTMConvertError as exc:
        return {"seconds": time.perf_counter() - start, "error": {"type": type(exc).__name__,
                                                                  "message": exc.cli_text()}}
    except MemoryError:
        return {"seconds": time.perf_counter() - start,
                "error": {"type": "FormatError", "message": f"{src}: converting it needs more memory than is free"}}
    except Exception as exc:  # noqa: BLE001 - a bug of this library, reported as one, for this file only
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return {"seconds": time.perf_counter() - start,
                "error": {"type": "InternalError", "message": f"{src}: internal error ({type(exc).__name__}"
                          f"{': ' + text if text else ''}); this is a bug in lstm-convert: please report it"}}
    return {"seconds": time.perf_counter() - start, "verdict": report.verdict,
            "notes": [str(getattr(note, "cli", note)) for note in report.notes]}
