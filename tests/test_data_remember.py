"""A source that loaded once is found again without --data or CIFARLAB_DATA."""

from __future__ import annotations

import numpy as np
import pytest

from cifarlab.data import load_cifar, synthetic
from cifarlab.errors import DataError


@pytest.fixture()
def written(tmp_path):
    return synthetic.write_all(tmp_path / "src")["img-tgz"]


def test_second_load_needs_no_path(written, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CIFARLAB_DATA", str(written.path))
    first = load_cifar(None, val=0, cache_dir=cache, progress=False)
    monkeypatch.delenv("CIFARLAB_DATA")
    again = load_cifar(None, val=0, cache_dir=cache, progress=False, download=False)
    assert again.info.source == str(written.path.resolve())
    assert np.array_equal(again.train.images, first.train.images)


def test_a_moved_source_is_not_remembered(written, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    load_cifar(written.path, val=0, cache_dir=cache, progress=False)
    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    written.path.rename(tmp_path / "moved.tgz")
    with pytest.raises(DataError, match="no cifar10 data found"):
        load_cifar(None, val=0, cache_dir=cache, progress=False, download=False)
