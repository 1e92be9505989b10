"""Evaluate a checkpoint on a split: top-1, top-5, per-class accuracy, confusion matrix, TTA,
and calibration (ECE/MCE over 15 bins, raw and with the checkpoint's temperature)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cifarlab.inference.checkpoint import load_checkpoint, load_model
from cifarlab.training.config import TTA_MODES, TrainConfig
from cifarlab.training.dataset import data_for
from cifarlab.inference.hardware import pick_device
from cifarlab.training.loop import run_eval
from cifarlab.training.losses import build_loss
from cifarlab.training.metrics import confusion_matrix, per_class_accuracy
from cifarlab.errors import ConfigError, DataError


def tta_views(x: torch.Tensor, mode: str | bool = "flip") -> list[torch.Tensor]:
    """The views whose logits are averaged: the batch, its mirror, and with "flip-translate"
    both shifted by one pixel up-left and down-right (edges replicated)."""
    mode = _tta_mode(mode)
    if mode == "none":
        return [x]
    views = [x, x.flip(-1)]
    if mode == "flip-translate":
        padded = torch.nn.functional.pad(torch.cat(views), (1, 1, 1, 1), mode="replicate")
        h, w = x.shape[-2:]
        for dy, dx in ((0, 0), (2, 2)):  # (1,1) would be the unshifted view
            shifted = padded[..., dy:dy + h, dx:dx + w]
            views += list(shifted.chunk(2))
    return views


def view_maker(mode: str | bool | None):
    """The function ``run_eval`` builds each batch's TTA views with, or None for no TTA."""
    mode = _tta_mode(mode)
    return (lambda x: tta_views(x, mode)) if mode != "none" else None


def _tta_mode(mode: str | bool | None) -> str:
    if mode is True:
        return "flip"
    if not mode:
        return "none"
    if mode not in TTA_MODES:
        raise ConfigError(f"tta={mode!r} is not one of: {', '.join(TTA_MODES)}")
    return mode


def evaluate_model(model, loader, classes: list[str], device: torch.device, loss: str = "ce",
                   tta: str | bool = False, amp: bool = False, amp_eval: bool = False) -> dict:
    """Metrics of ``model`` on every batch of ``loader`` (eval mode, logits averaged over TTA views)."""
    mode = _tta_mode(tta)
    views = view_maker(mode)
    loss_fn = build_loss(loss, len(classes))
    acc = run_eval(model, loader, loss_fn, device, amp, keep_predictions=True, views=views, amp_eval=amp_eval)
    y_true, y_pred = acc.predictions()
    conf = confusion_matrix(y_true, y_pred, len(classes))
    per_class = per_class_accuracy(conf)
    out = {"n": acc.n, "top1": acc.correct1 / max(acc.n, 1), "top5": acc.correct5 / max(acc.n, 1),
           "loss": acc.loss_sum / max(acc.n, 1),
           "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, per_class)},
           "confusion": conf.tolist(), "classes": list(classes), "tta": mode}
    if loss == "bce":
        out["binary_accuracy"] = acc.binary / max(acc.entries, 1)
    return out


def saved_norm_loader(split, norm: dict, device: torch.device, batch_size: int = 500,
                      channels_last: bool = False):
    """An evaluation loader over ``split``, normalized as a run saved it (``{"mean", "std",
    "grayscale"}``): the run's own final test and ``evaluate`` of its checkpoint alike."""
    from cifarlab.data import DeviceLoader
    return DeviceLoader(split, batch_size, device, norm["mean"], norm["std"], shuffle=False,
                        grayscale=norm.get("grayscale"), channels_last=channels_last)


def checkpoint_with_data(run_or_checkpoint, data=None, device: str | None = None):
    """(checkpoint, model on the device, its meta, its config, the data, the device): a checkpoint
    and the data it is measured on -- ``data`` a CifarData, a path, or None for the source the run
    was trained on (the same val size and seed) -- whose classes must be the checkpoint's.
    What evaluate, calibrate and the corruption suite start from."""
    ckpt = load_checkpoint(run_or_checkpoint)
    dev = pick_device(device or "auto")
    model, meta = load_model(ckpt, dev)
    cfg = TrainConfig.from_dict(meta["config"])
    if data is None or isinstance(data, (str, Path)):
        data = data_for(cfg.override({"data": str(data)} if data else {}), progress=False)
    if list(data.classes) != list(meta["classes"]):
        raise DataError(f"the data's classes {data.classes[:3]}... differ from the checkpoint's "
                        f"{meta['classes'][:3]}...; evaluate on the data set it was trained on")
    return ckpt, model, meta, cfg, data, dev


def evaluate(run_or_checkpoint, data=None, tta: str | bool = False, split: str = "test",
             batch_size: int = 500, device: str | None = None) -> dict:
    """Evaluate a run folder (its best.pt) or a checkpoint file on the test (or val) split.

    ``data`` is a CifarData, a path, or None for the source the run was trained on
    (the same val size and seed, so ``split="val"`` is the same validation set).
    """
    ckpt, model, meta, cfg, data, dev = checkpoint_with_data(run_or_checkpoint, data, device)
    if split not in ("test", "val"):
        raise ConfigError(f"split={split!r} must be test or val")
    part = getattr(data, split)
    if len(part) == 0:
        raise DataError(f"the {split} split is empty (the run used val=0?); use --split test")
    norm = meta["normalize"]
    if cfg.channels_last:  # as the run's own test: the same layout, kernels and numbers
        model = model.to(memory_format=torch.channels_last)
    loader = saved_norm_loader(part, norm, dev, batch_size, cfg.channels_last)
    recorder = _LogitRecorder(model)
    out = evaluate_model(recorder, loader, meta["classes"], dev, cfg.loss, tta, cfg.amp, cfg.amp_eval)
    out.update(checkpoint=ckpt["path"], split=split, epoch=meta.get("epoch"), model=meta["model"]["name"])
    out["calibration"] = _calibration(recorder.logits(len(tta_views(torch.zeros(1, 1, 4, 4), out["tta"]))),
                                      np.asarray(part.labels), meta)
    return out


class _LogitRecorder(torch.nn.Module):
    """The model, keeping a CPU copy of every output (one per TTA view) for calibration."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.outputs = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        self.outputs.append(z.detach().float().cpu())
        return z

    def logits(self, views: int) -> np.ndarray:
        """[N, K]: each batch's views averaged, as ``run_eval`` averages them."""
        groups = [torch.stack(self.outputs[i:i + views]).mean(0) for i in range(0, len(self.outputs), views)]
        return torch.cat(groups).numpy()


def _calibration(logits: np.ndarray, labels: np.ndarray, meta: dict) -> dict:
    """ECE/MCE/NLL of the split, raw and (when the checkpoint has one) with its temperature."""
    from cifarlab.calibration import N_BINS, calibration_bins, calibration_of, nll, softmax
    cal = calibration_of(meta) or {}
    t = float(cal["temperature"]) if cal else None
    out = {"n_bins": N_BINS, "temperature": t, "fitted_on": cal.get("fitted_on"),
           "before": {**calibration_bins(softmax(logits), labels), "nll": nll(logits, labels)}}
    if t:
        out["after"] = {**calibration_bins(softmax(logits, t), labels), "nll": nll(logits, labels, t)}
    return out


def write_confusion(result: dict, out_dir: str | Path, stem: str = "confusion", png: bool = True) -> list[Path]:
    """confusion.csv always, confusion.png when matplotlib is installed; returns the paths."""
    from cifarlab.training import plots
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conf, classes = np.asarray(result["confusion"]), result["classes"]
    written = [out_dir / f"{stem}.csv"]
    plots.save_confusion_csv(conf, classes, written[0])
    if png and plots.available():
        written.append(out_dir / f"{stem}.png")
        title = f"{result.get('split', 'test')}: top-1 {result['top1']:.2%} (n={result['n']})"
        plots.save_confusion(conf, classes, written[1], title)
    return written
