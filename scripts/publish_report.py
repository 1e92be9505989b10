"""Publish a study's or a comparison's report into ``docs/``, with where its numbers came from.

    python scripts/publish_report.py results/studies/compare-five-10min docs/reports/compare-five-10min
    python scripts/publish_report.py results/studies/reference docs/reports/study-reference

Writes the report of the folder again (``cifarlab compare/study --report-only`` does the
same), then copies ``report.md``, ``report.html``, ``figures/`` and ``tables/`` to the docs
folder. ``report.md`` there starts with the provenance: the command that trains the runs,
the commits and machines that trained them (read from their rows in ``results/``), and
the commit the report was published at. A figure over 200 KB is refused: docs stay small.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURE_LIMIT = 200 * 1024


def provenance(folder: Path) -> list[str]:
    """Lines naming the rows of ``results/`` that ``folder``'s runs wrote."""
    from cifarlab import results
    from cifarlab.studies.study import load_spec
    spec = load_spec(folder)
    kind = "compare" if spec.kind == "compare" else "study"
    runs = {p.name for p in (folder / "runs").glob("*") if (p / "summary.json").exists()}
    mine = [r for r in results.read_rows(kind)  # the runs' own rows: not the trust rows measured later
            if (r.get("series") or "").split("@")[0] == spec.name and _run_name(r) in runs
            and r.get("test_top1_pct") is not None]
    latest = {}
    for r in mine:  # a run trained again (after a stop) keeps its last row
        latest[_run_name(r)] = r
    commits = sorted({str(r["commit"]) for r in latest.values()})
    machines = sorted({f"{r['machine']} ({r['cores']} cores, bf16 {r['bf16']})" for r in latest.values()})
    commands = sorted({r["command"] for r in latest.values()})
    head = _git("rev-parse", "--short", "HEAD")
    lines = [f"> Published from `{folder}` at "
             f"commit {head} by `python scripts/publish_report.py`. {len(latest)} finished runs, "
             f"rows in `results/{kind}.csv`.", ">"]
    lines += [f"> Trained by: `{c}`" for c in commands] or ["> Trained by: (no rows in results/)"]
    lines += [">", f"> At commits {', '.join(commits) or 'n/a'}, on {'; '.join(machines) or 'n/a'}.", ""]
    return lines


def _run_name(row: dict) -> str:
    return Path(row.get("run") or "").name


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def publish(folder: Path, dest: Path) -> list[Path]:
    from cifarlab.studies.report import write_report
    write_report(folder)
    too_big = [p for p in (folder / "figures").glob("*.png") if p.stat().st_size > FIGURE_LIMIT]
    if too_big:
        raise SystemExit(f"publish_report: {', '.join(f'{p.name} ({p.stat().st_size // 1024} KB)' for p in too_big)} "
                         f"over {FIGURE_LIMIT // 1024} KB: make the figure smaller before publishing it")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for sub in ("figures", "tables"):
        if (folder / sub).is_dir():
            shutil.copytree(folder / sub, dest / sub)
    runs = os.path.relpath(Path(folder).resolve() / "runs", dest)  # the run folders stay where they are
    md = (folder / "report.md").read_text().replace("](runs/", f"]({runs}/")
    (dest / "report.md").write_text("\n".join(provenance(folder)) + "\n" + md)
    html = (folder / "report.html").read_text().replace('href="runs/', f'href="{runs}/')
    (dest / "report.html").write_text(html)
    return sorted(p for p in dest.rglob("*") if p.is_file())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a study's or comparison's folder (its study.json and runs/)")
    p.add_argument("dest", type=Path, help="the docs folder to write, e.g. docs/reports/NAME")
    args = p.parse_args()
    folder = args.folder.resolve()
    if folder.is_relative_to(ROOT):  # the report's commands name it as the checkout does
        os.chdir(ROOT)
        folder = folder.relative_to(ROOT)
    if not (folder / "study.json").exists():
        print(f"publish_report: {args.folder} has no study.json: give a study's or comparison's --out folder",
              file=sys.stderr)
        return 2
    dest = args.dest.resolve()
    files = publish(folder, dest)
    print(f"{len(files)} files in {args.dest}: " + ", ".join(str(f.relative_to(dest)) for f in files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
