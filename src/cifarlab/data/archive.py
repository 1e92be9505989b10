"""Reading a source's files, whether it is a folder, a tar (plain or gzipped) or a zip.

Members are read one at a time, in one sequential pass (far faster than seeking back in a
compressed archive), into ``(relative name, bytes)`` pairs: CIFAR fits in a few hundred MB.
Each member's size is checked against the caps below before its bytes are read, and the
read stops one byte past the size it declared, so a gzip or zip bomb, or a header claiming
terabytes, is refused with one line instead of filling the memory.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
import zlib
from pathlib import Path

from cifarlab.errors import DataError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
# The largest member of an official archive is CIFAR-100's train pickle (150 MiB); an
# image of an image folder is a few KB.
MAX_MEMBER_BYTES = 256 * 2**20
# The largest source, CIFAR-10 or -100 as pickles, holds 180 MB; 2 GiB leaves room for
# image folders of bigger pictures while every byte read must still fit a laptop's memory.
MAX_TOTAL_BYTES = 2 * 2**30
# CIFAR as image files is 60,000 members; a million tiny entries is a bomb of another kind.
# Every entry counts, folders, links and other non-files included: each costs time and memory
# to list even when it holds no bytes.
MAX_MEMBERS = 1_000_000
# errors a damaged archive raises somewhere inside tarfile/gzip/zipfile
_DAMAGE = (tarfile.TarError, EOFError, OSError, zlib.error, zipfile.BadZipFile)


def read_members(path: Path) -> tuple[list[tuple[str, bytes]], list[str]]:
    """All regular files under ``path`` as (posix relative name, bytes), plus folder names.

    Folder names are returned too, so an empty class folder can be reported.
    """
    if path.is_dir():
        return _read_dir(path, _Budget(path))
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass an existing CIFAR archive or folder (--data PATH)")
    try:
        if path.name.lower().endswith(".zip"):
            return _read_zip(path, _Budget(path))
        return _read_tar(path, _Budget(path))
    except DataError:
        raise
    except _DAMAGE as exc:
        raise DataError(f"{path}: archive is truncated or corrupt ({_one_line(exc)}); "
                        "re-download or re-create it") from None


class _Budget:
    """The caps, checked on each member's declared size before any of its bytes are read."""

    def __init__(self, source: Path):
        self.source, self.members, self.total = source, 0, 0

    def count(self, name: str) -> None:
        """One more entry of any kind (file, folder, link): the member cap."""
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise DataError(f"{self.source}: more than {MAX_MEMBERS:,} entries (files, folders and links; cap "
                            f"reached at {name}); CIFAR holds 60,000 files, so this is not a CIFAR source")

    def take(self, name: str, size: int) -> None:
        if size > MAX_MEMBER_BYTES:
            raise DataError(f"{self.source}: {name} is {_mib(size)}, over the {_mib(MAX_MEMBER_BYTES)} cap "
                            "per file (CIFAR's largest is 150 MiB); the source is damaged or not CIFAR")
        self.total += size
        if self.total > MAX_TOTAL_BYTES:
            raise DataError(f"{self.source}: contents pass the {_mib(MAX_TOTAL_BYTES)} cap at {name} "
                            "(CIFAR holds 180 MB); pass a CIFAR source, or shrink the images to 32x32 first")

    def read(self, fh, name: str, size: int) -> bytes:
        """At most ``size`` bytes of ``fh``: a member holding more than it declared is refused."""
        self.take(name, size)
        blob = fh.read(size + 1)
        if len(blob) > size:
            raise DataError(f"{self.source}: {name} holds more bytes than its {size}-byte header says; "
                            "the archive is damaged, re-download or re-create it")
        return blob


def _read_dir(path: Path, budget: _Budget) -> tuple[list[tuple[str, bytes]], list[str]]:
    files, dirs = [], []
    for root, dirnames, filenames in os.walk(path):
        dirnames.sort()
        rel_root = Path(root).relative_to(path)
        for d in dirnames:
            budget.count((rel_root / d).as_posix())
            dirs.append((rel_root / d).as_posix())
        for name in sorted(filenames):
            full, rel = Path(root) / name, (rel_root / name).as_posix()
            budget.count(rel)
            try:
                with open(full, "rb") as fh:
                    files.append((rel, budget.read(fh, rel, os.fstat(fh.fileno()).st_size)))
            except DataError:
                raise
            except OSError as exc:
                raise DataError(f"{full}: cannot read ({exc.strerror}); check its permissions") from None
    return files, dirs


def _read_tar(path: Path, budget: _Budget) -> tuple[list[tuple[str, bytes]], list[str]]:
    files, dirs = [], []
    with tarfile.open(path, "r|*") as tar:  # a stream: one pass, no seeking back
        for member in tar:
            name = member.name.removeprefix("./")
            budget.count(name)
            if member.isdir():
                dirs.append(name.rstrip("/"))
            elif member.isfile():
                files.append((name, budget.read(tar.extractfile(member), name, member.size)))
    return files, dirs


def _read_zip(path: Path, budget: _Budget) -> tuple[list[tuple[str, bytes]], list[str]]:
    files, dirs = [], []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            budget.count(info.filename)
            if info.is_dir():
                dirs.append(info.filename.rstrip("/"))
                continue
            try:
                with zf.open(info) as fh:  # inflates nothing yet; reading to the end checks the CRC
                    files.append((info.filename, budget.read(fh, info.filename, info.file_size)))
            except (NotImplementedError, RuntimeError) as exc:  # encrypted, or a compression Python lacks
                raise DataError(f"{path}: cannot read {info.filename} ({_one_line(exc)}); "
                                "re-create the archive as a plain zip or .tar.gz") from None
    return files, dirs


def _mib(n: int) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.0f} GiB"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
