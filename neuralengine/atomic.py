"""Files that several processes may write at once.

Two engines started together (lichess-bot with ``concurrency: 2``, a
tournament) can export the same ONNX graph or convert the same checkpoint at
the same moment. :func:`atomic_path` gives each writer its own temporary file
beside the target and renames it into place, so readers see either the old
file or a complete new one; :func:`file_lock` lets the second process wait
for the first and reuse its result instead of redoing the work.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

#: Temporary files are named ``.<target name>.<random>.tmp``.
TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary path in the target's folder, flushed to disk and
    renamed onto ``target`` on success.

    The temporary name is unique (:func:`tempfile.mkstemp`), so concurrent
    writers never share it. If the block raises, the temporary file is
    removed and ``target`` is left as it was. The file gets the usual
    permissions (``0o666`` less the umask), not mkstemp's private ``0o600``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as fh:  # on disk before the rename, so a crash never leaves a torn file
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file that guards the creation of ``target``: ``<target>.lock``."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block.

    Other processes asking for the same lock wait until it is released. POSIX
    uses ``flock``, Windows ``msvcrt.locking``. Where the lock file cannot be
    created (a read-only folder) or neither is available, the block runs
    unlocked: the atomic renames still keep every file whole. The lock file
    stays behind; removing it could let two processes lock different files.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+b")
    except OSError:
        yield
        return
    with fh:
        unlock = _lock(fh)
        try:
            yield
        finally:
            unlock()


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike[str], on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the folder ``path`` for the block, leaving no file behind.

    POSIX ``flock`` on the folder itself; another process asking for it waits
    (``on_wait`` is called once, first, so that it can say so). Where folders
    cannot be locked (Windows) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock(fh: IO[bytes]) -> Callable[[], None]:
    """Take the lock on the open file ``fh``; returns the function that releases it."""
    fileno = fh.fileno()
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        fcntl.flock(fileno, fcntl.LOCK_EX)
        return lambda: fcntl.flock(fileno, fcntl.LOCK_UN)
    try:
        import msvcrt
    except ImportError:
        return lambda: None
    os.lseek(fileno, 0, os.SEEK_SET)  # msvcrt locks bytes from the current position
    while True:
        try:
            msvcrt.locking(fileno, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
            break
        except OSError:  # LK_LOCK gives up after about 10 s; keep waiting
            continue

    def release() -> None:
        os.lseek(fileno, 0, os.SEEK_SET)
        msvcrt.locking(fileno, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]

    return release
