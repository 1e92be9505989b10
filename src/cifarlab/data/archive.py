"""Reading a source's files, whether it is a folder, a tar (plain or gzipped) or a zip.

Everything is read into memory once as ``(relative name, bytes)`` pairs: CIFAR fits in a
few hundred MB, and one sequential pass over a compressed archive is far faster than
seeking back for each member.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
import zlib
from pathlib import Path

from cifarlab.errors import DataError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
# errors a damaged archive raises somewhere inside tarfile/gzip/zipfile
_DAMAGE = (tarfile.TarError, EOFError, OSError, zlib.error, zipfile.BadZipFile)


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def read_members(path: Path) -> tuple[list[tuple[str, bytes]], list[str]]:
    """All regular files under ``path`` as (posix relative name, bytes), plus folder names.

    Folder names are returned too, so an empty class folder can be reported.
    """
    if path.is_dir():
        return _read_dir(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass an existing CIFAR archive or folder (--data PATH)")
    try:
        if path.name.lower().endswith(".zip"):
            return _read_zip(path)
        return _read_tar(path)
    except DataError:
        raise
    except _DAMAGE as exc:
        raise DataError(f"{path}: archive is truncated or corrupt ({_one_line(exc)}); "
                        "re-download or re-create it") from None


def _read_dir(path: Path) -> tuple[list[tuple[str, bytes]], list[str]]:
    files, dirs = [], []
    for root, dirnames, filenames in os.walk(path):
        dirnames.sort()
        rel_root = Path(root).relative_to(path)
        dirs.extend((rel_root / d).as_posix() for d in dirnames)
        for name in sorted(filenames):
            full = Path(root) / name
            try:
                files.append(((rel_root / name).as_posix(), full.read_bytes()))
            except OSError as exc:
                raise DataError(f"{full}: cannot read ({exc.strerror}); check its permissions") from None
    return files, dirs


def _read_tar(path: Path) -> tuple[list[tuple[str, bytes]], list[str]]:
    files, dirs = [], []
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if member.isdir():
                dirs.append(name.rstrip("/"))
            elif member.isfile():
                files.append((name, tar.extractfile(member).read()))
    return files, dirs


def _read_zip(path: Path) -> tuple[list[tuple[str, bytes]], list[str]]:
    files, dirs = [], []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                dirs.append(info.filename.rstrip("/"))
            else:
                files.append((info.filename, zf.read(info)))  # zf.read checks the CRC
    return files, dirs


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def source_checksum(path: Path) -> str:
    """sha256 of a file; for a folder, of its relative paths, sizes and mtimes (cheap, honest)."""
    if path.is_file():
        return file_digest(path)
    digest = hashlib.sha256(b"cifarlab-dir/1\n")
    for root, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(root) / name
            st = full.stat()
            rel = full.relative_to(path).as_posix()
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()
