"""Files that several processes may write at once.

Two engines started together (lichess-bot with ``concurrency: 2``, a
tournament) can export the same ONNX graph or convert the same checkpoint at
the same moment. :func:`atomic_path` gives each writer its own temporary file
beside the target and renames it into place, so readers see either the old
file or a complete new one (:func:`write_bytes` and :func:`write_text` for
whole files); :func:`atomic_folder` does the same for a folder of files
written together (a set of shards); :func:`remove_stale_temps` is the one
cleaner of what killed writers left; :func:`file_lock` lets the second
process wait for the first and reuse its result instead of redoing the work.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

#: Every temporary file (and folder) that this package writes is named
#: ``.<target name>.<writer pid>.<random>.tmp`` and lives beside its target.
#: The pid lets :func:`remove_stale_temps` tell a dead writer's leftovers
#: from the file of a run that is still writing.
TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_path(target: str | os.PathLike[str]) -> Path:
    """A new, empty, uniquely named temporary file beside ``target`` (see :data:`TEMP_SUFFIX`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    return Path(name)


def temp_folder(target: str | os.PathLike[str]) -> Path:
    """A new, empty, uniquely named temporary folder beside ``target`` (named like :func:`temp_path`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=target.parent))


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary path in the target's folder, flushed to disk and
    renamed onto ``target`` on success.

    The temporary name is unique and carries the writer's pid, so concurrent
    writers never share it. If the block raises, the temporary file is
    removed and ``target`` is left as it was. The block may write the path in
    place or replace it with a new file; either way the result gets the usual
    permissions (``0o666`` less the umask), not mkstemp's private ``0o600``.
    """
    target = Path(target)
    tmp = temp_path(target)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # on disk before the rename, so a crash never leaves a torn file
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # after the block: a writer may have replaced the file
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (see :func:`atomic_path`)."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``target`` atomically (see :func:`atomic_path`)."""
    write_bytes(target, text.encode(encoding))


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str], owns: Callable[[str], bool] = lambda name: True) -> Iterator[Path]:
    """A new, empty folder whose contents replace the folder ``target`` when the block succeeds.

    The block fills the new folder, which lies beside ``target``. If the block
    raises, the new folder is removed and ``target`` is left as it was, so a
    failure never leaves a partial set of files. On success the new folder
    takes the place of ``target`` with two renames, and the old folder is
    removed (``target`` is missing only between the two renames, never half
    full).

    ``owns(name)`` says which entries of the old ``target`` the new contents
    replace. If the old folder holds anything else (the user's own files, the
    very inputs that were read), or cannot be renamed (a mount point, where
    the new folder is made inside ``target`` instead), the owned entries are
    replaced one by one and everything else stays; so also when ``target``
    holds the current working folder. A symbolic link to a folder stays a
    link: the folder it points to is replaced. The new folder keeps the old
    one's permissions, or gets the usual ``0o777`` less the umask. Folders that
    a killed writer of the same target left beside it are removed first (see
    :func:`remove_stale_temps`).
    """
    target = Path(os.path.abspath(target))
    if target.is_symlink():
        target = target.resolve()
    mounted = os.path.ismount(target)
    cwd = Path.cwd().resolve()
    busy = cwd == target.resolve() or target.resolve() in cwd.parents  # renaming it would strand the shell
    new = temp_folder(target / target.name if mounted else target)
    remove_stale_temps(new.parent, target=target.name)  # what a killed writer of the same folder left
    try:
        yield new
        _put_folder(new, target, owns, whole=not (mounted or busy))
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def _put_folder(new: Path, target: Path, owns: Callable[[str], bool], whole: bool) -> None:
    """Move the filled folder ``new`` into the place of ``target`` (see :func:`atomic_folder`)."""
    if not target.is_dir():
        os.chmod(new, 0o777 & ~_umask())
        os.replace(new, target)
        return
    os.chmod(new, stat.S_IMODE(os.stat(target).st_mode))
    old_entries = [name for name in os.listdir(target) if target / name != new]
    if whole and all(owns(name) for name in old_entries):
        old = temp_folder(target)
        os.rmdir(old)  # only its unique name is needed; renaming onto a folder fails on Windows
        os.replace(target, old)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    # One entry at a time: the owned old entries go aside, the new ones move in.
    aside = temp_folder(target / "replaced")
    moved_aside: list[str] = []
    moved_in: list[str] = []
    try:
        for name in old_entries:
            if owns(name) or (new / name).exists():
                os.replace(target / name, aside / name)
                moved_aside.append(name)
        for name in sorted(os.listdir(new)):
            os.replace(new / name, target / name)
            moved_in.append(name)
    except BaseException:
        for name in moved_in:  # undo, so that the old set is whole again
            with contextlib.suppress(OSError):
                os.replace(target / name, new / name)
        for name in moved_aside:
            with contextlib.suppress(OSError):
                os.replace(aside / name, target / name)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    os.rmdir(new)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or cannot be asked: keep its files
    return True


def remove_stale_temps(folder: str | os.PathLike[str], target: str | None = None) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` that a dead writer left behind.

    Only names of this module's scheme are touched (with ``target``, only
    those of that target name), and only when the pid in the name is not a
    running process on this machine: the temporary files of another run that
    is still writing into the same folder stay. Returns what was removed.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        found = _TEMP_NAME.match(path.name)
        if found is None or (target is not None and found["target"] != target) or _pid_alive(int(found["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


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
