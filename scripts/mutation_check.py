#!/usr/bin/env python3
"""Plant known faults in a scratch copy of the project, one at a time, and check that the tests
meant to guard each one fail.

A test suite that stays green when the Predictor skips its normalization, when evaluate's
test-time views are switched off or when best.pt is really the last epoch proves nothing
about those paths. Each fault below is a (file, exact old text, new text) edit of a few
characters, the kind a refactoring slips in; the script applies it to a copy of src/ and
tests/ in a temporary folder (this checkout is never written), runs only the tests named
for it with PYTHONPATH pointing at the copy, and records whether they failed. It then puts
the file back and goes on with the next fault.

    python scripts/mutation_check.py            # all faults: a table, exit 1 if any survives
    python scripts/mutation_check.py --list     # the faults and their tests, nothing run
    python scripts/mutation_check.py --only tta --only softmax

Before any fault, the union of the named tests runs once on the unmodified copy: every one
must pass and none may skip (a skipped test catches nothing). An edit whose old text is not
found exactly once in its file stops the script with exit 2, naming the fault: the code
moved, and the fault list must follow it (``--check-faults`` does only that check, in a
second; tests/test_mutation_faults.py runs it in the fast suite).

Exit status: 0 every fault caught; 1 a fault survived (or its tests broke in another way);
2 the check itself could not run (baseline red, an edit not applicable, the copy not imported).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "tests", "benchmarks", "pyproject.toml")  # what the tests need; never .venv or runs


@dataclass(frozen=True)
class Fault:
    name: str
    edits: tuple[tuple[str, str, str], ...]  # (path relative to the root, exact old text, new text)
    tests: tuple[str, ...]  # pytest node ids (or files) that must fail with the fault in place


def _fault(name, edits, *tests):
    return Fault(name, tuple(edits), tuple(tests))


PREDICT, EVALUATE, LOOP = "src/cifarlab/inference/predict.py", "src/cifarlab/training/evaluation.py", "src/cifarlab/training/loop.py"
REF = "tests/test_reference_predict.py::"
TRAIN = "tests/test_reference_train.py::"

FAULTS: list[Fault] = [
    _fault("normalization skipped in the Predictor",
           [(PREDICT, "        return normalize(x, self.mean, self.std, self.grayscale)\n",
             "        return x.float() / 255.0\n")],
           REF + "test_preprocess_is_the_documented_normalization", REF + "test_known_answer_pictures"),
    _fault("mean and std swapped",
           [("src/cifarlab/data/preprocess.py", "    return (x - mean) / std\n", "    return (x - std) / mean\n")],
           REF + "test_preprocess_is_the_documented_normalization", REF + "test_known_answer_pictures"),
    _fault("class order sorted by name",
           [(PREDICT, '        self.classes: list[str] = list(self.meta["classes"])\n',
             '        self.classes: list[str] = sorted(self.meta["classes"])\n')],
           REF + "test_predictor_equals_hand_normalized_reference"),
    _fault("resize off by one (33x33, then a 32x32 crop)",
           [(PREDICT, "        img = img.resize((size, size), Image.Resampling.BILINEAR)\n",
             "        img = img.resize((size + 1, size + 1), Image.Resampling.BILINEAR).crop((1, 1, size + 1, size + 1))\n")],
           REF + "test_predictor_equals_hand_normalized_reference"),
    _fault("nearest-neighbour resize instead of bilinear",
           [(PREDICT, "        img = img.resize((size, size), Image.Resampling.BILINEAR)\n",
             "        img = img.resize((size, size), Image.Resampling.NEAREST)\n")],
           REF + "test_predictor_equals_hand_normalized_reference"),
    _fault("transparency composited on black",
           [(PREDICT, '        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))\n',
             '        white = Image.new("RGBA", rgba.size, (0, 0, 0, 255))\n')],
           REF + "test_known_answer_pictures"),
    _fault("EXIF rotation ignored",
           [(PREDICT, "            img = ImageOps.exif_transpose(img)\n", "            pass\n")],
           "tests/test_predict.py::test_exif_rotation_and_16bit_scaling"),
    _fault("softmax over the batch (dim 0)",
           [(PREDICT, "        return torch.softmax(logits, dim=1).cpu().numpy()\n",
             "        return torch.softmax(logits, dim=0).cpu().numpy()\n")],
           REF + "test_predictor_equals_hand_normalized_reference"),
    _fault("top-k probabilities renormalized over the k",
           [(PREDICT, "        pred.top = [(c, p) for _, c, p in ranked[:max(1, top_k)]]\n",
             "        pred.top = [(c, p / sum(q for _, _, q in ranked[:max(1, top_k)])) for _, c, p in ranked[:max(1, top_k)]]\n")],
           REF + "test_predictor_equals_hand_normalized_reference"),
    _fault("ranking least probable first",
           [(PREDICT, '    return [(int(j), classes[j], float(row[j])) for j in np.argsort(-row, kind="stable")]\n',
             '    return [(int(j), classes[j], float(row[j])) for j in np.argsort(row, kind="stable")]\n')],
           REF + "test_predictor_equals_hand_normalized_reference"),
    _fault("TTA views off in evaluate",
           [(EVALUATE, "    views = view_maker(mode)\n", "    views = None\n")],
           REF + "test_evaluate_averages_the_logits_of_the_views"),
    _fault("TTA flip on the wrong axis (up-down)",
           [(EVALUATE, "    views = [x, x.flip(-1)]\n", "    views = [x, x.flip(-2)]\n")],
           REF + "test_tta_views_are_the_documented_pixels"),
    _fault("TTA translations shifted along one axis only",
           [(EVALUATE, "        for dy, dx in ((0, 0), (2, 2)):", "        for dy, dx in ((0, 1), (2, 1)):")],
           REF + "test_tta_views_are_the_documented_pixels"),
    _fault("eval loss averaged per batch (ragged last batch weighted as full)",
           [("src/cifarlab/training/metrics.py", "            self.loss_sum += loss * b\n",
             '            self._b0 = getattr(self, "_b0", b)\n            self.loss_sum += loss * self._b0\n')],
           REF + "test_evaluate_averages_the_logits_of_the_views"),
    _fault("lr schedule ignored (base lr every step)",
           [(LOOP, "        self.lr = self.schedule.lr_at(self.step)\n", "        self.lr = self.schedule.base_lr\n")],
           TRAIN + "test_logged_lr_follows_the_onecycle_formula"),
    _fault("label smoothing dropped",
           [("src/cifarlab/training/losses.py", "y, label_smoothing=label_smoothing)", "y, label_smoothing=0.0)")],
           TRAIN + "test_logged_val_loss_is_label_smoothed_ce_of_the_epoch_weights"),
    _fault("wrong checkpoint kept (best.pt = last epoch)",
           [("src/cifarlab/training/callbacks.py", "        if self.best_epoch == learn.epoch:\n", "        if True:\n")],
           TRAIN + "test_best_checkpoint_holds_the_best_epoch_and_test_is_measured_on_it"),
    _fault("early-stopping patience off by one",
           [("src/cifarlab/training/callbacks.py", "        return self.wait >= self.patience\n",
             "        return self.wait > self.patience\n")],
           "tests/test_engine_train.py::test_early_stopping_stops_and_says_why"),
    _fault("bf16 evaluation on a CPU without amp_eval",
           [(LOOP, '(training or amp_eval or device.type != "cpu")', "(True)")],
           "tests/test_bf16.py::test_cpu_evaluation_is_float32_whatever_amp_says"),
    _fault("time budget's last epoch runs past the clock (its end never moved mid-epoch)",
           [("src/cifarlab/training/budget.py", "        if learn.epoch < self.staged:\n            return\n        now, done",
             "        return\n        now, done")],
           "tests/test_budget.py::test_the_last_epoch_ends_by_the_clock_when_its_steps_run_slower_than_timed",
           "tests/test_budget_wallclock.py::test_a_last_epoch_slower_than_timed_still_ends_inside_the_budget"),
    _fault("web decoder's memory budget ignored",
           [("src/cifarlab/web/decode.py", "    if cost > budget:\n", "    if False:\n")],
           "tests/test_web_hostile.py::test_bombs_are_refused_from_their_header_with_413",
           "tests/test_web_hostile.py::test_decode_cost_counts_alpha_and_deep_modes"),
    _fault("web decoder's scan-work limit ignored",
           [("src/cifarlab/web/decode.py", "    if header.work > limits.max_scan_pixels:\n", "    if False:\n")],
           "tests/test_web_hostile.py::test_scan_count_and_scan_work_limits_from_the_header"),
    _fault("catalogue states top-5 as the accuracy",
           [("src/cifarlab/catalog.py", 'model=ckpt["model"]["name"], accuracy=test.get("top1"),',
             'model=ckpt["model"]["name"], accuracy=test.get("top5"),')],
           REF + "test_catalogue_serves_the_reference_and_states_the_saved_accuracy"),
    _fault("batch CSV rows paired with the wrong files",
           [("src/cifarlab/inference/batch_predict.py", "for rel, p in zip(chunk, preds):",
             "for rel, p in zip(chunk, preds[::-1]):")],
           REF + "test_predict_folder_csv_equals_reference"),
    _fault("ONNX export records the mean as the std",
           [("src/cifarlab/inference/export.py", '"std": json.dumps([float(v) for v in norm["std"]])',
             '"std": json.dumps([float(v) for v in norm["mean"]])')],
           REF + "test_onnx_export_equals_reference"),
]


# ---------------------------------------------------------------- applying edits
class NotApplicable(Exception):
    pass


def check_edit(root: Path, fault: Fault, path: str, old: str) -> str:
    """The file's text, after checking that ``old`` occurs in it exactly once."""
    file = root / path
    if not file.is_file():
        raise NotApplicable(f"fault {fault.name!r}: {path} does not exist")
    text = file.read_text(encoding="utf-8")
    count = text.count(old)
    if count != 1:
        raise NotApplicable(f"fault {fault.name!r}: the text to replace occurs {count} times in {path} "
                            f"(expected once): {old.strip()!r}; update FAULTS in scripts/mutation_check.py")
    return text


def check_faults(root: Path = ROOT) -> list[str]:
    """Every problem with the fault list against the tree at ``root`` (empty: all apply)."""
    problems = []
    names = [f.name for f in FAULTS]
    if len(set(names)) != len(names):
        problems.append("two faults share a name")
    for fault in FAULTS:
        for path, old, new in fault.edits:
            if old == new:
                problems.append(f"fault {fault.name!r}: an edit changes nothing")
            try:
                check_edit(root, fault, path, old)
            except NotApplicable as exc:
                problems.append(str(exc))
        for test in fault.tests:
            if not (root / test.split("::")[0]).is_file():
                problems.append(f"fault {fault.name!r}: test file {test.split('::')[0]} does not exist")
            elif "::" in test and f"def {test.split('::')[1]}(" not in (root / test.split("::")[0]).read_text():
                problems.append(f"fault {fault.name!r}: no test {test}")
    return problems


def apply(root: Path, fault: Fault) -> dict[Path, str]:
    """Apply ``fault`` in ``root``; returns the original texts to put back."""
    originals: dict[Path, str] = {}
    for path, old, new in fault.edits:
        text = check_edit(root, fault, path, old) if (root / path) not in originals else (root / path).read_text()
        originals.setdefault(root / path, text)
        if text.count(old) != 1:
            raise NotApplicable(f"fault {fault.name!r}: {old.strip()!r} not found once after its earlier edits")
        (root / path).write_text(text.replace(old, new), encoding="utf-8")
    return originals


def restore(originals: dict[Path, str]) -> None:
    for file, text in originals.items():
        file.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- running tests
@dataclass
class Outcome:
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    rc: int = 0
    seconds: float = 0.0
    tail: str = ""


def make_scratch() -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="cifarlab-mutation-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, scratch / name, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, scratch / name)
    return scratch


def environment(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(scratch / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["CIFARLAB_HOME"] = str(scratch / "home")
    return env


def imported_from(scratch: Path, env: dict[str, str]) -> Path:
    out = subprocess.run([sys.executable, "-c", "import cifarlab; print(cifarlab.__file__)"], cwd=scratch,
                         env=env, capture_output=True, text=True, timeout=300)
    return Path(out.stdout.strip() or "?")


def run_tests(scratch: Path, env: dict[str, str], tests: list[str], timeout: float, stop_first: bool) -> Outcome:
    report = scratch / "junit.xml"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *tests]
    if stop_first:
        cmd.insert(4, "-x")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rc, tail = -1, f"timed out after {timeout:.0f} s\n{out[-2000:]}"
    outcome = Outcome(rc=rc, seconds=time.perf_counter() - start, tail=tail)
    _read_report(report, outcome)
    return outcome


def run_tests_forked(scratch: Path, env: dict[str, str], tests: list[str], timeout: float,
                     stop_first: bool) -> Outcome:
    """``run_tests`` in a child forked from this process, which has imported torch, numpy and
    pytest once (``preload``): each run then skips the seconds of importing torch, and only
    cifarlab, the code under test, is imported fresh from the copy."""
    report, log = scratch / "junit.xml", scratch / "pytest.log"
    report.unlink(missing_ok=True)
    args = ["-q", "-p", "no:cacheprovider", f"--junitxml={report}", *(["-x"] if stop_first else []), *tests]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 3
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.environ.clear()
            os.environ.update(env)
            os.chdir(scratch)
            sys.path[:0] = [str(scratch / "src")]
            sys.dont_write_bytecode = True  # a cached .pyc of one fault must never serve another
            import pytest
            code = int(pytest.main(args))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    rc = None
    while rc is None:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
        elif time.perf_counter() - start > timeout:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            rc = -1
        else:
            time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    outcome = Outcome(rc=rc, seconds=time.perf_counter() - start,
                      tail=tail if rc != -1 else f"timed out after {timeout:.0f} s\n{tail}")
    _read_report(report, outcome)
    return outcome


def preload() -> None:
    """What every test run imports and cifarlab's tests never change: imported once, here."""
    import numpy  # noqa: F401
    import PIL.Image  # noqa: F401
    import pytest  # noqa: F401
    import torch  # noqa: F401


def _read_report(report: Path, outcome: Outcome) -> None:
    if report.is_file():
        for suite in ET.parse(report).getroot().iter("testsuite"):
            outcome.tests += int(suite.get("tests", 0))
            outcome.failures += int(suite.get("failures", 0))
            outcome.errors += int(suite.get("errors", 0))
            outcome.skipped += int(suite.get("skipped", 0))


def caught(outcome: Outcome) -> bool:
    """Caught: pytest ran the tests and at least one failed (exit 1). A collection error, a
    timeout or a crash is not a catch: it is reported as such."""
    return outcome.rc == 1 and outcome.failures + outcome.errors > 0


def short(test: str) -> str:
    file, _, name = test.partition("::")
    return f"{Path(file).stem.removeprefix('test_')}::{name}" if name else Path(file).name


def table(rows: list[tuple[str, str, str]]) -> str:
    head = ("fault", "tests run", "caught?")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the faults and their tests, run nothing")
    parser.add_argument("--check-faults", action="store_true", help="only check that every fault applies here")
    parser.add_argument("--only", action="append", default=[], metavar="WORDS",
                        help="run only the faults whose name contains WORDS (repeatable)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per pytest run (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy (its path is printed)")
    parser.add_argument("--no-fork", action="store_true",
                        help="start a fresh interpreter for each run instead of forking a preloaded one")
    args = parser.parse_args(argv)

    faults = [f for f in FAULTS if not args.only or any(w.lower() in f.name.lower() for w in args.only)]
    if not faults:
        print(f"mutation_check: error: no fault matches {args.only}", file=sys.stderr)
        return 2
    if args.list:
        for f in faults:
            print(f"{f.name}\n    " + "\n    ".join(f"{p}: {o.strip()!r} -> {n.strip()!r}" for p, o, n in f.edits)
                  + "\n    tests: " + ", ".join(f.tests))
        return 0
    problems = check_faults()
    if problems:
        print("mutation_check: error: the fault list does not fit the code:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 2
    if args.check_faults:
        print(f"{len(FAULTS)} faults, each applies exactly once; their tests exist")
        return 0

    started = time.perf_counter()
    scratch = make_scratch()
    try:
        env = environment(scratch)
        where = imported_from(scratch, env)
        if scratch not in where.parents:
            print(f"mutation_check: error: the copy imports cifarlab from {where}, not {scratch / 'src'}",
                  file=sys.stderr)
            return 2
        forked = hasattr(os, "fork") and not args.no_fork
        if forked:
            preload()
        run = run_tests_forked if forked else run_tests
        tests = sorted({t for f in faults for t in f.tests})
        print(f"scratch copy: {scratch}\nbaseline: {len(tests)} tests on the unmodified copy ...", flush=True)
        base = run(scratch, env, tests, args.timeout * 2, stop_first=False)
        if base.rc != 0 or base.skipped or base.tests < len(tests):
            print(f"mutation_check: error: the baseline must pass with nothing skipped; got rc={base.rc}, "
                  f"{base.tests} tests, {base.failures} failed, {base.errors} errors, {base.skipped} skipped\n"
                  f"{base.tail}", file=sys.stderr)
            return 2
        print(f"baseline: {base.tests} passed in {base.seconds:.0f} s", flush=True)
        rows, survivors = [], []
        for i, fault in enumerate(faults, 1):
            originals = apply(scratch, fault)
            try:
                outcome = run(scratch, env, list(fault.tests), args.timeout, stop_first=True)
            finally:
                restore(originals)
            ok = caught(outcome)
            verdict = "yes" if ok else ("NO (survived)" if outcome.rc == 0 else f"NO (pytest exit {outcome.rc})")
            rows.append((fault.name, ", ".join(short(t) for t in fault.tests), verdict))
            print(f"[{i}/{len(faults)}] {fault.name}: {verdict} ({outcome.seconds:.0f} s)", flush=True)
            if not ok:
                survivors.append(fault.name)
                print(outcome.tail, flush=True)
        print()
        print(table(rows))
        print(f"\n{len(faults) - len(survivors)} of {len(faults)} faults caught in "
              f"{time.perf_counter() - started:.0f} s")
        if survivors:
            print("not caught: " + "; ".join(survivors), file=sys.stderr)
            return 1
        return 0
    finally:
        if args.keep:
            print(f"kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
