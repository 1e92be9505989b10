"""Classify a whole folder tree into a CSV, streaming, resumable.

Rows are ``path, class, probability, top_k`` (path relative to the folder, POSIX style;
top_k as ``"cat:0.9120;dog:0.0500;..."``), appended and flushed after every batch, in
sorted path order, so an interrupted run leaves a valid CSV of what is done. Resuming
reads the paths already in the CSV (dropping a half-written last line) and does the rest;
a file that could not be read gets no row, so a resume tries it again.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cifarlab.atomic import atomic_write_text, write_error
from cifarlab.inference.predict import IMAGE_SUFFIXES, Prediction, Predictor
from cifarlab.errors import CifarlabError

COLUMNS = ["path", "class", "probability", "top_k"]


@dataclass
class BatchReport:
    out: Path
    total: int  # pictures found in the tree
    already: int  # rows the CSV held before this run (resume)
    written: int = 0  # rows written by this run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), no row written


def find_images(folder: str | Path) -> list[str]:
    """Picture files under ``folder`` by suffix, as sorted relative POSIX paths."""
    root = Path(folder)
    if not root.is_dir():
        raise CifarlabError(f"{root} is not a folder; pass the folder of pictures to classify")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found += [Path(dirpath, f).relative_to(root).as_posix() for f in filenames
                  if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def done_paths(out: str | Path) -> set[str]:
    """Paths already in the CSV; a half-written last line (a killed run) is cut off first."""
    out = Path(out)
    if not out.exists() or out.stat().st_size == 0:
        return set()
    _drop_partial_line(out)
    with out.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != COLUMNS:
            raise CifarlabError(f"{out} is not a predictions CSV of this format (header {header}); "
                                f"pass another --out or --overwrite it")
        return {row[0] for row in reader if row}


def _drop_partial_line(out: Path) -> None:
    data = out.read_bytes()
    if data.endswith(b"\n"):
        return
    with out.open("r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)


def _row(rel: str, p: Prediction) -> list:
    top = ";".join(f"{c}:{q:.4f}" for c, q in p.top)
    return [rel, p.label, f"{p.top[0][1]:.6f}", top]


def predict_folder(predictor: Predictor, folder: str | Path, out: str | Path, top_k: int = 3,
                   batch_size: int = 256, resume: bool = False,
                   on_batch: Callable[[BatchReport, list[Prediction]], None] | None = None) -> BatchReport:
    """Classify every picture under ``folder`` into the CSV ``out``.

    ``resume``: keep the rows already in ``out`` and do only the rest; otherwise ``out`` is
    started afresh. ``on_batch(report, predictions)`` runs after each batch is written
    (progress bars, error lines); Ctrl-C leaves every finished batch in the file.
    """
    folder, out = Path(folder), Path(out)
    paths = find_images(folder)
    done = done_paths(out) if resume else set()
    todo = [p for p in paths if p not in done]
    report = BatchReport(out, len(paths), len(done & set(paths)))
    keep = resume and out.exists() and out.stat().st_size > 0
    chunks = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)] or [[]]
    try:
        if not keep:  # a fresh CSV replaces any old one atomically, header and first batch together
            rows, preds = _classify(predictor, folder, chunks.pop(0), top_k, report)
            atomic_write_text(out, _lines([COLUMNS, *rows]))
            _done(report, rows, preds, on_batch)
        with out.open("a", newline="", encoding="utf-8") as f:
            for chunk in chunks:
                rows, preds = _classify(predictor, folder, chunk, top_k, report)
                f.write(_lines(rows))
                f.flush()  # whole rows at once, then flushed: a kill leaves at most one partial last line
                _done(report, rows, preds, on_batch)
    except OSError as exc:  # a full disk: the rows written so far stay, a resume does the rest
        if (error := write_error(exc, out, then=f"it holds the {report.written} rows written so far; free some "
                                                f"space and finish it with --resume")) is None:
            raise
        raise error from None
    return report


def _classify(predictor: Predictor, folder: Path, chunk: list[str], top_k: int, report: BatchReport):
    preds = predictor.predict([folder / p for p in chunk], top_k=top_k, on_error="report") if chunk else []
    rows = []
    for rel, p in zip(chunk, preds):
        if p.error:
            report.failed.append((rel, p.error))
        else:
            rows.append(_row(rel, p))
    return rows, preds


def _done(report: BatchReport, rows: list, preds: list, on_batch) -> None:
    report.written += len(rows)
    if on_batch and preds:
        on_batch(report, preds)


def _lines(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
