"""results/: rows appended and read back, seeds gathered, and the commands that show them.

``cifarlab train --list-recipes`` and ``cifarlab models`` must show what a results folder
holds: each test writes a row with a figure no real run has into a temporary folder
(``CIFARLAB_RESULTS``) and looks for it in the command's output.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

from cifarlab import results
from cifarlab.cli import main
from cifarlab.errors import ConfigError


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_RESULTS", str(tmp_path))
    return tmp_path


def _frontier_row(seed: int, acc: float, **extra) -> dict:
    return {"machine": "Test CPU 9000", "cores": 2, "command": f"python benchmarks/cpu_frontier.py --seeds 1 "
            f"--first-seed {seed}", "seed": seed, "series": "test-series", "recipe": "cpu-5min",
            "model": "airnet_small", "budget_s": 300, "test_top1_pct": acc, "tta": "flip-translate",
            "wall_s": 280.0 + seed, **extra}


def test_rows_round_trip_and_a_new_column_extends_the_header(folder):
    path = results.append_row("probe", {"machine": "m", "command": "x", "seed": 0, "acc": 1.5, "ok": True})
    results.append_row("probe", {"machine": "m", "command": "x", "seed": 1, "acc": 2.25, "note": "a, \"b\"\nc"})
    assert path == folder / "probe.csv"
    with path.open(newline="") as f:  # read back by the csv module itself, not by results.py
        raw = list(csv.DictReader(f))
    assert list(raw[0])[:5] == ["date", "commit", "machine", "command", "seed"]  # shared columns first
    assert [r["acc"] for r in raw] == ["1.5", "2.25"] and raw[0]["ok"] == "yes" and raw[0]["note"] == ""
    assert raw[1]["note"] == "a, \"b\"\nc" and raw[1]["ok"] == ""
    rows = results.read_rows("probe")
    assert rows[0]["acc"] == 1.5 and rows[0]["ok"] is True and rows[1]["ok"] is None and rows[1]["seed"] == 1
    assert all(r["date"].endswith("Z") and r["commit"] for r in rows)  # filled in
    assert results.kinds() == ["probe"] and results.read_rows("nothing") == []


def test_a_row_without_a_machine_or_command_gets_this_ones(folder):
    from cifarlab.inference.hardware import cpu_model
    results.append_row("probe", {"value": 1})
    row = results.read_rows("probe")[0]
    assert row["machine"] == cpu_model() and row["cores"] >= 1 and isinstance(row["bf16"], bool)
    assert row["command"].split()[0] == Path(sys.argv[0]).name  # this process's command line


def test_text_columns_stay_text():
    # a commit of digits only, or one that looks like a float, is still the commit
    row = results._value("commit", "1234567"), results._value("commit", "1e45678"), results._value("seed", "7")
    assert row == ("1234567", "1e45678", 7)


def test_a_kind_is_a_plain_file_name(folder):
    with pytest.raises(ConfigError, match="plain name"):
        results.append_row("../escape", {"x": 1})


def test_seeds_are_gathered_by_series_and_settings(folder):
    accs = [87.95, 87.93, 88.33]
    for seed, acc in enumerate(accs):
        results.append_row("cpu_frontier", _frontier_row(seed, acc))
    results.append_row("cpu_frontier", _frontier_row(0, 50.0, set="muon_lr=0.065"))  # a variant: its own group
    groups = results.seed_groups(results.read_rows("cpu_frontier"))
    assert sorted(g["n"] for g in groups) == [1, 3]
    g = next(g for g in groups if g["n"] == 3)
    mean = sum(accs) / 3
    sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / 2)  # sample standard deviation, by hand
    assert g["test_top1_pct"] == pytest.approx(mean) and g["test_top1_std"] == pytest.approx(sd)
    assert g["seeds"] == [0, 1, 2] and g["wall_s_range"] == (280.0, 282.0)
    assert results.format_accuracy(g) == f"{mean:.2f} ± {sd:.2f}% (3 seeds)"


def test_a_recipe_figure_is_what_its_config_is_now(folder):
    results.append_row("cpu_frontier", _frontier_row(0, 80.0, tta="flip", date="2026-01-01T00:00:00Z"))
    results.append_row("cpu_frontier", _frontier_row(0, 81.0, set="muon_lr=0.065", date="2026-01-03T00:00:00Z"))
    results.append_row("cpu_frontier", _frontier_row(0, 82.0, set="tta=flip-translate",
                                                     date="2026-01-02T00:00:00Z", series="b"))
    results.append_row("cpu_frontier", _frontier_row(0, 83.0, train_subset=500, date="2026-01-04T00:00:00Z"))
    results.append_row("cpu_frontier", _frontier_row(0, 84.0, budget_s=None, date="2026-01-05T00:00:00Z"))
    now = {"tta": "flip-translate", "muon_lr": 0.05, "time_budget": 300.0}
    # the mirror's run is not the recipe testing with flip-translate, the lr probe not its lr, a
    # subset run no recipe's figure, fixed epochs not its budget: the --set tta=flip-translate run is
    assert results.recipe_figure("cpu-5min", now)["test_top1_pct"] == 82.0
    assert results.recipe_figure("cpu-5min", {**now, "muon_lr": 0.065})["test_top1_pct"] == 81.0
    assert results.recipe_figure("cpu-5min", {**now, "time_budget": 0.0})["test_top1_pct"] == 84.0
    assert results.recipe_figure("cpu-2min", now) is None


def test_list_recipes_shows_a_row_of_the_results_folder(folder, capsys):
    assert main(["train", "--list-recipes"]) == 0
    before = capsys.readouterr().out
    assert "12.34" not in before and "measured" not in before  # an empty folder: no figure at all
    for seed, acc in enumerate([12.30, 12.38]):
        results.append_row("cpu_frontier", _frontier_row(seed, acc))
    assert main(["train", "--list-recipes"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "12.34 ± 0.06% (2 seeds)" in lines["cpu-5min"] and "measured" not in lines["cpu-2min"]
    assert main(["train", "--list-recipes", "--verbose"]) == 0  # where and when, too
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "12.34 ± 0.06% (2 seeds)" in lines["cpu-5min"] and "Test CPU 9000" in lines["cpu-5min"]
    assert "measured" not in lines["cpu-2min"]


def test_models_shows_a_row_of_the_results_folder(folder, capsys):
    results.append_row("compare", {"machine": "Test CPU 9000", "command": "cifarlab compare", "seed": 0,
                                   "model": "lenet5", "test_top1_pct": 56.78, "budget_s": 600})
    results.append_row("compare", {"machine": "Test CPU 9000", "command": "cifarlab compare", "seed": 0,
                                   "model": "alexnet", "test_top1_pct": 99.9, "train_subset": 500})
    assert main(["models", "--json"]) == 0
    by_name = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert by_name["lenet5"]["measured"]["test_top1_pct"] == 56.78
    assert by_name["lenet5"]["measured"]["machine"] == "Test CPU 9000"
    assert by_name["alexnet"]["measured"] is None  # a subset run is not the model's figure
    assert main(["models", "lenet5"]) == 0
    assert "56.8%" in capsys.readouterr().out


def test_every_row_on_file_says_when_where_and_how(monkeypatch):
    monkeypatch.delenv("CIFARLAB_RESULTS", raising=False)
    kinds = results.kinds()
    assert "cpu_frontier" in kinds
    for kind in kinds:
        for row in results.read_rows(kind):
            missing = [k for k in ("date", "commit", "machine", "command") if not row.get(k)]
            assert not missing, f"results/{kind}.csv: a row without {missing}: {row}"


def _append_many(args):
    folder, worker = args
    for seed in range(10):  # each worker brings its own column: every first row rewrites the header
        results.append_row("busy", {"machine": "m", "command": "c", "seed": seed, f"col{worker}": worker}, folder)


def test_concurrent_writers_lose_no_row(tmp_path):
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_append_many, [(str(tmp_path), w) for w in range(4)])
    rows = results.read_rows("busy", tmp_path)
    assert len(rows) == 40
    for w in range(4):
        assert sorted(r["seed"] for r in rows if r.get(f"col{w}") == w) == list(range(10))
