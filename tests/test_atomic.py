"""Atomic writes: old content survives a failed write, no temporary is left, modes follow the umask."""

from __future__ import annotations

import os
import stat

import pytest

from cifarlab.atomic import atomic_path, atomic_write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half a new fi")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_written_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    mask = os.umask(0o022)
    try:
        import importlib

        import cifarlab.atomic as atomic
        importlib.reload(atomic)  # the mode is read from the umask at import
        atomic.atomic_write_text(tmp_path / "config.json", "{}")
    finally:
        os.umask(mask)
        importlib.reload(atomic)
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o644


def test_the_file_is_fsynced_before_the_rename_and_its_folder_after(tmp_path, monkeypatch):
    """A rename that reaches the disk before the bytes it names is an empty file after a power cut."""
    import cifarlab.atomic as atomic
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync-dir" if stat.S_ISDIR(st.st_mode) else "fsync-file", st.st_ino))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "run" / "last.pt"
    atomic.atomic_write_bytes(target, b"weights")
    file_ino, dir_ino = target.stat().st_ino, target.parent.stat().st_ino
    assert events == [("fsync-file", file_ino), ("replace", file_ino), ("fsync-dir", dir_ino)]
    assert target.read_bytes() == b"weights"


def test_leftovers_of_a_killed_writer_are_told_apart_and_removed(tmp_path):
    from cifarlab.atomic import remove_leftovers
    atomic_write_text(tmp_path / "metrics.csv", "epoch\n")
    (tmp_path / ".hidden-user-file").write_text("mine")
    writer = atomic_path(tmp_path / "last.pt")
    left = writer.__enter__()  # never exited: SIGKILL runs no finally block
    left.write_bytes(b"half a checkpoint")
    assert [p.name for p in remove_leftovers(tmp_path)] == [left.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden-user-file", "metrics.csv"]
    del writer
