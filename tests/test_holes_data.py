"""Issue 32, holes 6 and 8 (data side): archive entries that are not files count against the
member cap, and a cache folder on a full disk costs only the cache."""

from __future__ import annotations

import errno
import io
import tarfile
import zipfile

import numpy as np
import pytest

from cifarlab.data import archive, cache
from cifarlab.data.types import Split
from cifarlab.errors import DataError

CAP = 50


@pytest.fixture
def low_cap(monkeypatch):
    monkeypatch.setattr(archive, "MAX_MEMBERS", CAP)


def _tar(path, kind: str, n: int):
    with tarfile.open(path, "w:gz") as tar:
        for i in range(n):
            info = tarfile.TarInfo(f"x/{i}")
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "nowhere"
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, "x/0"
            tar.addfile(info, io.BytesIO(b""))
    return path


@pytest.mark.parametrize("kind", ["symlink", "dir", "hardlink"])
def test_a_tar_of_many_non_files_is_refused_at_the_cap(tmp_path, low_cap, kind):
    path = _tar(tmp_path / f"{kind}.tar.gz", kind, CAP * 3)
    with pytest.raises(DataError, match=f"more than {CAP} entries.*x/{CAP}\\b"):
        archive.read_members(path)


def test_a_zip_of_many_folders_is_refused_at_the_cap(tmp_path, low_cap):
    path = tmp_path / "dirs.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(CAP * 3):
            zf.writestr(f"d{i}/", b"")
    with pytest.raises(DataError, match=f"more than {CAP} entries"):
        archive.read_members(path)


def test_a_folder_of_many_links_and_folders_is_refused_at_the_cap(tmp_path, low_cap):
    root = tmp_path / "src"
    root.mkdir()
    for i in range(CAP):
        (root / f"d{i}").mkdir()
        (root / f"l{i}").symlink_to("nowhere")
    with pytest.raises(DataError, match=f"more than {CAP} entries"):
        archive.read_members(root)


def test_a_source_under_the_cap_still_reads(tmp_path, low_cap):
    path = tmp_path / "ok.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for i in range(CAP // 2):
            data = f"{i}".encode()
            info = tarfile.TarInfo(f"a/f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("a")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    files, dirs = archive.read_members(path)
    assert sorted(files) == sorted((f"a/f{i}", f"{i}".encode()) for i in range(CAP // 2)) and dirs == ["a"]


# ---------------------------------------------------------------- hole 8: a full cache folder
def _splits():
    rng = np.random.default_rng(0)
    train = Split(rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), np.arange(8) % 2)
    test = Split(rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), np.arange(4) % 2)
    return train, test


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_cache_folder_degrades_to_not_cached(tmp_path, monkeypatch, capsys):
    train, test = _splits()
    entry = cache.entry_path(tmp_path / "home", "ab" * 32, "fine")
    monkeypatch.setattr(np, "save", _disk_full)
    assert cache.save(entry, train, test, ["a", "b"], {}) is False
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not cached" in err[0] and "No space left" in err[0]
    assert cache.load(entry) is None
    assert not list(entry.parent.iterdir())  # no half-written temporary left behind
    monkeypatch.undo()
    assert cache.save(entry, train, test, ["a", "b"], {}) is True
    got = cache.load(entry)
    assert np.array_equal(got[0].images, train.images) and np.array_equal(got[1].labels, test.labels)


def test_training_goes_on_when_the_cache_folder_is_full(tmp_path, monkeypatch, capsys):
    """A real load through read_source, with the cache's writes failing as on a full disk."""
    from PIL import Image

    from cifarlab.data.load import read_source
    src = tmp_path / "folder"
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (src / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), (i * 40, 10, 200)).save(src / split / cls / f"{i}.png")
    monkeypatch.setattr(np, "save", _disk_full)  # the cache writes its arrays with np.save
    train, test, classes, info = read_source(src, cache_dir=tmp_path / "home")
    assert classes == ["cat", "dog"] and len(train) == 6 and len(test) == 6
    assert "not cached" in capsys.readouterr().err
