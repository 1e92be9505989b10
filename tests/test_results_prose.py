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
import sys
import tokenize
from pathlib import Path

import cifarlab

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
