"""Writing files so that a destination is either complete or untouched.

A file is written under a temporary name beside its destination and renamed into place. Without
permission to replace (:func:`no_replace`, as a conversion without ``--overwrite`` runs) the final step
is a hard link, which fails if the destination appeared meanwhile, so of two conversions racing to one
new path one fails with "already exists" and one whole file remains. A symlink at the destination,
dangling or not, is a file there: it is replaced itself, never written through.

The temporary name holds the writer's process id: a later write beside the same destination removes
what a killed run (its process gone, the file untouched for ten minutes) left behind.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from . import _progress
from .errors import FormatError

_REPLACE = contextvars.ContextVar("lstm_convert_replace", default=True)
_STALE_AFTER = 600  # seconds a dead writer's temporary file is left alone (it may be another machine's)


@contextlib.contextmanager
def no_replace(active: bool = True) -> Iterator[None]:
    """Within this block, writes refuse to replace an existing destination (``active`` False: they may)."""
    token = _REPLACE.set(not active)
    try:
        yield
    finally:
        _REPLACE.reset(token)


def exists(path: str | os.PathLike) -> bool:
    """Whether anything is at ``path``: a file, a folder, or a symlink, even one that leads nowhere."""
    return os.path.lexists(path)


def open_output(path: str | os.PathLike):
    """Open ``path`` to be written from its start, as a binary file object, creating it if need be.

    A new or empty file (the temporary file :func:`atomic_write` made) is not truncated: on ext4,
    truncating a file arms its flush-on-close, so that ``close()`` would wait until the whole file is on
    disk. A file that holds data is truncated, as ``open(path, "wb")`` would.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
        return os.fdopen(fd, "r+b")
    except BaseException:
        os.close(fd)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, suffix: str = ".tmp",
                 before_rename: Callable[[], None] | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then ``before_rename()`` (a check that must
    pass, say the source's digests verified in another thread), then rename it into place.

    On any failure the temporary file is removed and ``path`` is left as it was; an I/O error is raised as
    :class:`FormatError` naming ``path``.
    """
    path = Path(path)
    replace = _REPLACE.get()
    if os.path.isdir(path) and not os.path.islink(path):
        raise FormatError(f"{path}: is a directory; give the name of the file to write")
    if not replace and exists(path):
        raise FormatError(f"{path}: already exists", remedy="pass overwrite=True to replace it",
                          hint="pass --overwrite to replace it")
    remove_stale(path)
    # The name is chosen before the file exists, so that an interrupt at any moment finds it to remove.
    tmp_path = path.parent / f".{path.name}.lstm-convert-{os.getpid()}-{os.urandom(6).hex()}{suffix}"
    _UNFINISHED.add(tmp_path)
    try:
        try:
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            _progress.writing(tmp_path, path)
            try:
                write(tmp_path)
            finally:
                _progress.written()
        except OSError as exc:
            raise _io_error(path, exc) from None
        if before_rename is not None:
            before_rename()
        try:
            os.chmod(tmp_path, _mode(path), follow_symlinks=False)  # private while written, then as open() makes it
            if replace:
                os.replace(tmp_path, path)
            else:
                _rename_no_replace(tmp_path, path)
        except OSError as exc:
            raise _io_error(path, exc) from None
    except BaseException:  # an error or an interrupt (Ctrl-C, SIGTERM): remove the partial file, re-raise
        tmp_path.unlink(missing_ok=True)
        raise
    finally:
        _UNFINISHED.discard(tmp_path)
    return path


_UNFINISHED: set[Path] = set()  # the temporary files being written now, by any thread of this process


def remove_unfinished() -> None:
    """Remove every temporary file this process is writing: what a signal handler calls before the process
    ends at once (``os._exit``), when the interrupt cannot be trusted to unwind through the code it stopped."""
    for tmp in list(_UNFINISHED):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def remove_temporaries_of(path: str | os.PathLike, pids: set[int]) -> None:
    """Remove the temporary files beside ``path`` that the processes ``pids`` were writing (processes this
    one stopped, say killed workers: no age limit, unlike :func:`remove_stale`)."""
    path = Path(path)
    prefix = f".{path.name}.lstm-convert-"
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        match = _TMP.match(entry.name, len(prefix) - len(".lstm-convert-"))
        if match is not None and int(match.group(1)) in pids:
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def _mode(path: Path) -> int:
    """The permissions of the file at ``path`` when it is replaced: those of the file it replaces (not of
    what a symlink there points to), else what ``open()`` would give a new file under the umask."""
    try:
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode):
            return stat.S_IMODE(info.st_mode)
    except OSError:
        pass
    return 0o666 & ~umask()


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting it to read it would
    race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _rename_no_replace(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless something is there, atomically: a hard link cannot replace a name."""
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise FormatError(f"{path}: already exists (it appeared while this file was written)",
                          remedy="pass overwrite=True to replace it", hint="pass --overwrite to replace it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        # A file system without hard links: the check and the rename are then two steps.
        if exists(path):
            raise FormatError(f"{path}: already exists", remedy="pass overwrite=True to replace it",
                              hint="pass --overwrite to replace it") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def _io_error(path: Path, exc: OSError) -> FormatError:
    """What the user can act on: which destination, what the system said, and what to do."""
    what = {errno.ENOSPC: "no space left on the device; free some or write elsewhere",
            errno.EDQUOT: "the disk quota is exceeded; free some space or write elsewhere",
            errno.EACCES: f"permission denied: the folder {path.parent} is not writable by you; write elsewhere",
            errno.EPERM: f"not permitted in the folder {path.parent}; write elsewhere",
            errno.EROFS: f"the folder {path.parent} is on a read-only file system; write elsewhere",
            errno.EFBIG: "the file would be larger than the file system allows",
            errno.EISDIR: "is a directory; give the name of the file to write",
            errno.ENOENT: f"the folder {path.parent} does not exist",
            errno.ENOTDIR: f"{path.parent} is not a folder",
            errno.ENAMETOOLONG: "the name is too long"}.get(exc.errno)
    return FormatError(f"{path}: cannot be written: {what or exc.strerror or exc}")


_TMP = re.compile(r"\.lstm-convert-(\d+)-[0-9a-f]{12}")


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporary files a killed run left beside ``path`` (named for it, their process gone, not
    modified for ten minutes); returns those removed."""
    prefix = f".{path.name}.lstm-convert-"
    removed = []
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TMP.match(entry.name, len(prefix) - len(".lstm-convert-"))
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group(1))
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < _STALE_AFTER or _alive(pid):
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
