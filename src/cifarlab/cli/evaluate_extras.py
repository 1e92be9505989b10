"""The parts of ``cifarlab evaluate`` and ``cifarlab predict`` that say how sure and why:
calibration (``--calibrate``), corrupted test sets (``--corruptions``), the model card, and
Grad-CAM overlays (``predict --explain``). Kept here so the command module stays small."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cifarlab.errors import ConfigError


def _is_shipped(checkpoint: str | Path) -> bool:
    import cifarlab
    return Path(checkpoint).resolve().parent == (Path(cifarlab.__file__).resolve().parent / "assets")


def _severities(text: str) -> tuple[int, ...]:
    try:
        sev = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--severities {text!r}: give a comma list of 1..5, e.g. 1,3,5") from None
    if not sev or any(s not in (1, 2, 3, 4, 5) for s in sev):
        raise ConfigError(f"--severities {text!r}: give a comma list of 1..5, e.g. 1,3,5")
    return sev


def evaluate_extras(args: argparse.Namespace, result: dict, out_dir: Path | None) -> dict:
    """Calibration refit, reliability diagram, corruptions and model card; returns what to report."""
    from cifarlab.training.calibrate import calibrate_checkpoint, save_reliability
    from cifarlab.training import plots
    extras: dict = {"written": []}
    ckpt = result["checkpoint"]
    if getattr(args, "corruptions", None) is not None:  # checked before the long parts run
        from cifarlab.corruptions import parse_kinds
        kinds, sevs = parse_kinds(args.corruptions), _severities(args.severities)
        if args.limit is not None and args.limit < 1:
            raise ConfigError(f"--limit {args.limit} must be >= 1")
    if getattr(args, "calibrate", False):
        shipped = _is_shipped(ckpt)
        report = calibrate_checkpoint(ckpt, data=args.data, device=args.device,
                                      store="sidecar" if shipped else "checkpoint")
        extras["calibrated"] = {k: report.get(k) for k in ("temperature", "val_nll_before", "val_nll_after",
                                                           "sidecar")}
        extras["calibrated"]["test_ece_before"] = report["before"]["ece"]
        extras["calibrated"]["test_ece_after"] = report["after"]["ece"]
        extras["calibrated"]["stored_in"] = report.get("sidecar") or ckpt
        if result.get("split") == "test" and result.get("tta") in (None, "none"):
            result["calibration"] = {**report, "fitted_on": "val"}
    cal = result.get("calibration")
    if out_dir is not None and cal and plots.available():
        path = Path(out_dir) / f"reliability-{result.get('split', 'test')}.png"
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_reliability(cal, path, title=f"{result.get('model', '')} on {result.get('split', 'test')}")
        extras["written"].append(str(path))
    if getattr(args, "corruptions", None) is not None:
        from cifarlab.corruptions import evaluate_corruptions, write_corruptions

        def say(kind, sev, acc, secs):
            print(f"  {kind} severity {sev}: {acc:.2%} ({secs:.1f} s)", file=sys.stderr)

        corr = evaluate_corruptions(ckpt, data=args.data, kinds=kinds, severities=sevs, seed=args.seed,
                                    device=args.device, limit=args.limit, progress=say,
                                    precision=getattr(args, "precision", "auto"))
        extras["corruptions"] = corr
        _record_corruptions(corr, ckpt)
        if out_dir is not None:
            extras["written"] += [str(p) for p in write_corruptions(corr, out_dir)]
    if result.get("split") == "test":
        from cifarlab.shipped import looks_like_path
        ref = getattr(args, "checkpoint", None)
        extras["model_card"], written = _card(result, extras, Path(out_dir) if out_dir is not None else None,
                                              ref if ref and not looks_like_path(ref) else None, ref)
        extras["written"] += [str(p) for p in written]
    return extras


def _card(result: dict, extras: dict, out_dir: Path | None, name: str | None = None,
          ref: str | None = None) -> tuple[dict, list[Path]]:
    """The model card and the files written: a run folder's card rebuilt from its files; any
    other model gets one from this evaluation (the robustness, when not measured now, from
    results/ rows naming the file), written to ``out_dir`` when there is one."""
    from cifarlab import modelcard
    if out_dir is not None and (out_dir / "summary.json").is_file():
        written = modelcard.write_run_card(out_dir)
        return modelcard.run_card(out_dir) or modelcard.unavailable(out_dir.name, "no model_card.json"), written
    from cifarlab.inference.checkpoint import load_checkpoint
    ckpt = load_checkpoint(result["checkpoint"])
    summary = {**modelcard.checkpoint_summary(ckpt), "model": result.get("model"),
               "test": {k: result.get(k) for k in ("n", "top1", "top5", "tta", "per_class")}}
    conf = result.get("confusion")
    card = modelcard.build_card(summary, conf, result.get("classes"), calibration=result.get("calibration"),
                                corruptions=extras.get("corruptions"), name=name or Path(result["checkpoint"]).stem)
    card.update(kind="checkpoint", weights=ckpt.get("weights_dtype"), measure_with=ref or card["name"],
                sources={"accuracy": "this evaluation", "calibration": "this evaluation"})
    if card["calibration"] and not card["calibration"].get("temperature"):
        card["calibration"]["note"] = "no temperature travels with this file: the apps show its raw probabilities"
    if card["robustness"] is None:  # measured before, on this very file?
        from cifarlab.calibration import file_sha256, read_sidecar
        from cifarlab.catalog import card_rows
        known = modelcard.card_for(result["checkpoint"], card["name"], load_meta=lambda _: ckpt,
                                   read_sidecar=read_sidecar, sha256=file_sha256, read_rows=card_rows)
        if known.get("robustness"):
            card["robustness"], card["sources"]["robustness"] = known["robustness"], known["sources"]["robustness"]
    card["sources"]["training"] = "the checkpoint's provenance" if ckpt.get("provenance") else "the checkpoint's config"
    return card, (modelcard.write_card(out_dir, card) if out_dir is not None else [])


def print_card(card: dict) -> None:
    """The model card in a few lines (the accuracy table is printed above it)."""
    from cifarlab.modelcard import sections
    print(f"model card: {card.get('name')}")
    for sec in sections(card):
        if sec["key"] in ("intro", "accuracy"):
            continue
        rows = "; ".join(f"{r[0]} {r[1]} ({r[2]} + {r[3]})" for r in sec.get("rows") or [])
        text = " ".join(t.replace("`", "") for t in sec.get("text") or [])
        body = " ".join(x for x in (rows, text) if x)
        print(f"  {sec['title']}: {body}" if sec["title"] else f"  {body}")


def print_extras(extras: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console(soft_wrap=True)
    if cal := extras.get("calibrated"):
        console.print(f"temperature {cal['temperature']:.4f} fitted on the validation split (NLL "
                      f"{cal['val_nll_before']:.4f} -> {cal['val_nll_after']:.4f}); test ECE "
                      f"{cal['test_ece_before']:.2%} -> {cal['test_ece_after']:.2%}; stored in {cal['stored_in']}",
                      highlight=False)
    corr = extras.get("corruptions")
    if corr:
        table = Table(title=f"corrupted test sets (n={corr['n']}, seed {corr['seed']}): accuracy per severity")
        table.add_column("kind")
        for s in corr["severities"]:
            table.add_column(str(s), justify="right")
        table.add_column("mean", justify="right")
        table.add_column("s / copy", justify="right")
        for k in corr["kinds"]:
            a, t = corr["accuracy"][k], corr["seconds"][k]
            table.add_row(k, *[f"{v:.2%}" for v in a], f"{sum(a) / len(a):.2%}", f"{sum(t) / len(t):.1f}")
        console.print(table)
        console.print(f"clean {corr['clean_accuracy']:.2%} | mean corruption accuracy "
                      f"{corr['mean_corruption_accuracy']:.2%} | relative drop {corr['relative_drop']:.1%} | "
                      f"{corr['total_seconds']:.0f} s in all", highlight=False)
    if extras.get("model_card"):
        print_card(extras["model_card"])
    if extras.get("written"):
        console.print("written: " + ", ".join(extras["written"]), highlight=False)


def write_explanations(predictor, results, folder: str | Path, method: str = "gradcam") -> list[Path]:
    """One overlay PNG per classified picture: its Grad-CAM map for the predicted class."""
    from cifarlab.atomic import atomic_path
    from cifarlab.inference.predict import load_image
    from cifarlab.explain import overlay
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for r in results:
        if r.error:
            continue
        picture = load_image(r.source, predictor.max_pixels)
        heat = predictor.explain(picture, target=r.index, method=method)
        stem = Path(r.source).stem if not r.source.startswith("<") else "image"
        name, n = f"{stem}-{r.label}.png", 1
        while name in used:
            n += 1
            name = f"{stem}-{r.label}-{n}.png"
        used.add(name)
        with atomic_path(folder / name, ".png") as tmp:
            overlay(picture, heat).save(tmp, format="PNG")
        written.append(folder / name)
    print(f"{len(written)} saliency overlay(s) written to {folder}", file=sys.stderr)
    return written


def _record_corruptions(corr: dict, checkpoint) -> None:
    """The robustness of this file as a row of results/corruptions.csv (where a results folder is
    kept): what its model card reads, keyed by the file's SHA-256."""
    import hashlib

    from cifarlab import results
    path = Path(corr["checkpoint"])
    pct = (lambda v: None if v is None else round(100 * v, 2))
    results.record("corruptions", {
        "model": corr["model"], "checkpoint": path.name,
        "checkpoint_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "seed": corr["seed"], "n": corr["n"],
        "clean_top1_pct": pct(corr["clean_accuracy"]), "mean_corruption_pct": pct(corr["mean_corruption_accuracy"]),
        "relative_drop_pct": pct(corr["relative_drop"]), "kinds": " ".join(corr["kinds"]),
        "severities": " ".join(str(s) for s in corr["severities"]), "total_s": corr["total_seconds"],
        "precision": corr.get("precision")})
