"""Bounded reads and a cache that is trusted only for the bytes it was built from.

Archives are read member by member under a per-member and a total cap; a folder is keyed
by the contents of its files (a stat memo saves the rehash, re-checked by ctime, which
``os.utime`` cannot restore); a published MD5 is checked before cached arrays are used.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import zipfile

import numpy as np
import pytest

from cifarlab.data import archive, digest, load_cifar, official, synthetic
from cifarlab.errors import DataError


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------- bounded archive reads
def test_a_tar_member_over_the_cap_is_refused_before_a_byte_of_it_is_read(tmp_path):
    # a header claiming more than the cap, as a bomb would, over a few bytes of data
    head = tarfile.TarInfo("images/train/cat/huge.png")
    head.size = archive.MAX_MEMBER_BYTES + 1
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb") as gz:
        gz.write(head.tobuf())
        gz.write(b"\0" * 4096)
    with pytest.raises(DataError) as exc:
        load_cifar(bomb, cache_dir=tmp_path / "c", progress=False)
    assert "images/train/cat/huge.png" in _one_line(exc) and "256 MiB cap per file" in str(exc.value)


def test_a_zip_member_that_inflates_past_the_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 50_000)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images/train/cat/a.png", b"\0" * 1_000_000)  # 1 MB of zeros: ~1 KB deflated
    assert bomb.stat().st_size < 5_000
    with pytest.raises(DataError) as exc:
        load_cifar(bomb, cache_dir=tmp_path / "c", progress=False)
    assert "images/train/cat/a.png is 1,000,000 bytes, over the 50,000 bytes cap" in _one_line(exc)


def test_a_zip_member_holding_more_than_its_header_says_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("images/train/cat/a.png", b"x" * 1000)
    # shrink the declared size in the central directory only: the data holds 1000 bytes
    blob = buf.getvalue()
    central = blob.rindex(b"PK\x01\x02")
    size_at = central + 24  # uncompressed size field of the central directory entry
    blob = blob[:size_at] + (10).to_bytes(4, "little") + blob[size_at + 4:]
    liar = tmp_path / "liar.zip"
    liar.write_bytes(blob)
    with pytest.raises(DataError) as exc:
        archive.read_members(liar)
    assert "liar.zip" in _one_line(exc)


@pytest.mark.parametrize("suffix", ["tar.gz", "zip"])
def test_the_total_cap_names_the_member_that_crossed_it(tmp_path, monkeypatch, suffix):
    written = synthetic.write_imagefolder(tmp_path / "img", per_class=4)
    packed = synthetic.pack(written.path, tmp_path / f"img.{suffix}")
    files, _ = archive.read_members(packed)
    cap = sum(len(b) for _, b in files) // 2
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", cap)
    with pytest.raises(DataError) as exc:
        load_cifar(packed, cache_dir=tmp_path / "c", progress=False)
    text = _one_line(exc)
    assert "contents pass the" in text and "cap at images/" in text
    crossed = text.split("cap at ", 1)[1].split(" ", 1)[0]
    names = [n for n, _ in files]
    assert sum(len(b) for _, b in files[:names.index(crossed) + 1]) > cap  # it really crossed there
    assert sum(len(b) for _, b in files[:names.index(crossed)]) <= cap


def test_archives_are_read_member_by_member_in_one_stream(tmp_path, monkeypatch):
    written = synthetic.write_imagefolder(tmp_path / "img")
    packed = synthetic.pack(written.path, tmp_path / "img.tgz")
    modes = []
    real_open = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: modes.append(a[1]) or real_open(*a, **k))
    files, dirs = archive.read_members(packed)
    assert modes == ["r|*"] and len(files) == 10 * (3 + 2) and "images/train/cat" in dirs


# ---------------------------------------------------------------- a folder keyed by content
def _rewrite_keeping_size_and_mtime(path, offset: int) -> None:
    st = path.stat()
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0xFF
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the size and mtime a stat-only key sees
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.mark.parametrize("racy_ns", [digest._RACY_NS, 0], ids=["default", "ctime-recheck-alone"])
def test_a_folder_file_rewritten_with_size_and_mtime_restored_is_not_served_stale(tmp_path, monkeypatch,
                                                                                   racy_ns):
    # racy_ns=0 trusts even just-written files, so only the ctime re-check can catch the change
    monkeypatch.setattr(digest, "_RACY_NS", racy_ns)
    written = synthetic.write_cifar10_binary(tmp_path / "src", per_batch=10, n_test=10)
    first = load_cifar(written.path, val=0, cache_dir=tmp_path / "c", progress=False)
    _rewrite_keeping_size_and_mtime(written.path / "test_batch.bin", offset=1)  # record 0, first pixel byte
    second = load_cifar(written.path, val=0, cache_dir=tmp_path / "c", progress=False)
    assert second.info.checksum != first.info.checksum
    assert second.test.images[0, 0, 0, 0] == first.test.images[0, 0, 0, 0] ^ 0xFF
    np.testing.assert_array_equal(second.test.images[1:], first.test.images[1:])


def test_an_unchanged_folder_is_not_rehashed_and_keeps_its_key(tmp_path, monkeypatch):
    monkeypatch.setattr(digest, "_RACY_NS", 0)  # the fixture was written a moment ago
    written = synthetic.write_cifar10_python(tmp_path / "src", per_batch=10, n_test=10)
    first = load_cifar(written.path, val=0, cache_dir=tmp_path / "c", progress=False)
    hashed = []
    real = digest._hash_file
    monkeypatch.setattr(digest, "_hash_file", lambda p, a: hashed.append(p.name) or real(p, a))
    second = load_cifar(written.path, val=0, cache_dir=tmp_path / "c", progress=False)
    assert hashed == [] and second.info.checksum == first.info.checksum
    assert second.info.cache_path == first.info.cache_path
    (written.path / "batches.meta").touch()  # a new ctime: that file, and only it, is hashed again
    third = load_cifar(written.path, val=0, cache_dir=tmp_path / "c", progress=False)
    assert hashed == ["batches.meta"] and third.info.checksum == first.info.checksum


def test_a_just_written_file_is_rehashed_until_it_has_settled(tmp_path):
    # within _RACY_NS of the stat, a change in the same timestamp tick could go unseen
    written = synthetic.write_cifar10_python(tmp_path / "src", per_batch=10, n_test=10)
    memo = digest._Memo(tmp_path / "c", written.path)
    memo.written = memo.started  # as if the previous load had just now taken its stats
    memo.old = {"test_batch": [*_stamp(written.path / "test_batch"), {"sha256": "0" * 64}]}
    found = memo.digests(written.path / "test_batch", "test_batch", ("sha256",))
    assert found["sha256"] == digest.file_digest(written.path / "test_batch")


def _stamp(path):
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


# ---------------------------------------------------------------- the published MD5 comes first
def test_an_official_name_is_md5_checked_before_a_warm_cache_is_used(tmp_path):
    written = synthetic.write_cifar10_python(tmp_path / "src", per_batch=10, n_test=10)
    mine = synthetic.pack(written.path, tmp_path / "mine.tar.gz")
    load_cifar(mine, val=0, cache_dir=tmp_path / "c", progress=False)  # arrays cached under these bytes
    named = tmp_path / "cifar-10-python.tar.gz"
    shutil.copyfile(mine, named)  # the same bytes: the same cache key
    with pytest.raises(DataError) as exc:
        load_cifar(named, val=0, cache_dir=tmp_path / "c", progress=False)
    assert "checksum mismatch" in _one_line(exc) and official.OFFICIAL_MD5[named.name] in str(exc.value)


def test_a_corrupted_official_archive_with_a_warm_cache_fails_its_checksum(tmp_path, monkeypatch):
    monkeypatch.setattr(digest, "_RACY_NS", 0)  # only the stat re-check stands between the memo and the bytes
    written = synthetic.write_cifar10_python(tmp_path / "src", per_batch=10, n_test=10)
    named = synthetic.pack(written.path, tmp_path / "cifar-10-python.tar.gz")
    monkeypatch.setitem(official.OFFICIAL_MD5, named.name, digest.file_digest(named, "md5"))
    load_cifar(named, val=0, cache_dir=tmp_path / "c", progress=False)  # passes, fills cache and memo
    _rewrite_keeping_size_and_mtime(named, offset=named.stat().st_size // 2)
    with pytest.raises(DataError) as exc:
        load_cifar(named, val=0, cache_dir=tmp_path / "c", progress=False)
    assert "checksum mismatch" in _one_line(exc)


def test_a_device_in_a_folder_source_is_refused_not_read_forever(tmp_path):
    written = synthetic.write_imagefolder(tmp_path / "src", per_class=1, test_per_class=1)
    (written.path / "train" / "cat" / "zeros.png").symlink_to("/dev/zero")
    with pytest.raises(DataError) as exc:
        load_cifar(written.path, val=0, cache_dir=tmp_path / "c", progress=False)
    assert "zeros.png: not a regular file" in _one_line(exc)
