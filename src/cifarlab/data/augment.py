"""Augmentation as batched tensor ops on NCHW float batches, on whatever device they live.

Every random op draws its per-image parameters from an explicit CPU ``torch.Generator``
and only then moves them to the batch's device, so a given generator state yields the same
batch on CPU and GPU and a resumed run replays the same augmentations. The moves are
``non_blocking``: a blocking copy to CUDA waits for the whole queue of GPU work each batch
(a pageable source is staged at once, so the CPU tensor may be freed right after).

Spec strings name ops separated by commas, arguments after colons:
``"crop:4,flip"``, ``"crop:4:reflect,flip,cutout:8"``, ``"rotate:10,shift:0.2,flip"``,
``"altflip,translate:2"``, ``"none"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from cifarlab.errors import ConfigError


# ---- ops: each (x, generator, ...) -> x; pure functions a test can check pixel by pixel ----

def shift_crop(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int, mode: str = "zero") -> torch.Tensor:
    """Pad by ``pad`` then cut each image's HxW window at offset (dy, dx) in [0, 2*pad]."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, mode="constant" if mode == "zero" else mode)
    rows = (dy.to(x.device, non_blocking=True).view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx.to(x.device, non_blocking=True).view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chans, rows, cols]


def random_crop(x: torch.Tensor, generator: torch.Generator, pad: int = 4, mode: str = "zero") -> torch.Tensor:
    """Random crop after padding (zero or reflect): a shift of up to ``pad`` pixels each way."""
    if pad == 0 or not len(x):
        return x
    dy = torch.randint(0, 2 * pad + 1, (len(x),), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (len(x),), generator=generator)
    return shift_crop(x, dy, dx, pad, mode)


def flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror (reverse columns of) the images where ``mask`` is true."""
    return torch.where(mask.to(x.device, non_blocking=True).view(-1, 1, 1, 1), x.flip(-1), x)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return flip_where(x, torch.rand(len(x), generator=generator) < 0.5)


def alt_flip_mask(index: torch.Tensor, epoch: int, seed: int = 0) -> torch.Tensor:
    """Flip image i on epoch e iff (bit_i + e) is odd, bit_i a fixed per-image coin.

    Each image is seen mirrored on every other epoch, so two epochs cover both views
    (airbench's alternating flip). The coin is a hash of (index, seed): no state to keep.
    """
    # computed where ``index`` lives: a copy to the CPU would stall the GPU every batch
    h = (index.to(torch.int64) * 0x9E3779B1 + seed * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
    h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
    bit = (h ^ (h >> 12)) & 1
    return (bit + epoch) % 2 == 1


def cutout_at(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size x size square at (top, left) in each image."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top = top.to(x.device, non_blocking=True).view(n, 1, 1)
    left = left.to(x.device, non_blocking=True).view(n, 1, 1)
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return x.masked_fill(inside.unsqueeze(1), 0.0)


def random_cutout(x: torch.Tensor, generator: torch.Generator, size: int = 8) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017), square kept wholly inside the image."""
    n, _, h, w = x.shape
    top = torch.randint(0, h - size + 1, (n,), generator=generator)
    left = torch.randint(0, w - size + 1, (n,), generator=generator)
    return cutout_at(x, top, left, size)


def affine(x: torch.Tensor, degrees: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``degrees`` (counter-clockwise as displayed) about its centre and
    shift it by (shift_x, shift_y) pixels; edge pixels fill the gaps, as Keras' 'nearest'."""
    n, _, h, w = x.shape
    theta_rad = torch.deg2rad(degrees.to(torch.float64))
    cos, sin = torch.cos(theta_rad), torch.sin(theta_rad)
    # the grid maps output coords to input coords in [-1, 1]; y points down on screen
    mat = torch.zeros(n, 2, 3, dtype=torch.float64)
    mat[:, 0, 0], mat[:, 0, 1] = cos, -sin * h / w
    mat[:, 1, 0], mat[:, 1, 1] = sin * w / h, cos
    mat[:, 0, 2] = -2 * shift_x.to(torch.float64) / w
    mat[:, 1, 2] = -2 * shift_y.to(torch.float64) / h
    grid = F.affine_grid(mat.to(x.device, x.dtype if x.is_floating_point() else torch.float32),
                         list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_rotate(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0) -> torch.Tensor:
    angle = (torch.rand(len(x), generator=generator) * 2 - 1) * degrees
    zero = torch.zeros(len(x))
    return affine(x, angle, zero, zero)


def random_shift(x: torch.Tensor, generator: torch.Generator, fraction: float = 0.2) -> torch.Tensor:
    """Keras-style width/height shift: up to ``fraction`` of the size each way, sub-pixel."""
    n, _, h, w = x.shape
    sx = (torch.rand(n, generator=generator) * 2 - 1) * fraction * w
    sy = (torch.rand(n, generator=generator) * 2 - 1) * fraction * h
    return affine(x, torch.zeros(n), sx, sy)


# ---- the pipeline a spec string builds ----

@dataclass
class Context:
    """What an op may need besides the batch: epoch and the images' dataset indices."""
    epoch: int = 0
    index: torch.Tensor | None = None
    seed: int = 0


Op = Callable[[torch.Tensor, torch.Generator, Context], torch.Tensor]


@dataclass
class Augment:
    """A sequence of ops applied in order; ``Augment([])`` is the identity ("none")."""
    ops: list[Op] = field(default_factory=list)
    spec: str = "none"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                 epoch: int = 0, index: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
        generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        ctx = Context(epoch, index if index is not None else torch.arange(len(x)), seed)
        for op in self.ops:
            x = op(x, generator, ctx)
        return x

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __repr__(self) -> str:
        return f"Augment({self.spec!r})"


def _crop(pad: str = "4", mode: str = "zero") -> Op:
    pad_px = _number(pad, int, 0)
    if mode not in ("zero", "reflect"):
        raise ValueError(f"padding {mode!r} is neither zero nor reflect")
    return lambda x, g, ctx: random_crop(x, g, pad_px, mode)


def _translate(pixels: str = "2") -> Op:
    return _crop(pixels, "reflect")


def _flip() -> Op:
    return lambda x, g, ctx: random_flip(x, g)


def _altflip() -> Op:
    return lambda x, g, ctx: flip_where(x, alt_flip_mask(ctx.index, ctx.epoch, ctx.seed))


def _cutout(size: str = "8") -> Op:
    size_px = _number(size, int, 1)
    return lambda x, g, ctx: random_cutout(x, g, min(size_px, x.shape[-1], x.shape[-2]))


def _rotate(degrees: str = "10") -> Op:
    deg = _number(degrees, float, 0)
    return lambda x, g, ctx: random_rotate(x, g, deg)


def _shift(fraction: str = "0.2") -> Op:
    frac = _number(fraction, float, 0)
    return lambda x, g, ctx: random_shift(x, g, frac)


def _number(text: str, kind: type, minimum: float):
    value = kind(text)
    if value < minimum:
        raise ValueError(f"{text} is below {minimum}")
    return value


# name -> (factory taking the spec's string arguments, usage for the error message)
_OPS: dict[str, tuple[Callable[..., Op], str]] = {
    "crop": (_crop, "crop:PAD[:zero|reflect]"),
    "translate": (_translate, "translate:PIXELS (reflect-padded crop)"),
    "flip": (_flip, "flip"),
    "altflip": (_altflip, "altflip"),
    "cutout": (_cutout, "cutout:SIZE"),
    "rotate": (_rotate, "rotate:DEGREES"),
    "shift": (_shift, "shift:FRACTION"),
}


def build_augment(spec: str | None) -> Augment:
    """Parse a spec such as ``"crop:4:reflect,flip,cutout:8"``; ``"none"`` or "" is identity."""
    spec = (spec or "none").strip()
    if spec.lower() in ("none", ""):
        return Augment([], "none")
    ops = []
    for part in spec.split(","):
        name, *args = [p.strip() for p in part.strip().split(":")]
        ops.append(_make_op(name.lower(), args, spec))
    return Augment(ops, spec)


def _make_op(name: str, args: list[str], spec: str) -> Op:
    valid = ", ".join(help_ for _, help_ in _OPS.values())
    if name not in _OPS:
        raise ConfigError(f"unknown augmentation {name!r} in {spec!r}; valid ops: {valid}, none")
    try:
        return _OPS[name][0](*args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad arguments for {name!r} in {spec!r} ({exc}); expected {_OPS[name][1]}") from None
