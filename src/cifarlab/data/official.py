"""The official CIFAR formats: python pickle batches (CIFAR-10/100) and binary batches.

Each reader takes the ``{name: bytes}`` of a source (paths relative to its root, any
wrapping folder kept) and returns ``(train, test, classes)``.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from cifarlab.data.types import Split
from cifarlab.errors import DataError

# published MD5s of the official archives, checked whenever a file carries one of these names
OFFICIAL_MD5 = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
}
PY10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
BIN10_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
_RECORD = 1 + 3 * 32 * 32  # binary format: one label byte, then the CHW pixels


def detect(names: set[str]) -> str | None:
    """Which official format a set of member base names belongs to, if any."""
    if "data_batch_1" in names or "test_batch" in names:
        return "cifar10-python"
    if "data_batch_1.bin" in names or "test_batch.bin" in names:
        return "cifar10-binary"
    if "meta" in names and ("train" in names or "test" in names):
        return "cifar100-python"
    return None


class _NumpyOnly(pickle.Unpickler):
    """Unpickler that builds numpy arrays and nothing else: a batch file cannot run code."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and name in {"_reconstruct", "ndarray", "dtype", "scalar",
                                                          "_frombuffer"}:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):  # protocol-2 pickles carry array bytes this way
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(name: str, blob: bytes) -> dict:
    try:
        obj = _NumpyOnly(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # any failure means the file is not a CIFAR batch
        raise DataError(f"{name}: not a readable CIFAR pickle batch ({exc}); re-extract the archive") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name}: not a CIFAR pickle batch (holds {type(obj).__name__}, expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _by_basename(files: dict[str, bytes], wanted: list[str], fmt: str) -> list[tuple[str, bytes]]:
    index = {name.rsplit("/", 1)[-1]: name for name in files}
    missing = [w for w in wanted if w not in index]
    if missing:
        raise DataError(f"{fmt} source lacks {', '.join(missing)}; the archive or folder is incomplete")
    return [(index[w], files[index[w]]) for w in wanted]


def _chw_to_split(name: str, data, labels) -> Split:
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{name}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images):
        raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
    return Split(np.ascontiguousarray(images), labels)


def _concat(splits: list[Split]) -> Split:
    return Split(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]))


def _names(values, name: str) -> list[str]:
    try:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    except Exception:
        raise DataError(f"{name}: class names unreadable") from None


def read_cifar10_python(files: dict[str, bytes]) -> tuple[Split, Split, list[str]]:
    members = _by_basename(files, [*PY10_TRAIN, "test_batch", "batches.meta"], "cifar10-python")
    splits = []
    for name, blob in members[:6]:
        batch = _unpickle(name, blob)
        if "data" not in batch or "labels" not in batch:
            raise DataError(f"{name}: batch lacks 'data' or 'labels'; not a CIFAR-10 batch")
        splits.append(_chw_to_split(name, batch["data"], batch["labels"]))
    meta_name, meta_blob = members[6]
    classes = _names(_unpickle(meta_name, meta_blob).get("label_names", []), meta_name)
    return _concat(splits[:5]), splits[5], classes


def read_cifar100_python(files: dict[str, bytes], labels: str = "fine") -> tuple[Split, Split, list[str]]:
    members = _by_basename(files, ["train", "test", "meta"], "cifar100-python")
    key = f"{labels}_labels"
    splits = []
    for name, blob in members[:2]:
        batch = _unpickle(name, blob)
        if "data" not in batch or key not in batch:
            raise DataError(f"{name}: batch lacks 'data' or '{key}'; not a CIFAR-100 batch")
        splits.append(_chw_to_split(name, batch["data"], batch[key]))
    meta_name, meta_blob = members[2]
    classes = _names(_unpickle(meta_name, meta_blob).get(f"{labels}_label_names", []), meta_name)
    return splits[0], splits[1], classes


def _read_bin(name: str, blob: bytes) -> Split:
    if len(blob) % _RECORD:
        raise DataError(f"{name}: {len(blob)} bytes is not a whole number of {_RECORD}-byte records; "
                        "the file is truncated")
    records = np.frombuffer(blob, np.uint8).reshape(-1, _RECORD)
    return _chw_to_split(name, records[:, 1:], records[:, 0])


def read_cifar10_binary(files: dict[str, bytes]) -> tuple[Split, Split, list[str]]:
    members = _by_basename(files, [*BIN10_TRAIN, "test_batch.bin", "batches.meta.txt"], "cifar10-binary")
    splits = [_read_bin(name, blob) for name, blob in members[:6]]
    classes = [line.strip() for line in members[6][1].decode(errors="replace").splitlines() if line.strip()]
    return _concat(splits[:5]), splits[5], classes
