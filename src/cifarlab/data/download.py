"""Fetching the official archive: to a temp file, MD5-checked, then renamed into place."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from cifarlab.atomic import atomic_path
from cifarlab.data.official import OFFICIAL_MD5
from cifarlab.errors import DataError

# the official archives; tests point CIFARLAB_DOWNLOAD_URL at a loopback server instead
DOWNLOAD_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
_TIMEOUT = 30  # seconds without a byte before giving up


def download_url(dataset: str) -> str:
    return os.environ.get("CIFARLAB_DOWNLOAD_URL") or DOWNLOAD_URLS[dataset]


def expected_md5(url: str) -> str | None:
    """The published MD5 for an official file name; CIFARLAB_DOWNLOAD_MD5 for any other."""
    return OFFICIAL_MD5.get(url.rsplit("/", 1)[-1]) or os.environ.get("CIFARLAB_DOWNLOAD_MD5") or None


def download(url: str, dest_dir: Path, progress: bool = True) -> Path:
    """Download ``url`` into ``dest_dir`` under its own file name; return the path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / url.rsplit("/", 1)[-1]
    with atomic_path(target, ".part") as tmp:
        with open(tmp, "wb") as out:
            md5 = _fetch(url, out, progress)
        want = expected_md5(url)
        if want and md5 != want:
            raise DataError(f"{url}: checksum mismatch (md5 {md5}, expected {want}); "
                            "the download is damaged, try again")
    return target


def _fetch(url: str, out, progress: bool) -> str:
    md5 = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            with _Bar(url, total, progress) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    md5.update(chunk)
                    bar.advance(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Unreachable(f"{url} ({' '.join(str(reason).split())})") from None
    return md5.hexdigest()


class _Unreachable(Exception):
    """The download failed; the caller adds where else it looked."""


class _Bar:
    """A rich progress bar when asked for and available; silent otherwise."""

    def __init__(self, url: str, total: int, enabled: bool):
        self.url, self.total, self.enabled, self.progress = url, total, enabled, None

    def __enter__(self):
        if self.enabled:
            try:
                from rich.progress import DownloadColumn, Progress, TransferSpeedColumn
            except ImportError:
                return self
            self.progress = Progress(*Progress.get_default_columns(), DownloadColumn(),
                                     TransferSpeedColumn(), transient=True)
            self.progress.start()
            self.task = self.progress.add_task(f"download {self.url.rsplit('/', 1)[-1]}",
                                               total=self.total or None)
        return self

    def advance(self, n: int) -> None:
        if self.progress:
            self.progress.advance(self.task, n)

    def __exit__(self, *exc) -> None:
        if self.progress:
            self.progress.stop()
