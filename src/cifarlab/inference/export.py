"""ONNX export of a checkpoint, and ``OnnxModel``: fast CPU inference with ONNX Runtime.

The exported file describes itself as a checkpoint does: its ``metadata_props`` hold the
class names, the normalization (mean, std, grayscale), the model's name and arguments
and the cifarlab version, so ``Predictor("model.onnx")`` needs nothing else. The input is
the normalized float batch ``input`` [N, C, 32, 32] (N free), the output ``logits`` [N, K].

Needs the ``onnx`` extra (``pip install 'cifarlab[onnx]'``): ``onnx`` to write the
file, ``onnxruntime`` to run it; both are imported only here, inside the functions.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cifarlab.atomic import atomic_write_bytes
from cifarlab import __version__
from cifarlab.errors import CifarlabError, ConfigError

FORMAT = "cifarlab-onnx/1"
OPSET = 18  # >= 17 for LayerNormalization; 18 is the lowest the dynamo exporter emits
EXPORTERS = ("auto", "torchscript", "dynamo")
_EXTRA = "pip install 'cifarlab[onnx]'"


def _need(module: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CifarlabError(f"{module} is not installed; {_EXTRA}") from None


# ---------------------------------------------------------------- export
def export_checkpoint(checkpoint, out: str | Path | None = None, exporter: str = "auto") -> Path:
    """Write the checkpoint (file or run folder) as ONNX; ``out`` defaults to beside it, .onnx."""
    from cifarlab.inference.checkpoint import load_checkpoint, load_model
    ckpt = load_checkpoint(checkpoint)
    model, meta = load_model(ckpt, "cpu")
    out = Path(out) if out else Path(ckpt["path"]).with_suffix(".onnx")
    return export_model(model, meta, out, exporter)


def export_model(model: nn.Module, meta: dict, out: str | Path, exporter: str = "auto",
                 fold_constants: bool = True) -> Path:
    """``model`` (eval mode, CPU) as an ONNX file at ``out`` with ``meta``'s description.

    ``meta`` needs "model" {name, kwargs, num_classes}, "classes" and "normalize"
    {mean, std, grayscale}, as ``load_model`` returns them. ``fold_constants=False`` skips
    the TorchScript exporter's constant folding (2-4x faster export; ONNX Runtime folds
    the same constants itself when it loads the file, so its outputs do not change).
    """
    _need("onnx")
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter {exporter!r} is not one of: {', '.join(EXPORTERS)}")
    model = model.eval().cpu()
    from cifarlab.calibration import temperature_for
    if temperature := temperature_for(meta):  # calibrated probabilities: logits / T in the graph
        model = _Scaled(model, temperature)
        meta = {**meta, "calibration": {"temperature": temperature}}
    channels = 1 if meta["normalize"].get("grayscale") == 1 else 3
    example = torch.randn(2, channels, 32, 32)
    proto = _to_proto(model, example, exporter, fold_constants)
    _check_declared(proto)
    for key, value in metadata(meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    out = Path(out)
    atomic_write_bytes(out, proto.SerializeToString())
    return out


class _Scaled(nn.Module):
    """The model's logits divided by its temperature (raw ones: multiply by ``temperature``)."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model, self.temperature = model, float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


def _to_proto(model: nn.Module, example: torch.Tensor, exporter: str, fold_constants: bool = True):
    """The ONNX ModelProto; the TorchScript exporter when torch still has it (seconds faster
    per model, no onnxscript needed), else torch.export-based ``dynamo``."""
    onnx = _need("onnx")
    names = dict(input_names=["input"], output_names=["logits"], opset_version=OPSET)
    if exporter in ("auto", "torchscript"):
        try:
            buf = io.BytesIO()
            with warnings.catch_warnings():  # the deprecation notice and constant-folding chatter
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), buf, dynamo=False, do_constant_folding=fold_constants,
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **names)
            return onnx.load_from_string(buf.getvalue())
        except (TypeError, NotImplementedError, RuntimeError) as exc:
            if exporter == "torchscript":
                raise CifarlabError(f"the TorchScript ONNX exporter failed: {str(exc).splitlines()[0][:200]}") from None
    _need("onnxscript")  # the dynamo exporter's dependency, part of the onnx extra
    program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
    return program.model_proto


def _check_declared(proto) -> None:
    """The batch axis must be symbolic, or the file would only take batches of 2."""
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if not dim.dim_param:
        raise CifarlabError("the exported graph has a fixed batch size; report this model as not exportable")


def metadata(meta: dict) -> dict[str, str]:
    """The metadata_props written into the file (all strings; lists and dicts as JSON)."""
    norm, spec = meta["normalize"], meta["model"]
    out = {"format": FORMAT, "classes": json.dumps(list(meta["classes"])),
           "mean": json.dumps([float(v) for v in norm["mean"]]), "std": json.dumps([float(v) for v in norm["std"]]),
           "grayscale": json.dumps(norm.get("grayscale")), "model_name": spec["name"],
           "model_kwargs": json.dumps(spec.get("kwargs", {})), "num_classes": str(spec["num_classes"]),
           "cifarlab_version": __version__, "input": "float32 [N, C, 32, 32], normalized: (pixel/255 - mean) / std"}
    if meta.get("epoch") is not None:
        out["epoch"] = str(meta["epoch"])
    if (meta.get("calibration") or {}).get("temperature"):  # already applied in the graph
        out["temperature"] = repr(float(meta["calibration"]["temperature"]))
    return out


def read_metadata(props: dict[str, str], path: str = "<onnx>") -> dict[str, Any]:
    """``metadata`` read back as a meta dict shaped like ``load_model``'s."""
    if props.get("format") != FORMAT:
        raise CifarlabError(f"{path} is not a cifarlab ONNX export (no {FORMAT} metadata); "
                            f"export it with `cifarlab export CHECKPOINT --format onnx`")
    from cifarlab.inference.checkpoint import check_meta
    try:
        meta = {"model": {"name": props["model_name"], "kwargs": json.loads(props["model_kwargs"]),
                          "num_classes": int(props["num_classes"])},
                "classes": json.loads(props["classes"]),
                "normalize": {"mean": json.loads(props["mean"]), "std": json.loads(props["std"]),
                              "grayscale": json.loads(props["grayscale"])},
                "epoch": int(props["epoch"]) if "epoch" in props else None,
                "versions": {"cifarlab": props.get("cifarlab_version")}, "path": path, "format": FORMAT}
    except KeyError as exc:
        raise CifarlabError(f"{path} is damaged: its {FORMAT} metadata lacks {exc.args[0]!r}; export the "
                            f"checkpoint again") from None
    except ValueError as exc:  # json.JSONDecodeError included
        raise CifarlabError(f"{path} is damaged: its {FORMAT} metadata does not parse ({exc}); export the "
                            f"checkpoint again") from None
    check_meta(meta, path)
    return meta


# ---------------------------------------------------------------- running
def onnxruntime_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("onnxruntime") is not None


class OnnxModel:
    """An exported file run by ONNX Runtime on the CPU: ``model(x)`` -> logits (numpy)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        ort = _need("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise CifarlabError(f"{path} does not exist")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a truncated or foreign file: say which one
            raise CifarlabError(f"{path} is not a readable ONNX model ({str(exc).splitlines()[0][:160]})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = read_metadata(props, str(path))
        if "temperature" in props:  # the graph divides its logits by it already
            try:
                self.meta["calibration"] = {"temperature": float(props["temperature"]), "in_graph": True}
            except ValueError:
                raise CifarlabError(f"{path} is damaged: its temperature {props['temperature']!r} is not a "
                                    f"number; export the checkpoint again") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
