"""Where long work says how far it is: the library announces, the command line shows.

The library calls :func:`phase` (``verify``: reading, running A, running B), :func:`expect` (the bytes a
conversion is about to write) and :func:`writing` / :func:`written` (around the temporary file of
``_atomic.atomic_write``); without a reporter installed (:func:`reporting`), each is a no-op. The command
line installs :class:`Bar` only when stderr is a terminal and neither ``--quiet`` nor ``--json`` is given,
so that no progress ever reaches a pipe, a log or JSON output.

The bar is tqdm's (well kept, pure Python, no dependencies of its own, and it handles terminal width,
rates and redrawing); it is imported only when a bar is shown. The bytes written are read from the
temporary file's size by a thread, so that every writer, whatever writes its bytes (this package,
h5py, NumPy), is followed without being changed.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_REPORTER: contextvars.ContextVar[Any] = contextvars.ContextVar("lstm_convert_reporter", default=None)


@contextlib.contextmanager
def reporting(reporter: Any) -> Iterator[None]:
    """Within this block, progress goes to ``reporter`` (None: nowhere)."""
    token = _REPORTER.set(reporter)
    try:
        yield
    finally:
        _REPORTER.reset(token)
        if reporter is not None:
            reporter.close()


def phase(name: str, index: int, count: int) -> None:
    """Step ``index`` (from 1) of ``count``, called ``name``, begins."""
    reporter = _REPORTER.get()
    if reporter is not None:
        reporter.phase(name, index, count)


def expect(nbytes: int) -> None:
    """The next file written will be about ``nbytes`` long."""
    reporter = _REPORTER.get()
    if reporter is not None:
        reporter.expect(nbytes)


def writing(tmp: Path, destination: Path) -> None:
    reporter = _REPORTER.get()
    if reporter is not None:
        reporter.writing(tmp, destination)


def written() -> None:
    reporter = _REPORTER.get()
    if reporter is not None:
        reporter.written()


class Bar:
    """Progress on stderr with tqdm: the current phase, and a bar of bytes while a file is written.

    A thread redraws both every ``tick`` seconds from what the library reported last (the bytes from the
    temporary file's size), and draws nothing until ``delay`` seconds have passed, so that quick commands
    show nothing. A writer that assembles its file elsewhere first (Keras' zip) still shows its phase and
    the time it has taken.
    """

    def __init__(self, delay: float = 0.5, stream: Any = None, tick: float = 0.1):
        self.delay, self.stream, self.tick = delay, stream or sys.stderr, tick
        self.start = time.monotonic()
        self.expected = 0
        self.step: tuple[str, int, int] | None = None
        self.target: tuple[Path, Path] | None = None
        self.bars: dict[str, Any] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def phase(self, name: str, index: int, count: int) -> None:
        with self.lock:
            self.step = (name, index, count)
            self._draw_if_due()  # a new phase is shown at once, not at the next tick

    def expect(self, nbytes: int) -> None:
        self.expected = nbytes

    def writing(self, tmp: Path, destination: Path) -> None:
        with self.lock:
            self.target = (tmp, destination)
            self._draw_if_due()

    def written(self) -> None:
        with self.lock:
            self.target = None
            self._close("bytes")

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            with self.lock:
                self._draw_if_due()

    def _draw_if_due(self) -> None:
        if time.monotonic() - self.start >= self.delay:
            self._draw()

    def _draw(self) -> None:
        from tqdm import tqdm

        if self.step is not None:
            name, index, count = self.step
            bar = self.bars.get("phase")
            if bar is None:
                bar = self.bars["phase"] = tqdm(total=count, file=self.stream, leave=False,
                                                bar_format="{desc} [{n_fmt}/{total_fmt}, {elapsed}]")
            bar.set_description_str(name, refresh=False)
            bar.n = index - 1
            bar.refresh()
        if self.target is not None:
            tmp, destination = self.target
            try:
                size = os.stat(tmp).st_size
            except OSError:
                size = 0
            bar = self.bars.get("bytes")
            if bar is None:
                bar = self.bars["bytes"] = tqdm(total=self.expected or None, file=self.stream, leave=False,
                                                unit="B", unit_scale=True, unit_divisor=1024,
                                                desc=f"writing {destination.name}")
            if bar.total is not None and size > bar.total:
                bar.total = size
            bar.n = size
            bar.refresh()

    def _close(self, key: str) -> None:
        bar = self.bars.pop(key, None)
        if bar is not None:
            bar.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with self.lock:
            for key in list(self.bars):
                self._close(key)


class Timings:
    """``--verbose``: how long each phase and each write took, on stderr."""

    def __init__(self, inner: Any = None, stream: Any = None):
        self.inner, self.stream = inner, stream or sys.stderr
        self.start = self.last = time.perf_counter()
        self.current: str | None = None
        self.own_lap = False

    def _lap(self, starting: str | None) -> None:
        now = time.perf_counter()
        if self.current is not None:
            print(f"lstm-convert: {self.current}: {now - self.last:.2f} s", file=self.stream)
        self.current, self.last = starting, now

    def phase(self, name: str, index: int, count: int) -> None:
        self._lap(name)
        if self.inner is not None:
            self.inner.phase(name, index, count)

    def expect(self, nbytes: int) -> None:
        if self.inner is not None:
            self.inner.expect(nbytes)

    def writing(self, tmp: Path, destination: Path) -> None:
        self.own_lap = self.current != f"writing {destination}"  # not the conversion's own writing phase
        if self.own_lap:
            self._lap(f"writing {destination}")
        if self.inner is not None:
            self.inner.writing(tmp, destination)

    def written(self) -> None:
        if self.inner is not None:
            self.inner.written()
        if self.own_lap:
            self._lap(None)
            self.own_lap = False

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
        self._lap(None)
        print(f"lstm-convert: total: {time.perf_counter() - self.start:.2f} s", file=self.stream)
