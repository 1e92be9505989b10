"""Small data sets for tests: in memory (`random_cifar`) or written to disk in every format.

The in-memory set has learnable structure (a class colour and a class stripe pattern under
noise), so a tiny model beats chance within a few steps. The on-disk writers produce real
files of the real formats, so loaders are tested on the bytes they will meet.
"""

from __future__ import annotations

import pickle
import tarfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cifarlab.data.split import carve_val, class_counts
from cifarlab.data.types import CifarData, DataInfo, Split

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


def _class_images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Images whose mean colour and stripe direction/frequency depend on the label."""
    n = len(labels)
    palette = np.random.default_rng(12345).integers(40, 216, size=(num_classes, 3))
    yy, xx = np.mgrid[0:32, 0:32]
    freq = 1 + labels % 4  # stripes repeat 1..4 times across the image
    vertical = (labels // 4) % 2 == 0
    coord = np.where(vertical[:, None, None], xx[None], yy[None])
    stripes = np.sin(2 * np.pi * freq[:, None, None] * coord / 32.0) * 40
    img = palette[labels][:, None, None, :] + stripes[..., None]
    img = img + rng.normal(0, 20, size=(n, 32, 32, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def random_cifar(n_train: int = 500, n_test: int = 100, num_classes: int = 10, seed: int = 0,
                 val: int = 0) -> CifarData:
    """An in-memory CifarData with class-dependent colour and stripes (learnable quickly).

    ``val`` images are carved from the ``n_train`` training images, stratified, as
    ``load_cifar`` does.
    """
    rng = np.random.default_rng(seed)
    classes = CIFAR10_CLASSES[:num_classes] if num_classes <= 10 else [f"class{i}" for i in range(num_classes)]
    y_train = np.arange(n_train) % num_classes
    y_test = np.arange(n_test) % num_classes
    train = Split(_class_images(y_train, num_classes, rng), y_train)
    test = Split(_class_images(y_test, num_classes, rng), y_test)
    train, val_split = carve_val(train, val, seed)
    counts = {"train": class_counts(train.labels, classes), "test": class_counts(test.labels, classes)}
    info = DataInfo(format="memory", source=f"random_cifar(seed={seed})", counts=counts)
    return CifarData(train=train, val=val_split, test=test, classes=list(classes), info=info)


# ---- on-disk fixtures in every supported format ----

@dataclass
class Written:
    """A fixture on disk and the arrays a correct loader must return from it."""
    path: Path
    train: Split
    test: Split
    classes: list[str]


def _arrays(n: int, num_classes: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    return Split(_class_images(labels, num_classes, rng), labels)


def _chw(split: Split) -> np.ndarray:
    return split.images.transpose(0, 3, 1, 2).reshape(len(split), -1)


def _pickle(path: Path, obj: dict) -> None:
    # protocol 2 with bytes keys: what the official python-2 pickles look like to python 3
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10_python(root: Path, per_batch: int = 20, n_test: int = 20, seed: int = 0) -> Written:
    """``root/cifar-10-batches-py/`` with five training batches, a test batch and the meta file."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = [_arrays(per_batch, 10, seed + i) for i in range(6)]
    for i, b in enumerate(batches):
        name = f"data_batch_{i + 1}" if i < 5 else "test_batch"
        _pickle(folder / name, {b"batch_label": name.encode(), b"labels": b.labels.tolist(),
                                b"data": _chw(b), b"filenames": [b"x.png"] * len(b)})
    _pickle(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                                      b"num_vis": 3072, b"num_cases_per_batch": per_batch})
    return Written(folder, _join(batches[:5]), batches[5], list(CIFAR10_CLASSES))


def write_cifar10_binary(root: Path, per_batch: int = 20, n_test: int = 20, seed: int = 0) -> Written:
    """``root/cifar-10-batches-bin/``: label byte + CHW pixels per record, names in a text file."""
    folder = Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    batches = [_arrays(per_batch if i < 5 else n_test, 10, seed + i) for i in range(6)]
    for i, b in enumerate(batches):
        records = np.concatenate([b.labels.astype(np.uint8)[:, None], _chw(b)], axis=1)
        (folder / (f"data_batch_{i + 1}.bin" if i < 5 else "test_batch.bin")).write_bytes(records.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return Written(folder, _join(batches[:5]), batches[5], list(CIFAR10_CLASSES))


def write_cifar100_python(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0,
                          labels: str = "fine") -> Written:
    """``root/cifar-100-python/`` with train, test and meta (100 fine, 20 coarse classes)."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    fine_names = [f"fine{i:02d}" for i in range(100)]
    coarse_names = [f"coarse{i:02d}" for i in range(20)]
    splits = {}
    for name, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        fine = _arrays(n, 100, s)
        coarse = fine.labels // 5
        _pickle(folder / name, {b"data": _chw(fine), b"fine_labels": fine.labels.tolist(),
                                b"coarse_labels": coarse.tolist()})
        splits[name] = fine if labels == "fine" else Split(fine.images, coarse)
    _pickle(folder / "meta", {b"fine_label_names": [c.encode() for c in fine_names],
                              b"coarse_label_names": [c.encode() for c in coarse_names]})
    return Written(folder, splits["train"], splits["test"], fine_names if labels == "fine" else coarse_names)


def write_imagefolder(root: Path, classes: list[str] | None = None, per_class: int = 3,
                      test_per_class: int = 2, seed: int = 0, odd: bool = False) -> Written:
    """``root/images/{train,test}/<class>/NNNN.png``; with ``odd``, three more training images
    of the first class: grayscale (L), RGBA and 40x30 RGB, which the loader must convert."""
    from PIL import Image

    classes = list(classes or CIFAR10_CLASSES)
    folder = Path(root) / "images"
    expected = {}
    for split, per, s in (("train", per_class, seed), ("test", test_per_class, seed + 1)):
        data = _arrays(per * len(classes), len(classes), s)
        for i, (img, y) in enumerate(zip(data.images, data.labels)):
            target = folder / split / classes[y] / f"{i:04d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(target)
        expected[split] = data.take(np.argsort(data.labels, kind="stable"))  # loader order: class, name
    if odd:
        _write_odd(folder / "train" / classes[0])
    return Written(folder, expected["train"], expected["test"], classes)


def _write_odd(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (32, 32), np.uint8), "L").save(folder / "odd_gray.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 4), np.uint8), "RGBA").save(folder / "odd_rgba.png")
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), np.uint8), "RGB").save(folder / "odd_40x30.png")


def pack(folder: Path, out: Path) -> Path:
    """Archive ``folder`` (kept as the one top-level entry) as .tar, .tar.gz/.tgz or .zip."""
    out = Path(out)
    if out.name.endswith(".zip"):
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                zf.write(path, path.relative_to(folder.parent).as_posix())
    else:
        mode = "w:gz" if out.name.endswith((".tar.gz", ".tgz")) else "w"
        with tarfile.open(out, mode) as tar:
            tar.add(folder, arcname=folder.name)
    return out


def write_all(root: Path, seed: int = 0) -> dict[str, Written]:
    """Every supported format, archived and extracted, under ``root``; keyed by a short name."""
    root = Path(root)
    out = {}
    for key, writer in (("py", write_cifar10_python), ("bin", write_cifar10_binary),
                        ("c100", write_cifar100_python)):
        w = writer(root / key, seed=seed)
        out[f"{key}-dir"] = w
        out[f"{key}-tgz"] = replace(w, path=pack(w.path, root / f"{key}-test.tar.gz"))
    img = write_imagefolder(root / "img", seed=seed, odd=True)
    out["img-dir"] = img
    for ext in ("tar", "tar.gz", "tgz", "zip"):
        out[f"img-{ext}"] = replace(img, path=pack(img.path, root / f"img-test.{ext}"))
    return out


def _join(splits: list[Split]) -> Split:
    return Split(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]))
