"""No measured figure as prose in src/, and the README's generated tables up to date.

Measured numbers live in results/ (``cifarlab.results``); the code says what it does. The
scan reads every comment and string literal (docstrings included) of src/cifarlab and fails
on a percentage with decimals, a ``±`` figure, a GFLOP/s or images/s rate, or a hex string
that looks like a commit hash. Format strings (``{x:.2%}``) do not match; the allow-list
holds the few literals that are not measurements.
"""

from __future__ import annotations

import importlib.util
import io
import re
import statistics
import sys
import tokenize
from pathlib import Path

import cifarlab
from cifarlab import results

SRC = Path(cifarlab.__file__).resolve().parent
ROOT = SRC.parents[1]

PATTERNS = {
    "a percentage with decimals": re.compile(r"\d\.\d+\s?%"),
    "a ± figure": re.compile(r"\d\s*±\s*\d"),
    "a GFLOP/s rate": re.compile(r"\d\s*GFLOP/s"),
    "an images/s rate": re.compile(r"\d\s*(?:images|img)/s"),
    "a commit hash": re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"),
}

# literals that match a pattern but are no measurement: (file relative to src/cifarlab, text)
ALLOWED = {
    # the official archives' published MD5 digests, checked on download
    ("data/official.py", "c58f30108f718f92721af3b95e74349a"),
    ("data/official.py", "c32a1d4ab5d03f1284b67883e8d87530"),
    ("data/official.py", "eb9058c3a382ffc7106e4002c42a8d85"),
}


def _texts(path: Path):
    """(line, text) of every comment and string literal in ``path``."""
    source = path.read_text()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            yield tok.start[0], tok.string
        elif sys.version_info >= (3, 12) and tok.type == tokenize.FSTRING_MIDDLE:  # pragma: no cover
            yield tok.start[0], tok.string


def scan(root: Path = SRC) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for line, text in _texts(path):
            for what, pattern in PATTERNS.items():
                for m in pattern.finditer(text):
                    if (rel, m.group(0)) not in ALLOWED:
                        found.append(f"{rel}:{line}: {what}: {m.group(0)!r} in {text.strip()[:90]!r}")
    return found


def test_src_holds_no_measured_figure():
    found = scan()
    assert not found, ("measured figures belong in results/ (cifarlab.results), not in src/:\n"
                       + "\n".join("  " + f for f in found))


def test_the_scan_finds_what_it_should(tmp_path):
    (tmp_path / "m.py").write_text(
        "# reached 87.97% on the EPYC\n"
        "X = 'in 283 s, 412 GFLOP/s'\n"
        "def f():\n    '''87.9 ± 0.2, commit 58dd608'''\n"
        "Y = f'{acc:.2%} and {rate:.1f} GFLOP/s'  # format strings only\n"
        "Z = 1.5  # 3 seeds, 90% of the time, 2026-12-07 08:15\n"
        "H = 'c58f30108f718f92721af3b95e74349a'\n")
    found = scan(tmp_path)
    kinds = [f.split(": ")[1] for f in found]
    assert kinds == ["a percentage with decimals", "a GFLOP/s rate", "a ± figure", "a commit hash",
                     "a commit hash"], found  # the MD5 is allowed in data/official.py only


def _gen_tables():
    spec = importlib.util.spec_from_file_location("gen_tables", ROOT / "scripts" / "gen_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_and_docs_tables_are_generated_from_results(capsys):
    code = _gen_tables().main(["--check", "--results", str(ROOT / "results")])
    assert code == 0, capsys.readouterr().out


def test_a_stale_table_is_caught_and_rewritten(tmp_path, capsys):
    gen = _gen_tables()
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- results:cpu-probes -->\n| old | table |\n<!-- /results -->\noutro\n")
    results_dir = str(ROOT / "results")
    assert gen.main(["--check", "--results", results_dir, str(page)]) == 1
    assert "stale" in capsys.readouterr().out and "| old | table |" in page.read_text()
    assert gen.main(["--results", results_dir, str(page)]) == 0
    text = page.read_text()
    assert text.startswith("intro\n<!-- results:cpu-probes -->\n| date | recipe |") and text.endswith(
        "<!-- /results -->\noutro\n")
    assert gen.main(["--check", "--results", results_dir, str(page)]) == 0


def test_the_comparison_table_gives_mean_and_sd_over_seeds_and_the_write_ups_figure(tmp_path):
    """results/compare.csv rows -> the README's comparison table; a run trained again keeps its last row."""
    gen = _gen_tables()
    accs = [70.0, 72.0, 77.0]
    row = {"machine": "Test CPU 9000", "cores": 2, "bf16": False, "series": "compare-5models-600s@abc",
           "model": "lenet5", "recipe": "compare:cpu", "budget_s": 600, "train_images": 45000}
    for seed, acc in enumerate(accs):
        results.append_row("compare", {**row, "seed": seed, "test_top1_pct": acc, "epochs": 60 + seed,
                                       "command": "cifarlab compare", "run": f"c/runs/lenet5-s{seed}"}, tmp_path)
    # seed 2 trained again (the first try was on a busy machine): only its last row counts
    results.append_row("compare", {**row, "seed": 2, "test_top1_pct": 74.0, "epochs": 62,
                                   "command": "cifarlab compare", "run": "c/runs/lenet5-s2"}, tmp_path)
    # a trust row measured later (--report-only) carries no accuracy: the run keeps its own row
    results.append_row("compare", {**row, "seed": 1, "command": "cifarlab compare --report-only",
                                   "run": "c/runs/lenet5-s1", "ece_raw_pct": 3.0}, tmp_path)
    results.append_row("compare", {**row, "seed": 0, "test_top1_pct": 99.0, "epochs": 1, "train_subset": 500,
                                   "command": "cifarlab compare", "run": "r/runs/lenet5-s0"}, tmp_path)  # reduced
    table = gen.compare(tmp_path)
    lines = [ln for ln in table.splitlines() if ln.startswith("| lenet5")]
    mean, sd = statistics.mean([70.0, 72.0, 74.0]), statistics.stdev([70.0, 72.0, 74.0])
    assert len(lines) == 1 and f"**{mean:.2f} ± {sd:.2f}% (3 seeds)**" in lines[0], table
    assert "| 52.0% |" in lines[0] and "| 60-62 |" in lines[0] and "| 10 min |" in lines[0]
    # a model its budget cannot hold on that machine: what it would need, no accuracy
    results.append_row("compare", {**row, "model": "resnet18", "seed": 0, "test_top1_pct": None, "epochs": 0,
                                   "needs_s": 3930, "command": "cifarlab compare", "run": "c/runs/resnet18-s0"},
                       tmp_path)
    refused = [ln for ln in gen.compare(tmp_path).splitlines() if ln.startswith("| resnet18")]
    assert len(refused) == 1 and "does not fit: needs 66 min here" in refused[0] and "| 80.0% |" in refused[0]


def test_the_make_train_table_shows_the_newest_run_of_each_kind_of_machine(tmp_path):
    gen = _gen_tables()
    row = {"machine": "Test CPU", "cores": 2, "bf16": True, "command": "make train", "recipe": "cpu-5min",
           "budget_s": 300, "model": "airnet_small"}
    for date, bf16, acc in (("2026-01-01", True, 80.0), ("2026-01-02", False, 70.0), ("2026-01-03", True, 85.5)):
        results.append_row("make_train", {**row, "date": date, "bf16": bf16, "test_top1_pct": acc, "elapsed_s": 250.0,
                                          "epochs": 9}, tmp_path)
    lines = [ln for ln in gen.make_train(tmp_path).splitlines() if ln.startswith("| 2026")]
    assert [ln.split(" | ")[0] for ln in lines] == ["| 2026-01-02", "| 2026-01-03"], lines
    assert "2-core Test CPU, no bf16 | 4 min 10 s | 70.00% |" in lines[0]
    assert "2-core Test CPU, bf16 | 4 min 10 s | 85.50% | 9 (airnet_small) |" in lines[1]


def test_the_shipped_models_table_shows_each_file_shipped_now_once(tmp_path):
    gen = _gen_tables()
    row = {"machine": "Test CPU", "cores": 2, "bf16": False, "model": "lenet5", "weights": "int8", "commit": "abc"}
    results.append_row("shipped_models", {**row, "date": "2026-01-01", "file": "src/cifarlab/assets/lenet5.pt",
                                          "test_top1_pct": 50.0}, tmp_path)
    results.append_row("shipped_models", {**row, "date": "2026-01-02", "test_top1_pct": 60.0,
                                          "file": "src/cifarlab/assets/gone.pt (removed again)"}, tmp_path)
    results.append_row("shipped_models", {**row, "date": "2026-01-03", "file": "src/cifarlab/assets/lenet5.pt",
                                          "test_top1_pct": 66.5}, tmp_path)
    lines = [ln for ln in gen.shipped_models(tmp_path).splitlines() if ln.startswith("| 2026")]
    assert lines == ["| 2026-01-03 | `src/cifarlab/assets/lenet5.pt` | lenet5 | int8 | 66.50% | - | - | "
                     "2-core Test CPU, no bf16 | abc |"], lines


def test_the_robustness_table_shows_each_shipped_file_once_by_its_sha256(tmp_path):
    """results/corruptions.csv rows -> the README's robustness table: for each file shipped now the
    newest of its rows with the most pictures classified (a later --limit 200 run does not replace
    it); a row of a file since replaced (another SHA-256) is left out."""
    import hashlib
    gen = _gen_tables()
    shipped = ROOT / "src" / "cifarlab" / "assets" / "lenet5.pt"
    sha = hashlib.sha256(shipped.read_bytes()).hexdigest()
    row = {"machine": "Test CPU 9000", "cores": 2, "bf16": True, "model": "lenet5", "checkpoint": "lenet5.pt",
           "seed": 0, "n": 10000, "kinds": "fog contrast", "severities": "1 2 3", "command": "cifarlab evaluate"}
    results.append_row("corruptions", {**row, "checkpoint_sha256": sha, "clean_top1_pct": 66.0,
                                       "mean_corruption_pct": 50.0, "relative_drop_pct": 24.24}, tmp_path)
    results.append_row("corruptions", {**row, "checkpoint_sha256": sha, "clean_top1_pct": 66.21,
                                       "mean_corruption_pct": 52.5, "relative_drop_pct": 20.71,
                                       "precision": "bf16"}, tmp_path)
    results.append_row("corruptions", {**row, "checkpoint_sha256": sha, "n": 200, "clean_top1_pct": 70.0,
                                       "mean_corruption_pct": 60.0, "relative_drop_pct": 14.29}, tmp_path)  # a quick one
    results.append_row("corruptions", {**row, "checkpoint_sha256": "0" * 64, "clean_top1_pct": 99.0,
                                       "mean_corruption_pct": 98.0, "relative_drop_pct": 1.0}, tmp_path)
    chosen = results.read_rows("corruptions", tmp_path)[1]
    lines = [ln for ln in gen.robustness(tmp_path).splitlines() if ln.startswith("| `")]
    assert lines == ["| `lenet5` | lenet5 | 66.21% | 52.50% | 20.7% | 6 x 10,000 | bf16 | 2-core Test CPU 9000, bf16 | "
                     f"{str(chosen['date'])[:10]}, {chosen['commit']} |"], lines
    # a row from before the precision column was measured in float32
    results.append_row("corruptions", {**row, "checkpoint_sha256": sha, "clean_top1_pct": 66.3,
                                       "mean_corruption_pct": 53.0, "relative_drop_pct": 20.06}, tmp_path)
    assert "| 66.30% | 53.00% | 20.1% | 6 x 10,000 | float32 |" in gen.robustness(tmp_path)
    assert "No shipped model measured yet" in gen.robustness(tmp_path / "empty")


def test_each_published_report_states_the_runs_its_folder_holds():
    """docs/reports/NAME/report.md names its source folder and its finished runs: a run finished
    after publishing makes it stale (python scripts/publish_report.py FOLDER docs/reports/NAME)."""
    reports = sorted((ROOT / "docs" / "reports").glob("*/report.md"))
    assert reports, "no published report under docs/reports (the README links them)"
    for report in reports:
        head = report.read_text().splitlines()[0]
        m = re.match(r"> Published from `([^`]+)` at commit \w+ by .*?\. (\d+) finished runs", head)
        assert m, f"{report}: no provenance line"
        folder = ROOT / m.group(1)
        finished = len(list(folder.glob("runs/*/summary.json")))
        assert finished == int(m.group(2)), (f"{report.relative_to(ROOT)} shows {m.group(2)} runs, {m.group(1)} "
                                             f"has {finished}: python scripts/publish_report.py {m.group(1)} "
                                             f"{report.parent.relative_to(ROOT)}")
        for figure in report.parent.glob("figures/*.png"):
            assert figure.stat().st_size <= 200 * 1024, figure
        text = report.read_text()
        shown = re.findall(r"\]\(((?:figures|tables)/[^)]+)\)", text)
        assert shown and all((report.parent / f).is_file() for f in shown), report
        for run in re.findall(r"\]\((\.\./[^)]+/runs/[^)]+)\)", text):  # a finished run's folder is committed
            if (report.parent / run / "summary.json").is_file():
                assert (report.parent / run / "config.json").is_file(), run
