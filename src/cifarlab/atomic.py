"""Atomic, durable file writes: a reader sees the old file or the new one, never half of one.

Every writer of run folders, checkpoints, figures, exports and downloads goes through
``atomic_path``: write to a temporary file beside the target, fsync it, one ``os.replace``,
then fsync the folder. A failure, Ctrl-C or SIGKILL mid-write leaves the old file (SIGKILL
may leave the temporary, which ``remove_leftovers`` clears); the fsyncs make the same hold
after a power cut or kernel crash, where a rename can otherwise reach the disk before the
bytes it names.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from cifarlab.errors import CifarlabError

# temporaries are named ".<target name>.<_TAG><random><suffix>", so leftovers can be told apart
_TAG = "partial-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; a finished file gets the permissions open() would give it
_FILE_MODE = 0o666 & ~_umask()


# a write refused by the disk's side, not by the program: one line for the user, no traceback
_DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                errno.EFBIG: "the file is too large for the file system", errno.EROFS: "the file system is read-only",
                errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


_ADVICE: ContextVar[str | None] = ContextVar("cifarlab_write_advice", default=None)


def write_error(exc: OSError, path: str | Path, then: str | None = None) -> CifarlabError | None:
    """The one-line error for a write to ``path`` that the disk refused (full, quota, read-only,
    permission); None for any other OSError. Every writer of the package uses this wording;
    ``then`` (or the enclosing ``write_advice``) replaces the default advice."""
    why = _DISK_ERRNOS.get(exc.errno)
    if why is None:
        return None
    then = then or _ADVICE.get() or ("free some space (or choose another folder) and run again; a file that "
                                     "was there before is unchanged")
    return CifarlabError(f"cannot write {path}: {why}; {then}")


@contextmanager
def write_advice(then: str) -> Iterator[None]:
    """Inside the block, a write the disk refuses advises ``then`` (e.g. how to resume a run)."""
    token = _ADVICE.set(then)
    try:
        yield
    finally:
        _ADVICE.reset(token)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix rules, e.g. ".png" for matplotlib),
    moved onto ``path`` when the block ends without an exception. A write the disk refuses
    (full, read-only, ...) is a one-line CifarlabError (``write_error``); ``path`` is untouched."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{_TAG}", suffix=suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        if (error := write_error(exc, path)) is None:
            raise
        raise error from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    # writers close their own handles (torch.save, savefig); fsync acts on the file, any fd will do
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)  # Windows commits writable fds only
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or creation inside ``folder`` durable (POSIX; Windows cannot open folders)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems (network, FUSE) refuse fsync on a folder: nothing more to do
        pass
    finally:
        os.close(fd)


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporaries a killed writer left in ``folder``; returns what was removed.

    Only for a folder no other process is writing to (a run folder being resumed).
    """
    removed = []
    for tmp in Path(folder).glob(f".*.{_TAG}*"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
