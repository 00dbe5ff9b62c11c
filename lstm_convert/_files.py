"""Writing files so that a destination is either complete or untouched."""

from __future__ import annotations

import contextlib
import contextvars
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

# Checks that must pass before a written file is renamed into place (say, the source's digests,
# verified in another thread while the destination was being written).
_GUARDS: contextvars.ContextVar[tuple[Callable[[], None], ...]] = contextvars.ContextVar("guards", default=())


@contextlib.contextmanager
def guard(check: Callable[[], None]) -> Iterator[None]:
    """Within this block, every :func:`atomic_write` calls ``check()`` before renaming; if it raises, the
    destination is left as it was."""
    token = _GUARDS.set(_GUARDS.get() + (check,))
    try:
        yield
    finally:
        _GUARDS.reset(token)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    # The name is chosen before the file exists, so that an interrupt at any moment finds it to remove.
    tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
    try:
        os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        write(tmp_path)
        for check in _GUARDS.get():
            check()
        os.replace(tmp_path, path)
    except BaseException:  # an error or an interrupt (Ctrl-C, SIGTERM): remove the partial file, re-raise
        tmp_path.unlink(missing_ok=True)
        raise
    return path
