"""``cifarlab data info`` / ``prepare`` on generated data, and the real archive when CI provides it."""

from __future__ import annotations

import numpy as np
import pytest

from cifarlab.cli import main
from cifarlab.data import synthetic


def test_info_reports_format_counts_checksum_cache_and_conversions(tmp_path, capsys):
    written = synthetic.write_imagefolder(tmp_path, per_class=4, test_per_class=2, odd=True)
    path = synthetic.pack(written.path, tmp_path / "imgs.zip")
    assert main(["data", "info", str(path), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "imagefolder" in out and "43" in out and "20" in out  # 40 + 3 odd train, 20 test
    from cifarlab.data.digest import file_digest
    assert file_digest(path) in out.replace("\n", "").replace(" ", "")
    assert "converted L->RGB" in out and "resized 40x30->32x32" in out
    (cache,) = (tmp_path / "c" / "arrays").iterdir()  # info decoded once and cached, and says where
    assert str(cache).replace(" ", "") in out.replace("\n", "").replace(" ", "").replace("│", "")


def test_prepare_fills_the_cache(tmp_path, monkeypatch, capsys):
    written = synthetic.write_cifar10_binary(tmp_path)
    monkeypatch.setenv("CIFARLAB_DATA", str(written.path))
    assert main(["data", "prepare", "--cache-dir", str(tmp_path / "c")]) == 0
    assert len(list((tmp_path / "c" / "arrays").iterdir())) == 1
    assert "cifar10-binary" in capsys.readouterr().out


@pytest.mark.realdata
@pytest.mark.slow
def test_real_archive_counts(real_data):
    assert len(real_data.train) == 45000 and len(real_data.val) == 5000 and len(real_data.test) == 10000
    assert real_data.classes == synthetic.CIFAR10_CLASSES
    assert real_data.info.counts["train"] == {c: 5000 for c in real_data.classes}
    assert real_data.info.counts["test"] == {c: 1000 for c in real_data.classes}
    assert np.bincount(real_data.val.labels).tolist() == [500] * 10
    assert real_data.info.conversions == []


def test_info_without_a_path_reads_cifarlab_data(tmp_path, monkeypatch, capsys):
    written = synthetic.write_cifar10_python(tmp_path / "d", per_batch=20, n_test=20)
    monkeypatch.setenv("CIFARLAB_DATA", str(written.path))
    assert main(["data", "info"]) == 0
    assert "100" in capsys.readouterr().out  # 5 batches of 20 training images
    monkeypatch.delenv("CIFARLAB_DATA")
    assert main(["data", "info"]) == 1
    assert "CIFARLAB_DATA" in capsys.readouterr().err
