"""scripts/mutation_check.py's planted faults still fit the code (each edit's text found exactly
once, each named test present), so an edit elsewhere cannot quietly retire a fault. The check
that every fault is caught runs the tests many times (minutes): CI runs it from .ci/run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_fault_applies_exactly_once_and_names_existing_tests():
    script = _script()
    assert len(script.FAULTS) >= 15
    assert script.check_faults(ROOT) == []


def test_a_fault_whose_text_moved_is_reported(tmp_path):
    script = _script()
    fault = script.Fault("demo", (("a.py", "x = 1\n", "x = 2\n"),), ("tests/test_demo.py::test_x",))
    (tmp_path / "a.py").write_text("x = 1\nx = 1\n")
    try:
        script.check_edit(tmp_path, fault, "a.py", "x = 1\n")
    except script.NotApplicable as exc:
        assert "occurs 2 times in a.py" in str(exc)
    else:
        raise AssertionError("an ambiguous edit was accepted")
    (tmp_path / "a.py").write_text("x = 1\n")
    originals = script.apply(tmp_path, fault)
    assert (tmp_path / "a.py").read_text() == "x = 2\n"
    script.restore(originals)
    assert (tmp_path / "a.py").read_text() == "x = 1\n"
