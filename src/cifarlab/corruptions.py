"""Corrupted copies of a test set, made on the fly: how a model holds up on real uploads.

The kinds and their five severities follow CIFAR-10-C (Hendrycks & Dietterich, 2019,
``make_cifar_c.py``: the 32x32 parameters, not ImageNet-C's), rewritten as seeded,
batched torch code on uint8 NHWC arrays. Each result is rounded to uint8, as the
published sets were saved. Where the reference used a library, what is done here:

* gaussian/shot/impulse/speckle noise: the same distributions and parameters, drawn from
  a ``torch.Generator`` (impulse: each value of each channel turned to 0 or 255 with
  probability ``amount``, as ``skimage.util.random_noise(mode="s&p")``).
* gaussian_blur: a separable Gaussian truncated at 4 sigma, edges repeated (scikit-image's
  default); defocus_blur: the reference's aliased disk (17x17) smoothed by a 3x3 Gaussian,
  edges mirrored as OpenCV's filter2D does.
* motion_blur: the reference called ImageMagick (Wand); here a one-sided Gaussian line
  kernel of ``2*radius+1`` taps at a random angle in [-45, 45] degrees per picture, the
  same construction as the imagecorruptions package's port.
* contrast, brightness, saturate: exact closed forms of the reference's operations
  (brightness adds ``c`` to HSV value, which scales RGB by ``(V+c)/V``; saturate rescales
  HSV saturation, which scales each channel's distance to the maximum).
* jpeg_compression: Pillow's encoder at CIFAR-10-C's qualities 80/65/58/50/40, one picture
  at a time (the one step that is not a tensor operation; a 32x32 JPEG is tens of
  microseconds).
* pixelate: Pillow's BOX filter down to ``32*c`` and back, written as two resampling
  matrices (the same weights as Pillow's, so the same pixels up to rounding).
* fog: the reference's diamond-square plasma fractal (mapsize 32) drawn for a whole batch
  at once, added and renormalized as the reference does.

``corrupt(images, kind, severity, seed)`` -> uint8 NHWC; ``evaluate_corruptions`` runs a
checkpoint over every kind and severity and reports accuracy, the mean corruption
accuracy (over the kinds x severities) and its drop relative to the clean accuracy.
"""

from __future__ import annotations

import io
import math
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cifarlab.errors import CifarlabError, ConfigError

SEVERITIES = (1, 2, 3, 4, 5)

_PARAMS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
    "motion_blur": ((10, 1.0), (10, 1.5), (10, 2.0), (10, 2.5), (12, 3.0)),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "saturate": ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "fog": ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),
}
KINDS = tuple(_PARAMS)
# the default suite: ten kinds x five severities = 50 test sets
DEFAULT_KINDS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "motion_blur", "contrast",
                 "brightness", "jpeg_compression", "pixelate", "fog")


def params(kind: str, severity: int):
    """The reference's parameter for ``kind`` at ``severity`` (1..5)."""
    if kind not in _PARAMS:
        raise CifarlabError(f"unknown corruption {kind!r}: choose from {', '.join(KINDS)}")
    if severity not in SEVERITIES:
        raise CifarlabError(f"severity {severity!r} must be one of 1..5")
    return _PARAMS[kind][severity - 1]


def generator(seed: int, kind: str, severity: int) -> torch.Generator:
    """The generator of one (seed, kind, severity): the same pixels every time."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + zlib.crc32(kind.encode()) * 7 + severity) % (2 ** 63))
    return g


def corrupt(images: np.ndarray, kind: str, severity: int, seed: int = 0, batch: int = 2000) -> np.ndarray:
    """uint8 [N, H, W, 3] pictures with ``kind`` at ``severity``: uint8 [N, H, W, 3].

    Deterministic in ``seed`` (and independent of ``batch``'s size only for the kinds that
    draw nothing at random; the random ones draw per batch from one generator).
    """
    c = params(kind, severity)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise CifarlabError(f"corrupt needs uint8 [N, H, W, 3] pictures, got {images.dtype} {images.shape}")
    g = generator(seed, kind, severity)
    if kind == "jpeg_compression":
        return _jpeg(images, c)
    fn = _FUNCS[kind]
    out = np.empty_like(images)
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float() / 255.0
        y = fn(x, c, g).clamp(0, 1)
        out[i:i + batch] = (y * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


# ---------------------------------------------------------------- noise
def _gaussian_noise(x, c, g):
    return x + torch.randn(x.shape, generator=g) * c


def _shot_noise(x, c, g):
    return torch.poisson(x * c, generator=g) / c


def _impulse_noise(x, c, g):
    hit = torch.rand(x.shape, generator=g) < c
    salt = (torch.rand(x.shape, generator=g) < 0.5).float()
    return torch.where(hit, salt, x)


def _speckle_noise(x, c, g):
    return x + x * torch.randn(x.shape, generator=g) * c


# ---------------------------------------------------------------- blur
def _conv_same(x, kernel: torch.Tensor, mode: str):
    """Each channel convolved (correlated) with a 2-D kernel, padded by ``mode``."""
    kh, kw = kernel.shape
    n, ch, h, w = x.shape
    xp = F.pad(x.reshape(n * ch, 1, h, w), (kw // 2, kw // 2, kh // 2, kh // 2), mode=mode)
    return F.conv2d(xp, kernel[None, None].to(x.dtype)).reshape(n, ch, h, w)


def _gauss1d(sigma: float, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _gaussian_blur(x, sigma, g):
    k = _gauss1d(sigma, int(4.0 * sigma + 0.5))
    return _conv_same(_conv_same(x, k[None, :], "replicate"), k[:, None], "replicate")


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """CIFAR-10-C's defocus kernel: a disk on a 17x17 grid, smoothed by a 3x3 Gaussian."""
    t = torch.arange(-8, 9, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).double()
    disk /= disk.sum()
    k3 = torch.exp(-0.5 * (torch.arange(-1, 2, dtype=torch.float64) / alias_blur) ** 2)
    k3 /= k3.sum()
    smooth = F.conv2d(F.pad(disk[None, None], (1, 1, 1, 1), mode="reflect"), (k3[:, None] * k3[None, :])[None, None])
    return smooth[0, 0].float()


def _support(kernel: torch.Tensor) -> torch.Tensor:
    """The kernel cropped to its non-zero rows and columns, kept square and centred."""
    nz = (kernel.abs() > 0).nonzero()
    r = int((nz - kernel.shape[0] // 2).abs().max()) if len(nz) else 0
    mid = kernel.shape[0] // 2
    return kernel[mid - r:mid + r + 1, mid - r:mid + r + 1]


def _defocus_blur(x, c, g):
    return _conv_same(x, _support(disk_kernel(*c)), "reflect")  # zeros cost time, not pixels


def _motion_blur(x, c, g):
    radius, sigma = c
    width = 2 * radius + 1
    t = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-t ** 2 / (2 * sigma ** 2))
    weights = (weights / weights.sum()).float()
    n, ch, h, w = x.shape
    angle = (torch.rand(n, generator=g, dtype=torch.float64) * 90 - 45) * math.pi / 180
    yy = torch.arange(h).view(1, h, 1)
    xx = torch.arange(w).view(1, 1, w)
    out = torch.zeros_like(x)
    flat = x.reshape(n, ch, h * w)
    for i in range(width):
        if weights[i] < 1e-6:
            continue
        dy = torch.round(i * torch.sin(angle)).long().view(n, 1, 1)
        dx = torch.round(i * torch.cos(angle)).long().view(n, 1, 1)
        idx = ((yy - dy).clamp(0, h - 1) * w + (xx - dx).clamp(0, w - 1)).reshape(n, 1, h * w)
        out += weights[i] * flat.gather(2, idx.expand(n, ch, h * w)).reshape(n, ch, h, w)
    return out


# ---------------------------------------------------------------- colour
def _contrast(x, c, g):
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


def _brightness(x, c, g):
    v = x.amax(dim=1, keepdim=True)
    new_v = (v + c).clamp(max=1.0)
    scaled = x * (new_v / v.clamp_min(1e-12))
    return torch.where(v > 0, scaled, new_v.expand_as(x))


def _saturate(x, c, g):
    scale, shift = c
    v = x.amax(dim=1, keepdim=True)
    lo = x.amin(dim=1, keepdim=True)
    s = torch.where(v > 0, (v - lo) / v.clamp_min(1e-12), torch.zeros_like(v))
    s_new = (s * scale + shift).clamp(0, 1)
    # a channel is V * (1 - S * g), g in [0, 1] set by the hue; grey (S = 0) has hue 0: red
    gray_g = torch.tensor([0.0, 1.0, 1.0]).view(1, 3, 1, 1)
    gfac = torch.where(s > 0, (v - x) / (v * s).clamp_min(1e-12), gray_g.expand_as(x))
    return v * (1 - s_new * gfac)


# ---------------------------------------------------------------- resampling
def _jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    out = np.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Pillow's BOX resampling from ``n_in`` to ``n_out`` pixels as an [n_out, n_in] matrix."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for j in range(lo, hi):
            u = (j - center + 0.5) / max(scale, 1.0)
            m[i, j] = 1.0 if -0.5 <= u < 0.5 else 0.0
        m[i] /= m[i].sum()
    return m.float()


def _pixelate(x, c, g):
    h, w = x.shape[-2:]
    sh, sw = int(h * c), int(w * c)
    down_h, down_w = box_matrix(h, sh), box_matrix(w, sw)
    small = torch.einsum("ih,nchw,jw->ncij", down_h, x, down_w)
    small = (small * 255).round() / 255  # Pillow rounds to uint8 between the two resizes
    return torch.einsum("hi,ncij,wj->nchw", box_matrix(sh, h), small, box_matrix(sw, w))


# ---------------------------------------------------------------- fog
def plasma_fractal(n: int, mapsize: int, wibbledecay: float, g: torch.Generator) -> torch.Tensor:
    """[n, mapsize, mapsize] in [0, 1]: the reference's diamond-square fractal, batched."""
    if mapsize & (mapsize - 1):
        raise CifarlabError(f"plasma_fractal needs a power-of-two size, got {mapsize}")
    a = torch.zeros(n, mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled_mean(s):
        return s / 4 + wibble * (torch.rand(s.shape, generator=g, dtype=torch.float64) * 2 * wibble - wibble)

    while step >= 2:
        half = step // 2
        corner = a[:, 0::step, 0::step]
        sq = corner + torch.roll(corner, -1, dims=1)
        sq = sq + torch.roll(sq, -1, dims=2)
        a[:, half::step, half::step] = wibbled_mean(sq)
        dr = a[:, half::step, half::step]
        ul = a[:, 0::step, 0::step]
        a[:, 0::step, half::step] = wibbled_mean(dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2))
        a[:, half::step, 0::step] = wibbled_mean(dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1))
        step //= 2
        wibble /= wibbledecay
    a = a - a.amin(dim=(1, 2), keepdim=True)
    return (a / a.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).float()


def _fog(x, c, g):
    strength, decay = c
    n, _, h, w = x.shape
    size = 1 << max(h, w, 2).bit_length() - 1
    size = size if size >= max(h, w) else size * 2
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    fog = plasma_fractal(n, size, decay, g)[:, None, :h, :w]
    return (x + strength * fog) * max_val / (max_val + strength)


_FUNCS = {"gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
          "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur, "defocus_blur": _defocus_blur,
          "motion_blur": _motion_blur, "contrast": _contrast, "brightness": _brightness, "saturate": _saturate,
          "pixelate": _pixelate, "fog": _fog}


# ---------------------------------------------------------------- evaluation
def parse_kinds(text: str | None) -> tuple[str, ...]:
    """"all", "default" (None) or a comma list of kinds, checked."""
    if text in (None, "", "default"):
        return DEFAULT_KINDS
    if text == "all":
        return KINDS
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    for k in kinds:
        params(k, 1)
    return kinds


PRECISIONS = ("auto", "float32")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of: {', '.join(PRECISIONS)}")


def suite_classifier(model, norm: dict, labels: np.ndarray, device, precision: str = "auto",
                     batch_size: int = 250):
    """``(accuracy(images) -> float, precision used)``: ``model`` over uint8 NHWC copies of a
    test set with the given ``labels``, normalized as its run saved it, channels-last.

    ``precision``: "auto" computes in bf16 where the device does natively (AVX512-BF16 or
    AMX CPUs, bf16 GPUs; about twice float32's speed there) and in float32 elsewhere;
    "float32" always in float32 (the precision a run's stated test accuracy is measured in
    on a CPU). The clean and the corrupted sets of one suite are classified alike, so the
    drop compares like with like. Batches of 250 run faster than 500 on a 2-core CPU (the
    activations stay in cache)."""
    from cifarlab.data.types import Split
    from cifarlab.inference.hardware import bf16_native
    from cifarlab.training.calibrate import collect_logits
    from cifarlab.training.evaluation import saved_norm_loader
    check_precision(precision)
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be >= 1")
    bf16 = precision == "auto" and bf16_native(torch.device(device))
    model = model.to(memory_format=torch.channels_last)

    def accuracy(imgs) -> float:
        loader = saved_norm_loader(Split(imgs, labels), norm, device, batch_size, channels_last=True)
        z, y = collect_logits(model, loader, amp=bf16, amp_eval=bf16)
        return float((z.argmax(1) == y).mean())
    return accuracy, "bf16" if bf16 else "float32"


def evaluate_corruptions(checkpoint, data=None, kinds=DEFAULT_KINDS, severities=SEVERITIES, seed: int = 0,
                         device: str | None = None, batch_size: int = 250, limit: int | None = None,
                         progress=None, precision: str = "auto") -> dict:
    """Accuracy of a checkpoint on every (kind, severity) copy of the test split.

    ``{"clean_accuracy", "kinds", "severities", "accuracy": {kind: [per severity]},
    "seconds": {kind: [per severity]}, "mean_corruption_accuracy", "relative_drop", "n",
    "seed", "precision"}``; seconds count making the copy and classifying it. ``limit`` keeps
    N test pictures drawn at random (seeded; test splits are often sorted by class, so the
    first N could be one class): a quick look. ``progress(kind, severity, accuracy, seconds)``
    is called after each copy. ``precision``: see ``suite_classifier``.
    """
    from cifarlab.training.evaluation import checkpoint_with_data
    for s in severities:
        params(kinds[0] if kinds else "contrast", s)
    check_precision(precision)  # before the checkpoint and the data are loaded
    ckpt, model, meta, _, data, dev = checkpoint_with_data(checkpoint, data, device)
    test = data.test
    images, labels = np.asarray(test.images), np.asarray(test.labels)
    if limit and limit < len(labels):
        keep = np.sort(np.random.default_rng(seed).choice(len(labels), size=limit, replace=False))
        images, labels = images[keep], labels[keep]
    if len(labels) == 0:
        raise CifarlabError("the test split is empty; nothing to corrupt")
    accuracy, used = suite_classifier(model, meta["normalize"], labels, dev, precision, batch_size)
    start = time.perf_counter()
    clean = accuracy(images)
    clean_s = time.perf_counter() - start
    acc: dict[str, list[float]] = {}
    secs: dict[str, list[float]] = {}
    for kind in kinds:
        acc[kind], secs[kind] = [], []
        for s in severities:
            t0 = time.perf_counter()
            a = accuracy(corrupt(images, kind, s, seed))
            dt = time.perf_counter() - t0
            acc[kind].append(a)
            secs[kind].append(round(dt, 3))
            if progress:
                progress(kind, s, a, dt)
    mca = float(np.mean([a for k in kinds for a in acc[k]])) if kinds else None
    return {"checkpoint": ckpt["path"], "model": meta["model"]["name"], "n": int(len(labels)), "seed": seed,
            "precision": used,
            "clean_accuracy": clean, "clean_seconds": round(clean_s, 3), "kinds": list(kinds),
            "severities": list(severities), "accuracy": acc, "seconds": secs,
            "mean_corruption_accuracy": mca,
            "relative_drop": (clean - mca) / clean if mca is not None and clean > 0 else None,
            "total_seconds": round(time.perf_counter() - start, 2)}


def write_corruptions(result: dict, out_dir: str | Path, png: bool = True) -> list[Path]:
    """corruptions.json and corruptions.csv (kind x severity accuracy, seconds), and the
    heat-map figure corruptions.png when matplotlib is installed."""
    import json

    from cifarlab.atomic import atomic_write_text
    from cifarlab.training import plots
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "corruptions.json", out_dir / "corruptions.csv"]
    atomic_write_text(written[0], json.dumps(result, indent=2) + "\n")
    sev = result["severities"]
    lines = ["kind," + ",".join(f"s{s}" for s in sev) + ",mean," + ",".join(f"seconds_s{s}" for s in sev)]
    for k in result["kinds"]:
        a = result["accuracy"][k]
        lines.append(f"{k}," + ",".join(f"{v:.4f}" for v in a) + f",{np.mean(a):.4f},"
                     + ",".join(f"{v:.2f}" for v in result["seconds"][k]))
    atomic_write_text(written[1], "\n".join(lines) + "\n")
    if png and plots.available() and result["kinds"]:
        plt = plots.pyplot()
        grid = np.array([result["accuracy"][k] for k in result["kinds"]])
        fig, ax = plt.subplots(figsize=(1.1 * len(sev) + 3, 0.42 * len(result["kinds"]) + 1.6))
        im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(sev)), [str(s) for s in sev])
        ax.set_yticks(range(len(result["kinds"])), result["kinds"])
        ax.set_xlabel("severity")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, f"{grid[i, j]:.1%}", ha="center", va="center", fontsize=8)
        ax.set_title(f"{result['model']}: clean {result['clean_accuracy']:.1%}, mean corrupted "
                     f"{result['mean_corruption_accuracy']:.1%}")
        fig.colorbar(im, ax=ax, fraction=0.04)
        fig.tight_layout()
        written.append(out_dir / "corruptions.png")
        plots.save_png(fig, written[-1])
        plt.close(fig)
    return written
