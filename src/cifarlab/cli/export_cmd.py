"""``cifarlab export CHECKPOINT --format onnx [-o model.onnx]``: a checkpoint for other runtimes."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX (needs the onnx extra)",
                              description="Export a checkpoint to ONNX, with its class names and normalization "
                                          "in the file's metadata. Needs: pip install 'cifarlab[onnx]'.")
    p.add_argument("checkpoint", metavar="RUN|CHECKPOINT", help="run folder (uses best.pt) or .pt file")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format (onnx)")
    p.add_argument("-o", "--out", default=None, help="output file (default: the checkpoint's name with .onnx)")
    p.add_argument("--exporter", default="auto", choices=["auto", "torchscript", "dynamo"],
                   help="torch's ONNX exporter: auto = TorchScript while torch has it, else dynamo")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cifarlab.engine.export import export_checkpoint, onnxruntime_available
    out = export_checkpoint(args.checkpoint, args.out, args.exporter)
    line = f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)"
    if onnxruntime_available():
        line += f"; onnxruntime vs torch on a random batch: max |logit difference| {_check(args.checkpoint, out):.2g}"
    print(line)
    return 0


def _check(checkpoint, path) -> float:
    """Largest logit difference between the exported file and the checkpoint on random input."""
    import numpy as np
    import torch

    from cifarlab.engine.checkpoint import load_model
    from cifarlab.engine.export import OnnxModel
    model, _ = load_model(checkpoint, "cpu")
    onnx_model = OnnxModel(path)
    channels = 1 if onnx_model.meta["normalize"]["grayscale"] == 1 else 3
    x = torch.randn(4, channels, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float(np.abs(onnx_model(x) - model(x).numpy()).max())
