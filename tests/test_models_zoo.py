"""`cifarlab models`: answered from the packaged facts without importing torch, readable at 80
columns, no write-up jargon, and the packaged facts equal to what the models say now."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cifarlab import zoo
from cifarlab.zoo import WRITE_UPS

REGENERATE = "regenerate it: python -m cifarlab.zoo --write"


def _cli(*args, columns=80, home=None):
    env = {**os.environ, "COLUMNS": str(columns), "CIFARLAB_HOME": str(home or os.environ["CIFARLAB_HOME"])}
    code = ("import sys; from cifarlab.cli import main; rc = main(sys.argv[1:]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)


def test_packaged_facts_match_the_model_sources():
    stored = json.loads(zoo.packaged_path().read_text())
    assert stored["key"] == zoo.source_key(), f"cifarlab/assets/zoo.json is out of date; {REGENERATE}"


@pytest.mark.slow
def test_packaged_facts_are_what_the_models_say():
    stored = json.loads(zoo.packaged_path().read_text())["models"]
    assert stored == zoo.compute_facts(), f"cifarlab/assets/zoo.json differs from the models; {REGENERATE}"


def test_models_needs_no_torch_and_fits_80_columns(tmp_path):
    if json.loads(zoo.packaged_path().read_text())["key"] != zoo.source_key():
        pytest.fail(f"cifarlab/assets/zoo.json is out of date; {REGENERATE}")
    run = _cli("models", home=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip().endswith("NO-TORCH")
    lines = run.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    header = lines[0].split()
    assert header[:3] == ["name", "params", "MACs"] and header[-2:] == ["measured", "paper"]
    names = [line.split()[0] for line in lines[2:] if line and not line.startswith(("─", "MACs", "paper"))]
    assert {"resnet18", "lenet5", "airnet94"} <= set(names)
    row = next(line for line in lines if line.startswith("lenet5 "))
    assert row.split()[-1] == "52%"  # the tutorial's figure, from the registry
    from cifarlab import results
    for name in ("lenet5", "airnet_small", "resnet20"):
        row = next(line for line in lines if line.startswith(name + " "))
        best = results.measured_accuracy(name)
        assert row.split()[-2] == ("never" if best is None else f"{best['test_top1_pct']:.1f}%")


def test_no_write_up_jargon_in_what_users_read(tmp_path):
    for args in (["models"], ["models", "--wide"], ["models", "--json"], ["train", "--list-recipes"]):
        out = _cli(*args, columns=200, home=tmp_path).stdout
        for slug in WRITE_UPS:
            assert slug not in out, (args, slug)
