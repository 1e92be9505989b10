"""Shared test fixtures.

Every test runs with ``CIFARLAB_HOME`` pointed at a fresh temporary folder, so nothing
reads or writes the user's cache by accident.

A test whose prerequisite is missing (the real data copy, Chromium, Qt's libraries, an
optional extra) calls ``need(condition, reason)`` or ``need_module(name, reason)``: on a
laptop that skips with the reason; under ``CI=true`` it FAILS with the reason, so a CI
run cannot turn green by skipping what it was meant to exercise. Nothing else in the
suite calls ``pytest.skip`` or ``importorskip``.
"""

from __future__ import annotations

import functools
import importlib
import os
import tempfile
from pathlib import Path

import pytest
import torch

# Two cores: more intra-op threads than that only adds contention between tests.
torch.set_num_threads(min(2, os.cpu_count() or 1))

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
REAL_DATA = os.environ.get("CIFARLAB_DATA", "")
# Decoding the real archive takes ~20 s: keep one cache for the whole session.
_REAL_CACHE = Path(os.environ.get("CIFARLAB_TEST_CACHE", Path.home() / ".cache" / "cifarlab-test"))


@functools.cache
def screenshot_dir() -> Path:
    """Where the browser and desktop tests save their screenshots: ``CIFARLAB_ARTIFACTS`` when
    set (CI keeps that folder), else a temporary folder; never the checkout."""
    folder = os.environ.get("CIFARLAB_ARTIFACTS")
    return Path(folder) if folder else Path(tempfile.mkdtemp(prefix="cifarlab-screenshots-"))


def need(condition, reason: str) -> None:
    """Go on if ``condition`` holds; else skip with ``reason``, or fail under CI=true.

    Also at module level (before the imports a module needs)."""
    if condition:
        return
    if CI:
        pytest.fail(f"CI=true and a prerequisite is missing: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def need_module(name: str, reason: str):
    """``importlib.import_module(name)``, or ``need``'s skip/fail with ``reason`` and the import error."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        error = exc  # skip or fail outside the except block: no chained ImportError in the report
    need(False, f"{reason} ({error})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true any skip, even one that bypassed ``need``, is reported as a failure."""
    report = (yield).get_result()
    _skip_fails_under_ci(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    report = (yield).get_result()  # a module-level skip happens while collecting
    _skip_fails_under_ci(report)


def _skip_fails_under_ci(report) -> None:
    if not (CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"CI=true and the test skipped: {reason}"


def pytest_configure(config):
    # Module- and session-scoped fixtures train too, before any function-scoped fixture
    # runs: point the whole session at a throwaway home first, so no test run ever lands in
    # the user's run registry or cache.
    os.environ["CIFARLAB_HOME"] = tempfile.mkdtemp(prefix="cifarlab-test-home-")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("cifarlab-home")
    monkeypatch.setenv("CIFARLAB_HOME", str(home))
    # rows a test's runs append (studies, comparisons, benchmarks) go to a folder of its own,
    # never to the checkout's results/; a test that reads the checkout's rows names it
    monkeypatch.setenv("CIFARLAB_RESULTS", str(tmp_path_factory.mktemp("cifarlab-results")))
    return home


@pytest.fixture(scope="session")
def real_data():
    """The real CIFAR-10 copy named by CIFARLAB_DATA (train 45k / val 5k / test 10k)."""
    need(REAL_DATA, "CIFARLAB_DATA is not set: real-data test not run (CI sets it to the shared archive)")
    if not Path(REAL_DATA).exists():
        pytest.fail(f"CIFARLAB_DATA={REAL_DATA} does not exist")
    from cifarlab.data import load_cifar

    return load_cifar(REAL_DATA, cache_dir=_REAL_CACHE, progress=False)
