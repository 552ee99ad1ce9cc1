"""Files written whole or not at all, under names nobody can predict.

Every file scorefield writes (checkpoints, metrics, configs, arrays, figures, saved estimators) goes
through ``atomic_output``: the bytes are written to a temporary file that ``tempfile.mkstemp`` creates
in the target's own folder (a random name opened with ``O_CREAT | O_EXCL``, so a symlink planted
beside the target cannot redirect the write, and two threads or processes never share a temporary),
flushed and fsynced, then renamed over the target with ``os.replace``, which is atomic on one file
system. A crash leaves the old file or the new one, never a cut one; a failure removes the temporary,
and ``remove_orphans`` removes those a killed process left behind. ``folder_lock`` makes one process
the only writer of a folder (a run directory) for as long as it holds the lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "TEMP_PREFIX",
    "FolderBusy",
    "atomic_output",
    "atomic_write",
    "folder_lock",
    "fsync_dir",
    "remove_orphans",
]

# temporaries start with this, so a folder's leftovers from a killed process can be recognised
TEMP_PREFIX = ".scorefield-tmp-"


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (where the platform has directory handles)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` (same suffix, so writers that pick a format by it work);
    on a clean exit its contents replace ``path`` whole, on an exception it is removed.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_output(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("whole")
    >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('whole', ['a.txt'])
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may have closed it without syncing
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes | Callable[[Path], object]) -> None:
    """Write ``data`` (bytes, or a function that writes the file at the path it is given) to ``path``
    so that a crash leaves either the old file or the new one, whole. Bytes go through the descriptor
    ``mkstemp`` opened, so not even the temporary's name is reopened."""
    if callable(data):
        with atomic_output(path) as tmp:
            data(tmp)
        return
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)
    fsync_dir(path.parent)


def remove_orphans(folder: str | Path) -> list[Path]:
    """Delete the temporaries (``TEMP_PREFIX``) that a process killed while writing left in ``folder``;
    returns them. Call it only as the folder's one writer (``folder_lock``): a live writer's temporary
    looks the same. Symbolic links are removed as links, never followed."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return []
    removed = [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX) and not p.is_dir()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


class FolderBusy(RuntimeError):
    """Another process holds ``folder_lock`` on the folder."""


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``folder`` itself (its directory descriptor) until the block
    ends; ``FolderBusy`` at once if another process holds it.

    The lock is on the folder's own descriptor rather than on a lock file inside it, so taking it creates
    nothing (a refused command leaves the folder exactly as it was) and the kernel releases it when its
    holder dies, however it dies: a stale lock cannot exist. The folder must exist.
    """
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderBusy(f"{folder} is being written by another process") from None
            raise
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
