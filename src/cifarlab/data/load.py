"""``load_cifar``: find a source, decode it once (or take it from the cache), carve val."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path


from cifarlab.atomic import atomic_write_text
from cifarlab.data import archive, cache, digest, download as dl, imagefolder, official
from cifarlab.data.split import carve_val, class_counts
from cifarlab.data.types import CifarData, DataInfo, Split
from cifarlab.errors import ConfigError, DataError

DATASETS = ("cifar10", "cifar100")
# what the cache folder is searched for, per data set, best first
_LOCAL_NAMES = {
    "cifar10": ["cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar-10-batches-bin",
                "cifar-10-binary.tar.gz", "cifar10-jpeg75.tar.gz"],
    "cifar100": ["cifar-100-python", "cifar-100-python.tar.gz"],
}


def load_cifar(source: str | os.PathLike | None = None, *, val: int = 5000, seed: int = 0,
               dataset: str = "cifar10", labels: str = "fine", cache_dir: str | os.PathLike | None = None,
               download: bool = True, progress: bool = True) -> CifarData:
    """Train/val/test uint8 images, int64 labels and class names from any supported source.

    ``source`` is an official archive or folder (python or binary batches, CIFAR-100
    python) or an image-folder tree (folder, .tar, .tar.gz, .zip). When None: the path in
    ``$CIFARLAB_DATA``, then the cache folder (an official archive there, or the source that
    loaded last time), then a download of the official archive.
    """
    _check_args(dataset, labels)
    cache_dir = Path(cache_dir) if cache_dir else cache.default_home()
    path = resolve_source(source, dataset, cache_dir, download, progress)
    train, test, classes, info = read_source(path, labels=labels, cache_dir=cache_dir)
    _remember(cache_dir, dataset, path)
    train, val_split = carve_val(train, val, seed)
    return CifarData(train=train, val=val_split, test=test, classes=classes, info=info)


def _check_args(dataset: str, labels: str) -> None:
    if dataset not in DATASETS:
        raise ConfigError(f"dataset={dataset!r} is unknown; use one of {', '.join(DATASETS)}")
    if labels not in ("fine", "coarse"):
        raise ConfigError(f"labels={labels!r} is unknown; use 'fine' or 'coarse' (CIFAR-100 only)")


def resolve_source(source, dataset: str, cache_dir: Path, download: bool, progress: bool) -> Path:
    """The path to read: the argument, $CIFARLAB_DATA, the cache folder, or a fresh download."""
    if source:
        return _existing(Path(source).expanduser(), "")
    if env := os.environ.get("CIFARLAB_DATA"):
        return _existing(Path(env).expanduser(), " (from CIFARLAB_DATA)")
    url = dl.download_url(dataset)
    for name in [*_LOCAL_NAMES[dataset], url.rsplit("/", 1)[-1]]:
        if (cache_dir / name).exists():
            return cache_dir / name
    if remembered := _remembered(cache_dir, dataset):
        return remembered
    looked = f"CIFARLAB_DATA is unset and {cache_dir} holds no {dataset} copy"
    hint = "point at a local copy with --data PATH or CIFARLAB_DATA=PATH"
    if not download:
        raise DataError(f"no {dataset} data found: {looked}; {hint}")
    try:
        return dl.download(url, cache_dir, progress)
    except dl._Unreachable as exc:
        raise DataError(f"no {dataset} data found: {looked}, and downloading {exc} failed; {hint}") from None


def _remember_file(cache_dir: Path, dataset: str) -> Path:
    return cache_dir / f"last-source-{dataset}.json"


def _remember(cache_dir: Path, dataset: str, path: Path) -> None:
    """Note the source that just loaded, so that a later run without --data or
    CIFARLAB_DATA finds it again (its decoded arrays are already in the cache)."""
    try:
        atomic_write_text(_remember_file(cache_dir, dataset),
                          json.dumps({"source": str(Path(path).resolve())}))
    except OSError:  # a read-only cache folder only loses the convenience
        pass


def _remembered(cache_dir: Path, dataset: str) -> Path | None:
    try:
        source = Path(json.loads(_remember_file(cache_dir, dataset).read_text())["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return source if source.exists() else None


def _existing(path: Path, why: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}{why} does not exist; pass an existing CIFAR archive or folder")
    return path


def read_source(path: Path, labels: str = "fine", cache_dir: Path | None = None,
                expected_md5: str | None = None, workers: int | None = None
                ) -> tuple[Split, Split, list[str], DataInfo]:
    """Full train and test splits of one source, from the cache when it holds them.

    Files bearing an official archive name are checked against its published MD5, before
    the cache is consulted; ``expected_md5`` checks any other file the same way. The cache
    is keyed by content: the sha256 of a file, or of every file of a folder.
    """
    path = Path(path)
    if path.is_dir() and not any(path.iterdir()):
        raise DataError(f"{path}: folder is empty; expected CIFAR batches or train/ and test/ folders")
    cache_dir = cache_dir or cache.default_home()
    expected = expected_md5 or (official.OFFICIAL_MD5.get(path.name) if path.is_file() else None)
    held = digest.source_digest(path, cache_dir, md5=bool(expected))
    if expected and held.md5 != expected:  # before the cache: arrays of a damaged file are not trusted
        raise DataError(f"{path}: checksum mismatch (md5 {held.md5}, expected {expected}); "
                        "the file is damaged or not the official archive, download it again")
    entry = cache.entry_path(cache_dir, held.sha256, labels)
    if hit := cache.load(entry):
        train, test, classes, info = hit
        info = DataInfo(**{**info, "source": str(path), "cache_path": str(entry)})
    else:
        fmt, train, test, classes, conversions = decode_source(path, labels, workers)
        info = DataInfo(format=fmt, source=str(path), checksum=held.sha256, cache_path=str(entry),
                        conversions=conversions,
                        counts={"train": class_counts(train.labels, classes),
                                "test": class_counts(test.labels, classes)})
        cache.save(entry, train, test, classes, dataclasses.asdict(info))
    held.remember()
    return train, test, classes, info


def decode_source(path: Path, labels: str = "fine", workers: int | None = None):
    """(format, train, test, classes, conversions) decoded from the files at ``path``."""
    files, dirs = archive.read_members(path)
    if not files:
        raise DataError(f"{path}: holds no files; expected CIFAR batches or train/ and test/ folders")
    fmt = official.detect({name.rsplit("/", 1)[-1] for name, _ in files})
    if labels == "coarse" and fmt != "cifar100-python":
        raise ConfigError(f"labels='coarse' needs CIFAR-100, but {path} holds {fmt or 'an image folder'}")
    conversions: list[str] = []
    if fmt == "cifar10-python":
        train, test, classes = official.read_cifar10_python(dict(files))
    elif fmt == "cifar10-binary":
        train, test, classes = official.read_cifar10_binary(dict(files))
    elif fmt == "cifar100-python":
        train, test, classes = official.read_cifar100_python(dict(files), labels)
    elif imagefolder.looks_like_imagefolder([n for n, _ in files] + dirs):
        fmt = "imagefolder"
        train, test, classes, conversions = imagefolder.read_imagefolder(files, dirs, str(path), workers)
    else:
        raise DataError(f"{path}: not a CIFAR source (no data_batch_*/test_batch files and no "
                        "train/<class>/ and test/<class>/ folders)")
    _check_labels(path, train, test, classes)
    return fmt, train, test, classes, conversions


def _check_labels(path: Path, train: Split, test: Split, classes: list[str]) -> None:
    top = int(max(train.labels.max(initial=-1), test.labels.max(initial=-1)))
    low = int(min(train.labels.min(initial=0), test.labels.min(initial=0)))
    if low < 0 or top >= len(classes):
        raise DataError(f"{path}: labels run {low}..{top} but there are {len(classes)} class names; "
                        "the batches and the meta file do not match")
    if not len(train) or not len(test):
        raise DataError(f"{path}: the {'training' if not len(train) else 'test'} split is empty")
