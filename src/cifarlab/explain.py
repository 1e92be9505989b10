"""Why this class? Grad-CAM and Grad-CAM++ heat maps for every registry model.

Grad-CAM (Selvaraju et al., 2017) weights the feature maps of a convolutional layer by
the mean gradient of the class score over their pixels, sums them and keeps the positive
part; Grad-CAM++ (Chattopadhay et al., 2018) weights each pixel's positive gradient by
a second/third-order term instead, which spreads the map over several instances of the
object. Both are a dozen lines on top of autograd, written here rather than pulled from
a library: captum has Grad-CAM but not Grad-CAM++, pytorch-grad-cam pulls OpenCV and
scikit-learn, and the core of cifarlab depends on torch, numpy and Pillow only.

The layer is the last convolutional stage of the model, found per family:
``features``/``blocks``/``groups`` is the container of stages, and the map is taken at
its last child that is not a pooling, dropout or flattening layer, i.e. the last
feature maps before the classifier pools them away. Any other model falls back to the
last module whose output is a 4-D feature map. Pass ``layer=`` to choose another.

    heat = gradcam(model, x)              # x: normalized [1,C,H,W] (or [C,H,W]) -> HxW in [0,1]
    picture_with_heat = overlay(picture, heat)
    heat = Predictor(ckpt).explain("cat.jpg")   # the same, from a picture file
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from cifarlab.errors import CifarlabError

METHODS = ("gradcam", "gradcam++")
_STAGE_CONTAINERS = ("groups", "blocks", "features", "layers", "stages")
_SKIP = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout,
         nn.Dropout2d, nn.Flatten, nn.Identity)


def target_layer(model: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM explains: the last convolutional stage's output."""
    model = getattr(model, "module", model)  # DDP / wrapped
    model = getattr(model, "_orig_mod", model)  # torch.compile
    for name in _STAGE_CONTAINERS:
        container = getattr(model, name, None)
        if isinstance(container, nn.Sequential) and len(container):
            for child in reversed(list(container.children())):
                if not isinstance(child, _SKIP):
                    return child
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise CifarlabError(f"{type(model).__name__} has no convolutional layer to explain; pass layer=")
    return convs[-1]


def gradcam(model: nn.Module, x: torch.Tensor, target: int | list[int] | None = None,
            layer: nn.Module | None = None, method: str = "gradcam") -> np.ndarray:
    """Heat map(s) of where ``model`` looked to score class ``target`` (default: its top class).

    ``x`` is the normalized input the model takes, [C,H,W] or [N,C,H,W]. Returns float32
    [H,W] for one picture ([N,H,W] for a batch), each map scaled to [0,1] (all zeros when
    nothing in the layer raised the class score). The model is left in the mode it was in.
    """
    if method not in METHODS:
        raise CifarlabError(f"unknown saliency method {method!r}: use one of {', '.join(METHODS)}")
    single = x.dim() == 3
    if single:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise CifarlabError(f"gradcam needs a [C,H,W] or [N,C,H,W] tensor, got shape {tuple(x.shape)}")
    layer = layer if layer is not None else target_layer(model)
    kept: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        if not output.requires_grad:  # frozen weights: track the feature maps themselves
            output = output.detach().requires_grad_()
        kept.append(output)
        return output.clone()  # later in-place ops (ReLU(inplace=True)) must not touch `output`

    handle = layer.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(False))
            if not kept:
                raise CifarlabError("the chosen layer did not run in the forward pass; pass another layer=")
            acts = kept[-1]
            if acts.dim() != 4:
                raise CifarlabError(f"the chosen layer gives a {acts.dim()}-D output; Grad-CAM needs 4-D "
                                    f"feature maps [N,C,h,w]")
            if target is None:
                idx = logits.argmax(dim=1)
            else:
                idx = torch.as_tensor(target, device=logits.device).reshape(-1).expand(len(x))
                if (idx < 0).any() or (idx >= logits.shape[1]).any():
                    raise CifarlabError(f"target class {target} is out of range 0..{logits.shape[1] - 1}")
            score = logits.gather(1, idx.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, acts)
    finally:
        handle.remove()
        model.train(was_training)
    acts, grads = acts.detach().float(), grads.detach().float()
    if method == "gradcam":
        weights = grads.mean(dim=(2, 3), keepdim=True)
    else:  # Grad-CAM++ closed form for an exponential of the score
        g2, g3 = grads.pow(2), grads.pow(3)
        denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g3
        alpha = torch.where(grads != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                            torch.zeros_like(grads))
        weights = (alpha * F.relu(grads)).sum(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo = cam.amin(dim=(1, 2), keepdim=True)
    span = cam.amax(dim=(1, 2), keepdim=True) - lo
    cam = torch.where(span > 1e-12, (cam - lo) / span.clamp_min(1e-12), torch.zeros_like(cam))
    out = cam.cpu().numpy().astype(np.float32)
    return out[0] if single else out


def colorize(heat: np.ndarray) -> np.ndarray:
    """[H,W] in [0,1] as uint8 RGB [H,W,3] on a blue-cyan-yellow-red ("jet") scale."""
    h = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)
    rgb = np.stack([np.clip(1.5 - np.abs(4 * h - c), 0, 1) for c in (3, 2, 1)], axis=-1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def resize_heat(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A heat map resampled (bilinear) to ``size`` = (width, height), as PIL sizes go."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise CifarlabError(f"a heat map is 2-D [H,W], got shape {heat.shape}")
    if (heat.shape[1], heat.shape[0]) == tuple(size):
        return heat
    return np.asarray(Image.fromarray(heat, mode="F").resize(tuple(size), Image.Resampling.BILINEAR))


def overlay(picture: Image.Image, heat: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """``picture`` (any size, any mode) with ``heat`` stretched over it: an RGB PIL image.

    Where the map is near zero the picture shows through; ``alpha`` is the colour's
    weight where the map is 1.
    """
    if not 0 <= alpha <= 1:
        raise CifarlabError(f"overlay alpha must be in [0, 1], got {alpha}")
    base = np.asarray(picture.convert("RGB"), dtype=np.float32)
    h = np.clip(resize_heat(heat, picture.size), 0, 1)
    weight = (alpha * np.sqrt(h))[..., None]  # sqrt: mid-level evidence stays visible
    out = base * (1 - weight) + colorize(h).astype(np.float32) * weight
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


def heat_png(heat: np.ndarray) -> bytes:
    """The heat map as a small colour PNG (its own size), for an API answer."""
    import io
    buf = io.BytesIO()
    Image.fromarray(colorize(heat), "RGB").save(buf, format="PNG")
    return buf.getvalue()
