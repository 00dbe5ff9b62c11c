"""Writing arrays into a file in pieces, with a second thread inspecting what was written.

Each tensor is written in pieces of at most :data:`PIECE` bytes. A second thread inspects (hashes,
scans) the pieces already written, a batch behind the writer, so that the two overlap on two cores;
small tensors share one hand-off, so 8,000 of them cost a few hundred hand-offs, not 8,000. Once a
batch is inspected, the pages its pieces occupy in a memory-mapped source are dropped from this
process's mapping (they stay in the system's page cache, and are read from the file again if touched),
so resident memory stays a few pieces whatever the size of the file.

Where another thread hashes beside the writing (the source file's SHA-256 for an archive's provenance, or
an archive source's recorded digests checked), the writer inspects its own pieces instead (see
:func:`beside`): two threads hashing on two cores finish sooner than three sharing them, the writer
waiting on the one that hashes its pieces (measured: 0.61 s against 0.72 s for a 369 MB file).
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ._lazy import np

if TYPE_CHECKING:  # the pool is imported by the writer that starts one (inspect and --help start none)
    from concurrent.futures import Future

PIECE = 1 << 20  # bytes per piece, and at most per hand-off to the inspecting thread
# A tensor this small is inspected at once by the writing thread: handing it over costs more than
# inspecting it, and hashlib holds the lock that would let the two threads overlap below 2 KB anyway.
SMALL = 64 << 10
_BESIDE = [0]  # how many threads hash beside the writing now (see beside())


@contextlib.contextmanager
def beside() -> Iterator[None]:
    """Within the block another thread hashes beside the writing: a :class:`Stream` made in it inspects its
    pieces in the writing thread."""
    _BESIDE[0] += 1
    try:
        yield
    finally:
        _BESIDE[0] -= 1


class Stream:
    """``write(key, array)`` appends the array's bytes (C order, little-endian) to ``out``;
    ``inspect(key, piece)``, if given, is called on every piece, the pieces of one key in order: in a second
    thread, or in this one for a tensor of at most :data:`SMALL` bytes (so keys may be inspected out of
    order), and for every piece where another thread hashes beside the writing (see :func:`beside`)."""

    def __init__(self, out, inspect: Callable[[str, np.ndarray], None] | None = None):
        self.out, self.inspect = out, inspect
        self.pool = None
        if inspect is not None and not _BESIDE[0]:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=1)
        self.batch: list[tuple[str, np.ndarray]] = []
        self.size = 0
        self.pending: Future | None = None
        self.handed: str | None = None  # the key of the last piece given to the other thread
        self.written = 0

    def write(self, key: str, array: np.ndarray) -> None:
        data = array if isinstance(array, np.ndarray) else np.asarray(array)
        if not data.flags.c_contiguous:
            data = contiguous(data)
        if data.dtype.byteorder == ">":
            data = data.byteswap().view(data.dtype.newbyteorder("<"))
        flat = data.reshape(-1)  # 1-D, so that a 0-d tensor can be viewed as bytes too
        nbytes = flat.nbytes
        if nbytes <= SMALL and self.inspect is not None and key != self.handed:  # none of its pieces in flight
            if nbytes:
                self.out.write(flat.view(np.uint8))
                self.written += nbytes
                self.inspect(key, flat)
                release(flat)
            return
        if nbytes <= PIECE:  # most tensors: one piece
            if nbytes:
                self._piece(key, flat, nbytes)
            return
        step = max(1, PIECE // flat.itemsize)
        for start in range(0, flat.size, step):
            piece = flat[start:start + step]
            self._piece(key, piece, piece.nbytes)

    def write_small(self, items: list[tuple[str, np.ndarray]], inspect_run: Callable | None) -> None:
        """Small tensors (each C-ordered, little-endian, of at most :data:`SMALL` bytes), one after the other,
        written in one call and inspected together by ``inspect_run(keys, arrays, joined)`` in this thread:
        thousands of them cost a few calls, not thousands."""
        arrays = [array for _, array in items]
        joined = b"".join(arrays)  # each array's buffer is its bytes in C order
        self.out.write(joined)
        self.written += len(joined)
        if inspect_run is not None:
            inspect_run([key for key, _ in items], arrays, joined)
        mapping = _mapping(arrays[0]) if arrays else None
        if mapping is not None and self.pending is None:  # nothing of it is being read by the other thread:
            try:  # every page of the mapping goes at once (thousands of small tensors, one call)
                mapping.madvise(mmap.MADV_DONTNEED, 0, len(mapping))
            except (OSError, ValueError):
                pass
            return
        page = mmap.PAGESIZE
        for array in arrays:
            if array.nbytes >= page:  # a smaller one spans no page of its own to drop
                release(array)

    def _piece(self, key: str, piece: np.ndarray, nbytes: int) -> None:
        if self.inspect is not None and self.batch and self.size + nbytes > PIECE:
            self._hand_off()  # a batch holds at most PIECE bytes (or one piece): what is resident at once
        self.out.write(piece.view(np.uint8))
        self.written += nbytes
        if self.inspect is None:
            release(piece)
            return
        self.batch.append((key, piece))
        self.handed = key
        self.size += nbytes
        if self.size >= PIECE:
            self._hand_off()

    def finish(self) -> None:
        """Wait until every piece written is inspected."""
        if self.batch:
            self._hand_off()
        self._wait()
        if self.pool is not None:
            self.pool.shutdown()

    def close(self) -> None:
        """Stop the inspecting thread without waiting for its result (after an error)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _hand_off(self) -> None:
        self._wait()
        batch, self.batch, self.size = self.batch, [], 0
        if self.pool is None:  # another thread hashes beside: this one inspects its own pieces
            self._inspect_all(batch)
            return
        self.pending = self.pool.submit(self._inspect_all, batch)

    def _inspect_all(self, batch: list[tuple[str, np.ndarray]]) -> None:
        for key, piece in batch:
            self.inspect(key, piece)
            release(piece)  # written before the batch was handed over, and now inspected: its pages may go

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()


def release(array: np.ndarray) -> None:
    """Drop the pages under ``array`` from this process if it views a read-only memory-mapped file
    (``np.memmap``); any other array is left alone."""
    if array.nbytes < mmap.PAGESIZE:
        return
    base = _mapping(array)
    if base is None:
        return
    # A page fault maps more than the page: the whole folio the page cache holds it in (up to 2 MB on this
    # machine's ext4), so touching one tensor maps the edges of its neighbours, which, read out of order (a
    # PyTorch gate block after another), would stay mapped. The 2 MB window of every page touched goes; a
    # neighbour still being read merely faults its pages in again from the page cache.
    begin = array.ctypes.data - np.frombuffer(base, np.uint8, count=1).ctypes.data
    start = begin - begin % _WINDOW
    end = min(begin + array.nbytes + -(begin + array.nbytes) % _WINDOW, len(base))
    try:
        base.madvise(mmap.MADV_DONTNEED, start, end - start)
    except (OSError, ValueError):
        pass


_WINDOW = 2 << 20  # see release()


def _mapping(array: np.ndarray) -> mmap.mmap | None:
    """The read-only memory-mapped file ``array`` views, or None (another array, a closed mapping, or a
    copy-on-write one, which may hold changes that dropping its pages would lose)."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is None:
        return None
    try:
        whole = np.frombuffer(base, np.uint8, count=1)
    except (TypeError, ValueError):  # a closed or empty mapping
        return None
    return None if whole.flags.writeable else base


def contiguous(array: np.ndarray, block: int = 256) -> np.ndarray:
    """A C-ordered copy of ``array`` if it is not one already; a transposed matrix (a Keras gate block)
    is copied in square tiles, which stays in the cache and is about twice as fast as a plain copy."""
    if array.flags.c_contiguous:
        return array
    if array.ndim != 2:
        return np.ascontiguousarray(array)
    out = np.empty(array.shape, array.dtype)
    rows, cols = array.shape
    for i in range(0, rows, block):
        for j in range(0, cols, block):
            out[i:i + block, j:j + block] = array[i:i + block, j:j + block]
    return out
