"""``cifarlab export MODEL --format onnx [-o model.onnx]``: a checkpoint for other runtimes."""

from __future__ import annotations

import argparse

from cifarlab.cli._help import Defaults


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a trained model to ONNX (needs the onnx extra)",
                              description="Export a trained model to ONNX, with its class names and normalization "
                                          "in the file's metadata. Needs: pip install 'cifarlab[onnx]'.",
                              formatter_class=Defaults)
    p.add_argument("checkpoint", metavar="MODEL",
                   help="'default' (the shipped model), a run's name or id, a run folder (its best.pt) or a .pt file")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format")
    p.add_argument("-o", "--out", default=None,
                   help="output file; its folder must exist (default: beside the checkpoint with .onnx; "
                        "default.onnx here for the shipped model)")
    p.add_argument("--exporter", default="auto", choices=["auto", "torchscript", "dynamo"],
                   help="torch's ONNX exporter: auto = TorchScript while torch has it, else dynamo")
    p.set_defaults(func=run)


def output_path(found, out: str | None):
    """Where the export goes: ``out`` (its folder must exist), else beside a run's checkpoint, else
    ``<name>.onnx`` in the current folder for a shipped model (never into the installed package)."""
    from pathlib import Path

    from cifarlab.errors import ConfigError
    if out:
        path = Path(out)
        if not path.parent.is_dir():
            raise ConfigError(f"folder {path.parent} does not exist: create it or choose another -o path")
        return path
    if found.source == "shipped":
        return Path(f"{found.name}.onnx")
    return found.path.with_suffix(".onnx")


def run(args: argparse.Namespace) -> int:
    from cifarlab.inference.export import export_checkpoint, onnxruntime_available
    from cifarlab.resolve import resolve
    found = resolve(args.checkpoint)
    if found.path.suffix.lower() == ".onnx":
        from cifarlab.errors import ConfigError
        raise ConfigError(f"{found.path} is already an ONNX file")
    out = export_checkpoint(found.path, output_path(found, args.out), args.exporter)
    line = f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)"
    if onnxruntime_available():
        line += f"; onnxruntime vs torch on a random batch: max |logit difference| {_check(found.path, out):.2g}"
    print(line)
    return 0


def _check(checkpoint, path) -> float:
    """Largest logit difference between the exported file and the checkpoint on random input."""
    import numpy as np
    import torch

    from cifarlab.inference.checkpoint import load_model
    from cifarlab.inference.export import OnnxModel
    model, _ = load_model(checkpoint, "cpu")
    onnx_model = OnnxModel(path)
    channels = 1 if onnx_model.meta["normalize"]["grayscale"] == 1 else 3
    x = torch.randn(4, channels, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float(np.abs(onnx_model(x) - model(x).numpy()).max())
