"""What a source holds, as a digest: the key of its cached arrays and the check of its MD5.

A file's key is the sha256 of its bytes; a folder's is the sha256 of every file's relative
name and sha256, so a folder is keyed by its contents, never by sizes or dates. Rehashing
180 MB on every load would cost most of a warm load, so each file's digests are kept in a
memo beside the cache and reused only while the file's size, mtime, ctime and inode all
match the memo and the file had stopped changing before the memo's stats were taken.
ctime is the re-check that makes this safe: ``os.utime`` can put an old mtime back on a
rewritten file, but the kernel sets ctime on every change and nothing but the clock can
set it back.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from cifarlab.atomic import atomic_write_text
from cifarlab.errors import DataError

_MEMO_VERSION = 1
# A file changed this close before its stat was taken may change again within the same
# timestamp tick, unseen by the stat: its entry is rehashed next time. 2 s is the
# coarsest mtime granularity in use (FAT); ext4 and APFS ticks are milliseconds or finer.
_RACY_NS = 2_000_000_000
_READ = 1 << 20


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    return _hash_file(Path(path), (algorithm,))[algorithm]


def _hash_file(path: Path, algorithms) -> dict[str, str]:
    """Every digest in ``algorithms`` from one read of the file."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


class _Memo:
    """Per-file digests of one source, saved as JSON under ``<cache>/digests/``."""

    def __init__(self, cache_dir: Path, source: Path):
        key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:32]
        self.path = Path(cache_dir) / "digests" / f"{key}.json"
        self.started = time.time_ns()  # before any stat below: the racy limit of the next load
        self.written, self.old = self._read()
        self.new: dict[str, list] = {}
        self.hashed = 0

    def _read(self) -> tuple[int, dict]:
        try:
            memo = json.loads(self.path.read_text())
            if memo.get("version") == _MEMO_VERSION:
                return int(memo["written_ns"]), dict(memo["files"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no memo, or a damaged one: hash everything
        return 0, {}

    def digests(self, file: Path, rel: str, algorithms) -> dict[str, str]:
        try:
            return self._digests(file, rel, algorithms)
        except OSError as exc:
            raise DataError(f"{file}: cannot read ({exc.strerror}); check its permissions") from None

    def _digests(self, file: Path, rel: str, algorithms) -> dict[str, str]:
        st = file.stat()
        if not stat.S_ISREG(st.st_mode):  # a device or a pipe could be read forever
            raise DataError(f"{file}: not a regular file; remove it from the data folder")
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = self.old.get(rel)
        settled = max(st.st_mtime_ns, st.st_ctime_ns) < self.written - _RACY_NS
        if entry and entry[:4] == stamp and settled and all(a in entry[4] for a in algorithms):
            found = entry[4]
        else:
            found = _hash_file(file, algorithms)
            self.hashed += 1
        self.new[rel] = [*stamp, found]
        return found

    def save(self) -> None:
        if not self.hashed and self.new.keys() == self.old.keys():
            return  # a warm load writes nothing
        try:
            atomic_write_text(self.path, json.dumps({"version": _MEMO_VERSION, "written_ns": self.started,
                                                     "files": self.new}))
        except OSError:  # a read-only cache: the next load hashes again, nothing worse
            pass


@dataclass
class SourceDigest:
    sha256: str  # of the file, or of every file's name and sha256 for a folder: the cache key
    md5: str | None  # of the file, when asked for (published checksums are MD5s)
    _memo: _Memo

    def remember(self) -> None:
        """Keep the per-file digests for the next load; once the source has been accepted."""
        self._memo.save()


def source_digest(path: Path, cache_dir: Path, md5: bool = False) -> SourceDigest:
    """What ``path`` holds, from the memo where its stat re-check allows."""
    memo = _Memo(cache_dir, path)
    if path.is_file():
        found = memo.digests(path, "", ("sha256", "md5") if md5 else ("sha256",))
        return SourceDigest(found["sha256"], found.get("md5"), memo)
    return SourceDigest(_folder_digest(path, memo), None, memo)


def _folder_digest(path: Path, memo: _Memo) -> str:
    digest = hashlib.sha256(b"cifarlab-dir/2\n")
    for root, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(root) / name
            rel = full.relative_to(path).as_posix()
            digest.update(f"{rel}\0{memo.digests(full, rel, ('sha256',))['sha256']}\n".encode())
    return digest.hexdigest()
