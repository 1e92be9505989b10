"""Atomic, durable file writes: a reader sees the old file or the new one, never half of one.

Every writer of run folders, checkpoints, figures, exports and downloads goes through
``atomic_path``: write to a temporary file beside the target, fsync it, one ``os.replace``,
then fsync the folder. A failure, Ctrl-C or SIGKILL mid-write leaves the old file (SIGKILL
may leave the temporary, which ``remove_leftovers`` clears); the fsyncs make the same hold
after a power cut or kernel crash, where a rename can otherwise reach the disk before the
bytes it names.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# temporaries are named ".<target name>.<_TAG><random><suffix>", so leftovers can be told apart
_TAG = "partial-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; a finished file gets the permissions open() would give it
_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix rules, e.g. ".png" for matplotlib),
    moved onto ``path`` when the block ends without an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{_TAG}", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
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
