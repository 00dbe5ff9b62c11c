"""HDF5 files as hostile input: their structure is vetted before any value is read.

HDF5 can make a file read other files (external storage, external links, virtual datasets), run code
(filter plugins are shared libraries it loads), make a small file stand for gigabytes (unallocated
datasets read as fill values, compression without bound), and a damaged file can send the library
into a loop that no signal interrupts, or crash it. So :func:`vet` walks the whole file (every link,
every object's attributes, every dataset's storage) in a child process with a deadline proportional to
the file's size and a memory limit, and refuses by name what it finds. Only a file the child read
without harm is then opened by the caller; what the caller does with it is a part of what the child
did.

Where the platform cannot fork, the walk runs in the process itself, without the deadline.
"""

from __future__ import annotations

import faulthandler
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import FormatError

# HDF5's own filters; any other filter id is a plugin, a shared library HDF5 would load and run.
_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset"}
_MAX_RATIO = 100  # a compressed dataset may hold this many times the bytes it stores, at most
_SLACK = 1 << 20


def deadline(size: int) -> float:
    """Seconds a walk of a file of ``size`` bytes may take: 5, and one more per 20 MB."""
    return 5.0 + size / 20e6


def vet(path: Path, what: str, open_store: Callable[[], Any], size: int) -> None:
    """Walk the HDF5 file that ``open_store()`` opens (``what``: the member of ``path`` it is, say
    ``model.weights.h5``, or empty when it is ``path`` itself) in a child process; FormatError naming ``path`` if the walk refuses it, fails, crashes, or takes
    longer than :func:`deadline` allows."""
    what_ = what or "the file"
    if not hasattr(os, "fork"):
        _walk_file(path, what, open_store, size)
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: walk, report one line, and leave without running any of the parent's exit code
        os.close(read_end)
        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _die_with_parent()
            faulthandler.disable()  # a crash here is reported by the parent, not dumped by a handler inherited
            _limit_memory(size)
            try:
                _walk_file(path, what, open_store, size)
                message = ""
            except FormatError as exc:
                message = "refused\0" + exc.message
            except MemoryError:
                message = f"refused\0{path}: {what_} needs more memory than a file of its size can justify"
            except BaseException as exc:  # noqa: BLE001 - HDF5 failing on damaged bytes: reported, not raised here
                message = f"failed\0{exc if isinstance(exc, OSError) else f'{type(exc).__name__}: {exc}'}"
            os.write(write_end, message.encode("utf-8", "backslashreplace")[:4096])
        except BaseException:  # noqa: BLE001 - nothing may escape the child
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        report = _wait(pid, read_end, deadline(size))
    finally:
        os.close(read_end)
    if report is None:
        raise FormatError(f"{path}: {what_} takes longer than {deadline(size):.0f} s to read as HDF5: "
                          "a damaged or hostile file, refused")
    status, text = report
    if status == "crashed":
        raise FormatError(f"{path}: {what_} crashes the HDF5 library ({text}): a damaged or hostile file, refused")
    if status == "refused":
        raise FormatError(text)
    if status == "failed":
        raise FormatError(f"{path}: {what + ' is ' if what else ''}not a readable HDF5 file ({text})")


def _wait(pid: int, fd: int, seconds: float) -> tuple[str, str] | None:
    """The child's report, ``None`` past the deadline; the child is killed and reaped whatever happens,
    an interrupt of the parent included."""
    end = time.monotonic() + seconds
    chunks = []
    done = False
    try:
        while not done:
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 0.1))
            if ready:
                data = os.read(fd, 4096)
                done = not data
                chunks.append(data)
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    if os.WIFSIGNALED(status):
        return "crashed", f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    if os.WEXITSTATUS(status) != 0:
        return "crashed", f"exit status {os.WEXITSTATUS(status)}"
    if not text:
        return "ok", ""
    status_text, _, message = text.partition("\0")
    return status_text, message


def _die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: the child gets ``sig`` if the parent dies first (even by SIGKILL), so that no child outlives
    the command."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _limit_memory(size: int) -> None:
    """Cap the child's address space at what it has now plus a budget proportional to the file."""
    try:
        import resource

        with open("/proc/self/statm") as statm:
            current = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        budget = current + 4 * size + (512 << 20)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or budget < hard:
            resource.setrlimit(resource.RLIMIT_AS, (budget, hard))
    except (OSError, ValueError, ImportError):  # no /proc, or no limits here: the deadline still holds
        pass


def _walk_file(path: Path, what: str, open_store: Callable[[], Any], size: int) -> None:
    store = open_store()
    try:
        check(path, what, store, size)
    finally:
        store.close()


def check(path: Path, what: str, store: Any, size: int) -> None:
    """Walk every link of an opened HDF5 file: refuse links that lead elsewhere (soft, external, user-defined),
    datasets stored outside it (external storage, virtual datasets), filter plugins, and datasets whose
    declared size their storage does not hold; read every attribute, and the values of compressed or
    chunked datasets, so that what a reader then does has been done once already."""
    import h5py

    seen: set[int] = set()
    budget = [max(10_000, size // 8)]  # objects a file of this size can hold, at most

    def where(name: str) -> str:
        return f"{path}: {what}: {name}" if what else f"{path}: {name}"

    def visit(obj: Any, name: str) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise FormatError(f"{path}: {what or 'the file'} holds more HDF5 objects than its size allows")
        for key in obj.attrs:
            obj.attrs[key]  # noqa: B018 - read once here: a damaged attribute fails in this process, not later
        if isinstance(obj, h5py.Dataset):
            _dataset(obj, where(name))
            return
        if not isinstance(obj, h5py.Group):
            return
        address = h5py.h5o.get_info(obj.id).addr
        if address in seen:
            return
        seen.add(address)
        for key in obj:
            child = f"{name.rstrip('/')}/{key}"
            link = obj.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise FormatError(f"{where(child)} is an external link to {link.filename}:{link.path}: "
                                  "refused (a model file must not read other files)")
            if isinstance(link, h5py.SoftLink):
                raise FormatError(f"{where(child)} is a soft link to {link.path}: refused (Keras writes none)")
            if not isinstance(link, h5py.HardLink):
                raise FormatError(f"{where(child)} is a user-defined link: refused")
            visit(obj[key], child)

    visit(store, "/")


def _dataset(dataset: Any, name: str) -> None:
    import h5py

    plist = dataset.id.get_create_plist()
    if plist.get_external_count():
        files = sorted({plist.get_external(i)[0].decode("utf-8", "replace") for i in range(plist.get_external_count())})
        raise FormatError(f"{name} stores its values in other files ({', '.join(files)}): refused (HDF5 external "
                          "storage; a model file must not read other files)")
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL or dataset.is_virtual:
        raise FormatError(f"{name} is a virtual dataset (its values are read from other datasets or files): refused")
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    plugins = [f for f in filters if f not in _FILTERS]
    if plugins:
        raise FormatError(f"{name} needs HDF5 filter plugin {plugins[0]} (a shared library HDF5 would load): refused")
    declared, stored = dataset.nbytes, dataset.id.get_storage_size()
    if filters:
        if declared > _MAX_RATIO * stored + _SLACK:
            raise FormatError(f"{name} would expand from {stored} to {declared} bytes: refused as a compression bomb")
    elif stored < declared:
        raise FormatError(f"{name} declares {declared} bytes but stores {stored}: refused (its values would be "
                          "made up of fill values)")
    if layout == h5py.h5d.CHUNKED and declared:
        dataset[()]  # noqa: B018 - read once here, where a damaged chunk index cannot hang the caller
