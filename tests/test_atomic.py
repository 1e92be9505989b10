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
