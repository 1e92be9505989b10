"""`cifarlab app` on a machine without Qt's X11 libraries: one line naming them, not Qt's abort."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cifarlab.cli import main
from cifarlab.cli.apps_cmd import debian_package, missing_qt_libraries


@pytest.mark.parametrize("soname, package", [
    ("libxcb-icccm.so.4", "libxcb-icccm4"), ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libxcb-cursor.so.0", "libxcb-cursor0"), ("libxcb-render-util.so.0.0.0", "libxcb-render-util0"),
])
def test_debian_package_names(soname, package):
    assert debian_package(soname) == package


def test_missing_libraries_are_named_in_one_line(monkeypatch, capsys):
    from conftest import need_module
    pyside = need_module("PySide6", "the desktop extra is not installed")
    plugin = Path(pyside.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    # what ldd itself says about the plugin, asked here independently of the check
    ldd = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True).stdout if shutil.which("ldd") else ""
    absent = [line.split()[0] for line in ldd.splitlines() if "not found" in line]
    found = missing_qt_libraries()
    assert set(absent) <= set(found)
    if not found:  # a machine with every library: nothing to name (and no window opened here)
        return
    assert main(["app", "--no-runs"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and all(lib in err for lib in found) and "scripts/sysdeps.sh" in err
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # no X11 plugin in use: nothing to check
    assert missing_qt_libraries() == []
