"""Writing files so that a destination is either complete or untouched."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, suffix: str = ".tmp",
                 before_rename: Callable[[], None] | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then ``before_rename()`` (a check that must
    pass, say the source's digests verified in another thread), then rename it into place.

    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    # The name is chosen before the file exists, so that an interrupt at any moment finds it to remove.
    tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
    try:
        os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        write(tmp_path)
        if before_rename is not None:
            before_rename()
        os.replace(tmp_path, path)
    except BaseException:  # an error or an interrupt (Ctrl-C, SIGTERM): remove the partial file, re-raise
        tmp_path.unlink(missing_ok=True)
        raise
    return path
