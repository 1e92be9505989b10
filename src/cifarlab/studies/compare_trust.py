"""How far to trust each model of a comparison: calibration and robustness, measured after training.

A comparison's runs are timed, so they skip the calibration pass and measure no corruption
(the budget counts training and one test). Once a run has finished, ``measure_trust`` takes
its tested checkpoint (best.pt) and measures, in float32 and one view (as the apps predict):

* calibration (``training.calibrate.calibrate_checkpoint``, nothing stored in the checkpoint):
  the test split's ECE (15 bins), MCE and NLL before and after temperature scaling, T fitted
  on the run's own validation split; a run without one is measured by 2-fold cross-fitting on
  the test split (``training.calibrate.cross_fitted_report``), and trust.json says so;
* robustness (``corruptions.evaluate_corruptions``): accuracy on every kind x severity of the
  default corruption suite, on a seeded subset of the test split (the same pictures for every
  run), the mean corruption accuracy and its drop relative to the clean accuracy of that subset.

The result is cached as ``runs/NAME/trust.json``, keyed by the checkpoint (size and mtime, else
its SHA-256: a copied folder keeps its measurements) and the options (images, seed, kinds); it
is measured again only when one of them changed. The data is the comparison's own shared copy
(its validation split carved with the base seed, as every run of the comparison trained on it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from cifarlab.errors import CifarlabError

TRUST_FILE = "trust.json"
TRUST_VERSION = 1
DEFAULT_IMAGES = 1000
DEFAULT_SEED = 0


def checkpoint_of(run_dir: Path) -> Path | None:
    """The checkpoint a finished run was tested with (summary's selection, else best.pt)."""
    from cifarlab.inference.runfolder import read_summary
    summary = read_summary(run_dir) or {}
    name = (summary.get("selection") or {}).get("checkpoint") or "best.pt"
    for candidate in (name, "best.pt", "last.pt"):
        if (Path(run_dir) / candidate).is_file():
            return Path(run_dir) / candidate
    return None


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"checkpoint": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _same_checkpoint(key: dict, path: Path) -> bool:
    """``key`` was measured on these bytes: same name, size and mtime, else the same SHA-256."""
    if not isinstance(key, dict) or key.get("checkpoint") != path.name:
        return False
    now = _stat_key(path)
    if key.get("size") != now["size"]:
        return False
    if key.get("mtime_ns") == now["mtime_ns"]:
        return True
    from cifarlab.calibration import file_sha256
    return key.get("sha256") == file_sha256(path)


def read_trust(run_dir: Path, options: dict | None = None) -> dict | None:
    """The run's trust.json when it was measured on the checkpoint the run has now (and, with
    ``options``, with those images/seed/kinds); None when missing, unreadable or stale."""
    run_dir = Path(run_dir)
    try:
        trust = json.loads((run_dir / TRUST_FILE).read_text())
    except (OSError, ValueError):
        return None
    ckpt = checkpoint_of(run_dir)
    if not isinstance(trust, dict) or trust.get("version") != TRUST_VERSION or ckpt is None:
        return None
    key = trust.get("key") or {}
    if options and any(key.get(k) != v for k, v in options.items()):
        return None
    return trust if _same_checkpoint(key, ckpt) else None


def trust_options(images: int = DEFAULT_IMAGES, seed: int = DEFAULT_SEED, kinds=None) -> dict:
    from cifarlab.corruptions import DEFAULT_KINDS, SEVERITIES
    if int(images) < 1:
        raise CifarlabError(f"--trust-images {images} must be at least 1 (default {DEFAULT_IMAGES})")
    return {"images": int(images), "seed": int(seed), "kinds": list(kinds or DEFAULT_KINDS),
            "severities": list(SEVERITIES)}


def measure_trust(run_dir: Path, data, options: dict | None = None, device: str | None = None) -> dict:
    """Measure a finished run's calibration and robustness, write ``trust.json``, return it.

    ``data``: the CifarData the run trained with (the comparison's shared copy; the run's
    ``test_subset`` is applied here as training applied it)."""
    from cifarlab.atomic import atomic_write_text
    from cifarlab.calibration import file_sha256
    from cifarlab.corruptions import evaluate_corruptions
    from cifarlab.inference.checkpoint import load_checkpoint
    from cifarlab.training.calibrate import calibrate_checkpoint
    run_dir = Path(run_dir)
    options = options or trust_options()
    ckpt_path = checkpoint_of(run_dir)
    if ckpt_path is None:
        raise CifarlabError(f"{run_dir} has no checkpoint to measure (best.pt); was it deleted?")
    key = {**_stat_key(ckpt_path), "sha256": file_sha256(ckpt_path), **options}
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        cfg = load_checkpoint(ckpt_path).get("config") or {}
    if cfg.get("test_subset"):
        data = data.subset(test=cfg["test_subset"], seed=cfg.get("seed", 0))
    start = time.perf_counter()
    cal = calibrate_checkpoint(ckpt_path, data=data, device=device, store="none", cross_fit=True)
    cal_s = time.perf_counter() - start
    rob = evaluate_corruptions(ckpt_path, data=data, kinds=tuple(options["kinds"]),
                               severities=tuple(options["severities"]), seed=options["seed"], device=device,
                               limit=options["images"], precision="float32")  # as the report states
    rob.pop("checkpoint", None)
    total = time.perf_counter() - start
    calibration = {k: v for k, v in cal.items() if k != "sidecar"}
    calibration["n_fit"] = len(data.val) if len(data.val) else len(data.test)
    trust = {"version": TRUST_VERSION, "key": key, "run": run_dir.name,
             "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": _device_text(device),
             "precision": "float32, single view (as the apps predict)",
             "calibration": calibration, "robustness": rob,
             "seconds": {"calibration": round(cal_s, 2), "corruptions": round(total - cal_s, 2),
                         "total": round(total, 2)}}
    atomic_write_text(run_dir / TRUST_FILE, json.dumps(trust, indent=2) + "\n")
    return trust


def _device_text(device: str | None) -> str:
    import torch

    from cifarlab.inference.hardware import pick_device
    dev = pick_device(device or "auto")
    return f"{dev.type}, {torch.get_num_threads()} threads" if dev.type == "cpu" else str(dev)


def ensure_trust(out: Path, spec, *, data=None, load_data: Callable[[], object] | None = None,
                 options: dict | None = None, names: list[str] | None = None, device: str | None = None,
                 progress: Callable[[str, str], None] | None = None) -> dict[str, str]:
    """Measure every finished run (or those in ``names``) whose trust.json is missing or stale.

    ``data``: the CifarData the runs trained on, or ``load_data()`` returns it (called once,
    and only when a run needs measuring: ``compare_run`` passes the study's shared copy).
    Returns {run name: "measured" | "cached" | "not finished" | "not measured: <why>"}; a run
    that cannot be measured is reported and the others go on."""
    from cifarlab.studies.study import plan
    from cifarlab.inference.runfolder import read_summary
    out = Path(out)
    options = options or trust_options()
    say = progress or (lambda name, text: None)
    states: dict[str, str] = {}
    for run in plan(spec):
        if names is not None and run.name not in names:
            continue
        run_dir = out / "runs" / run.name
        if read_summary(run_dir) is None:
            states[run.name] = "not finished"
            continue
        if read_trust(run_dir, options) is not None:
            states[run.name] = "cached"
            continue
        try:
            if data is None:
                if load_data is None:
                    raise CifarlabError("no data to measure on: pass data or load_data")
                say(run.name, "loading the comparison's data")
                data = load_data()
            say(run.name, f"measuring calibration and {len(options['kinds'])} corruptions x "
                          f"{len(options['severities'])} severities on {options['images']} test images")
            trust = measure_trust(run_dir, data, options, device)
        except (CifarlabError, OSError, RuntimeError) as exc:
            states[run.name] = f"not measured: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            say(run.name, states[run.name])
            continue
        states[run.name] = "measured"
        say(run.name, trust_line(trust))
    return states


def trust_line(trust: dict) -> str:
    """One line: ECE raw -> scaled, mean corruption accuracy and drop, seconds."""
    cal, rob = trust["calibration"], trust["robustness"]

    def pct(v, digits=2):
        return "—" if v is None else f"{100 * v:.{digits}f}%"
    t = cal.get("temperature")
    return (f"ECE {pct(cal['before']['ece'])} -> {pct((cal.get('after') or {}).get('ece'))} "
            f"(T {'—' if t is None else f'{t:.3f}'}, {cal.get('fitted_on')}), corrupted "
            f"{pct(rob.get('mean_corruption_accuracy'))} vs clean {pct(rob.get('clean_accuracy'))} "
            f"(drop {pct(rob.get('relative_drop'), 1)}), {trust['seconds']['total']:.0f} s")


def trust_columns(trust: dict | None) -> dict:
    """The results/compare.csv columns of a trust measurement (empty when None)."""
    keys = ("ece_raw_pct", "ece_scaled_pct", "mce_raw_pct", "mce_scaled_pct", "nll_raw", "nll_scaled",
            "temperature", "t_fitted_on", "corrupt_clean_pct", "corrupt_mean_pct", "corrupt_drop_pct",
            "corrupt_images", "corrupt_kinds", "trust_s")
    if trust is None:
        return dict.fromkeys(keys)
    cal, rob = trust["calibration"], trust["robustness"]
    before, after = cal["before"], cal.get("after") or {}

    def pct(v):
        return None if v is None else round(100 * v, 2)
    return dict(zip(keys, (
        pct(before["ece"]), pct(after.get("ece")), pct(before["mce"]), pct(after.get("mce")),
        round(before["nll"], 4), None if after.get("nll") is None else round(after["nll"], 4),
        None if cal.get("temperature") is None else round(cal["temperature"], 4), cal.get("fitted_on"),
        pct(rob["clean_accuracy"]), pct(rob["mean_corruption_accuracy"]), pct(rob["relative_drop"]),
        rob["n"], f"{len(rob['kinds'])}x{len(rob['severities'])}", trust["seconds"]["total"])))
