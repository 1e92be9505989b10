"""``Predictor``: a checkpoint loaded once, classifying pictures of any size and mode.

Pictures are read robustly (EXIF rotation applied; RGBA/LA/PA and palette transparency
composited on white; 16/32-bit and 1-bit converted to 8-bit; CMYK converted), then
resized to 32x32 with Pillow's bilinear filter, which is antialiased when shrinking.
The aspect ratio is NOT kept: the whole picture is squeezed into the square, as the
reference desktop app did and as the CIFAR images themselves were made; cropping could
cut the object off. The web and desktop apps share this class.

A ``.onnx`` file (``cifarlab export``) is run by ONNX Runtime on the CPU when it is
installed: same preprocessing, same outputs within float rounding, faster on a CPU.

Probabilities are temperature-scaled (softmax(logits / T)) when the checkpoint carries a
temperature fitted on its validation split (``cifarlab.calibration``); ``raw_probs=True``
shows the model's own softmax. ``explain`` gives the Grad-CAM heat map of a picture.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cifarlab.inference.checkpoint import load_model
from cifarlab.inference.hardware import pick_device
from cifarlab.errors import CifarlabError, ImageError

MAX_PIXELS = 64_000_000  # larger pictures are refused: a decompression bomb fills RAM
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class Prediction:
    source: str  # file path, or "<image 3>" for in-memory input
    label: str | None = None  # most probable class
    index: int | None = None
    probabilities: dict[str, float] = field(default_factory=dict)  # every class, most probable first
    top: list[tuple[str, float]] = field(default_factory=list)  # the top_k of them
    error: str | None = None  # why the picture could not be read (then nothing else is set)

    def to_dict(self) -> dict:
        return {"source": self.source, "label": self.label, "index": self.index,
                "probabilities": self.probabilities, "top": [list(t) for t in self.top],
                "error": self.error}


# ---------------------------------------------------------------- reading pictures
def load_image(item, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A path, bytes, PIL image or uint8 array as an 8-bit RGB PIL image (any size)."""
    if isinstance(item, Image.Image):
        return to_rgb(item, "<image>", max_pixels)
    if isinstance(item, np.ndarray):
        return to_rgb(_from_array(item), "<array>", max_pixels)
    if isinstance(item, (bytes, bytearray)):
        return _open(io.BytesIO(item), "<bytes>", max_pixels)
    return _open(Path(item), str(item), max_pixels)


def _open(source, name: str, max_pixels: int) -> Image.Image:
    if isinstance(source, Path) and not source.is_file():
        raise ImageError(f"{name}: no such file")
    try:
        with Image.open(source) as img:
            _check_size(img, name, max_pixels)
            img = ImageOps.exif_transpose(img)
            return to_rgb(img, name, max_pixels)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: too many pixels (decompression-bomb guard); downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "not a readable image" if isinstance(exc, UnidentifiedImageError) else f"unreadable ({exc})"
        raise ImageError(f"{name}: {reason}") from None


def _check_size(img: Image.Image, name: str, max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"{name}: {w}x{h} is {w * h / 1e6:.0f} Mpixels, over the {max_pixels / 1e6:.0f} "
                         f"Mpixel limit (decompression-bomb guard); downscale it first")
    if w == 0 or h == 0:
        raise ImageError(f"{name}: empty image ({w}x{h})")


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ImageError(f"array of {arr.dtype} {arr.shape}: expected uint8 HxW, HxWx1, HxWx3 or HxWx4")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return Image.fromarray(np.ascontiguousarray(arr))


def to_rgb(img: Image.Image, name: str = "<image>", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Any Pillow mode as RGB: transparency on white, high bit depths scaled to 8 bits."""
    _check_size(img, name, max_pixels)
    if img.mode == "P":  # palette: transparency may live in info, make it an alpha channel
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _deep_to_l(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGB


def _deep_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit grey as 8-bit: 16-bit range scaled by 255/65535, wider ranges by their max."""
    arr = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
    if arr.max(initial=0) > 65535:
        top = float(arr.max())
    return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def to_input(img: Image.Image, size: int = 32) -> np.ndarray:
    """uint8 [size, size, 3]: bilinear (antialiased when shrinking), aspect ratio not kept."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def expand_paths(items: Iterable) -> list:
    """Folders replaced by the pictures in them (sorted, by suffix); other items as given."""
    out: list = []
    for item in items:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            out += sorted(p for p in Path(item).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(item)
    return out


# ---------------------------------------------------------------- the predictor
class Predictor:
    """Load a checkpoint (file or run folder) or an exported ``.onnx`` file once; ``predict``
    many pictures. ``backend`` says which ran it: "torch" or "onnxruntime"."""

    def __init__(self, checkpoint, device: str | torch.device | None = None, max_pixels: int = MAX_PIXELS,
                 raw_probs: bool = False):
        if str(checkpoint).lower().endswith(".onnx"):
            self._load_onnx(checkpoint, device)
        else:
            self.device = pick_device(device)
            self.model, self.meta = load_model(checkpoint, self.device)
            self.backend = "torch"
        self.classes: list[str] = list(self.meta["classes"])
        norm = self.meta["normalize"]
        self.grayscale = norm.get("grayscale")
        channels = self.grayscale or 3
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, channels, 1, 1).to(self.device)
        self.std = torch.tensor(norm["std"], dtype=torch.float32).view(1, channels, 1, 1).to(self.device)
        self.max_pixels = max_pixels
        from cifarlab.calibration import temperature_for
        # T: the temperature fitted on the validation split (None: none stored); an ONNX export
        # has it in its graph already, so its logits are divided by it once, there
        self.temperature = temperature_for(self.meta)
        self.temperature_in_graph = bool((self.meta.get("calibration") or {}).get("in_graph"))
        self.raw_probs = raw_probs

    def _load_onnx(self, path, device) -> None:
        from cifarlab.inference.export import OnnxModel, onnxruntime_available
        if not onnxruntime_available():
            raise CifarlabError(f"{path} is an ONNX export and onnxruntime is not installed; "
                                f"pip install 'cifarlab[onnx]' (or predict from the .pt checkpoint)")
        if device is not None and str(device) not in ("auto", "cpu"):
            raise CifarlabError(f"{path}: ONNX exports run on the CPU here; drop --device {device}")
        self.device = torch.device("cpu")
        self.model = OnnxModel(path)
        self.meta = self.model.meta
        self.backend = "onnxruntime"

    def preprocess(self, arrays: list[np.ndarray]) -> torch.Tensor:
        """uint8 [N,32,32,3] pictures as the normalized float batch the model was trained on."""
        from cifarlab.data import normalize
        x = torch.from_numpy(np.stack(arrays)).to(self.device).permute(0, 3, 1, 2)
        return normalize(x, self.mean, self.std, self.grayscale)

    @torch.no_grad()
    def probabilities(self, arrays: list[np.ndarray], raw: bool | None = None) -> np.ndarray:
        """Softmax probabilities [N, classes] of uint8 [32,32,3] pictures: temperature-scaled
        when the model has a temperature, unless ``raw`` (default: the predictor's ``raw_probs``)."""
        logits = self.model(self.preprocess(arrays))
        if isinstance(logits, np.ndarray):  # onnxruntime
            logits = torch.from_numpy(logits)
        logits = logits.float()
        raw = self.raw_probs if raw is None else raw
        if self.temperature:
            if self.temperature_in_graph and raw:
                logits = logits * self.temperature
            elif not self.temperature_in_graph and not raw:
                logits = logits / self.temperature
        return torch.softmax(logits, dim=1).cpu().numpy()

    def explain(self, item, target: int | None = None, method: str = "gradcam") -> np.ndarray:
        """Grad-CAM heat map [32, 32] in [0, 1] of one picture (path, bytes, PIL image or
        array) for class ``target`` (default: the predicted one). Stretch it over the picture
        with ``cifarlab.explain.overlay(load_image(item), heat)``."""
        from cifarlab.explain import gradcam
        if self.backend != "torch":
            raise CifarlabError("saliency maps need the PyTorch checkpoint (.pt), not an ONNX export")
        x = self.preprocess([to_input(load_image(item, self.max_pixels))])
        return gradcam(self.model, x[0], target=target, method=method)

    def predict(self, items, top_k: int = 3, on_error: str = "raise", batch_size: int = 256) -> list[Prediction]:
        """One Prediction per item (path, bytes, PIL image or uint8 array; folders expanded).

        ``on_error="raise"`` raises ImageError for an unreadable item; ``"report"`` returns it
        as a Prediction with ``error`` set and goes on with the others.
        """
        if isinstance(items, (str, Path, Image.Image, np.ndarray, bytes)):
            items = [items]
        results, arrays, pending = [], [], []
        for i, item in enumerate(expand_paths(items)):
            name = str(item) if isinstance(item, (str, Path)) else f"<image {i}>"
            try:
                arrays.append(to_input(load_image(item, self.max_pixels)))
                pending.append(len(results))
                results.append(Prediction(name))
            except ImageError as exc:
                if on_error == "raise":
                    raise
                results.append(Prediction(name, error=str(exc)))
        for start in range(0, len(arrays), batch_size):
            probs = self.probabilities(arrays[start:start + batch_size])
            for row, slot in zip(probs, pending[start:start + batch_size]):
                self._fill(results[slot], row, top_k)
        return results

    def _fill(self, pred: Prediction, row: np.ndarray, top_k: int) -> None:
        ranked = rank(self.classes, row)
        pred.index, pred.label = ranked[0][0], ranked[0][1]
        pred.probabilities = {c: p for _, c, p in ranked}
        pred.top = [(c, p) for _, c, p in ranked[:max(1, top_k)]]


def rank(classes: list[str], row: np.ndarray) -> list[tuple[int, str, float]]:
    """(index, class, probability) for every class, most probable first, ties in class order:
    the one ranking that the CLI, the web service and the desktop app show."""
    return [(int(j), classes[j], float(row[j])) for j in np.argsort(-row, kind="stable")]
