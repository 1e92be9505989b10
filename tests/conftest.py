"""Shared test fixtures.

Every test runs with ``CIFARLAB_HOME`` pointed at a fresh temporary folder, so nothing
reads or writes the user's cache by accident. Real-data tests use the session fixture
``real_data``, which skips *loudly* (with the reason) when ``CIFARLAB_DATA`` is unset.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# Two cores: more intra-op threads than that only adds contention between tests.
torch.set_num_threads(min(2, os.cpu_count() or 1))

REAL_DATA = os.environ.get("CIFARLAB_DATA", "")
# Decoding the real archive takes ~20 s: keep one cache for the whole session.
_REAL_CACHE = Path(os.environ.get("CIFARLAB_TEST_CACHE", Path.home() / ".cache" / "cifarlab-test"))


def pytest_configure(config):
    # Module- and session-scoped fixtures train too, before any function-scoped fixture
    # runs: point the whole session at a throwaway home first, so no test run ever lands in
    # the user's run registry or cache.
    os.environ["CIFARLAB_HOME"] = tempfile.mkdtemp(prefix="cifarlab-test-home-")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("cifarlab-home")
    monkeypatch.setenv("CIFARLAB_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def real_data():
    """The real CIFAR-10 copy named by CIFARLAB_DATA (train 45k / val 5k / test 10k)."""
    if not REAL_DATA:
        pytest.skip("CIFARLAB_DATA is not set: real-data test not run (CI sets it to the shared archive)")
    if not Path(REAL_DATA).exists():
        pytest.fail(f"CIFARLAB_DATA={REAL_DATA} does not exist")
    from cifarlab.data import load_cifar

    return load_cifar(REAL_DATA, cache_dir=_REAL_CACHE, progress=False)
