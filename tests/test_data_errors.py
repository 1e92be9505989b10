"""Bad input: one DataError line naming the file and the problem, exit 1, no partial cache."""

from __future__ import annotations

import shutil

import pytest

from cifarlab.cli import main
from cifarlab.data import load_cifar, synthetic
from cifarlab.errors import DataError


def _truncated(tmp_path):
    w = synthetic.write_cifar10_python(tmp_path / "t")
    blob = synthetic.pack(w.path, tmp_path / "t.tar.gz").read_bytes()
    out = tmp_path / "truncated.tar.gz"
    out.write_bytes(blob[: len(blob) // 2])
    return out, "truncated.tar.gz", "truncated or corrupt"


def _corrupted(tmp_path):
    w = synthetic.write_imagefolder(tmp_path / "c")
    blob = bytearray(synthetic.pack(w.path, tmp_path / "c.zip").read_bytes())
    for i in range(200, len(blob) - 200, 97):  # scribble over compressed data, keep the directory
        blob[i] ^= 0x5A
    out = tmp_path / "corrupted.zip"
    out.write_bytes(bytes(blob))
    return out, "corrupted.zip", "corrupt"


def _garbage_gz(tmp_path):
    out = tmp_path / "garbage.tar.gz"
    out.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8)
    return out, "garbage.tar.gz", "truncated or corrupt"


def _train_only_class(tmp_path):
    w = synthetic.write_imagefolder(tmp_path / "m")
    shutil.rmtree(w.path / "test" / "cat")
    return w.path, "train/cat", "no matching test/cat"


def _test_only_class(tmp_path):
    w = synthetic.write_imagefolder(tmp_path / "m")
    shutil.rmtree(w.path / "train" / "dog")
    return w.path, "test/dog", "no matching train/dog"


def _unreadable_image(tmp_path):
    w = synthetic.write_imagefolder(tmp_path / "u")
    (w.path / "train" / "bird" / "broken.png").write_bytes(b"\x89PNG not really")
    return w.path, "train/bird/broken.png", "cannot read image"


def _unreadable_in_tgz(tmp_path):
    w = synthetic.write_imagefolder(tmp_path / "u")
    (w.path / "test" / "frog" / "zz.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return synthetic.pack(w.path, tmp_path / "u.tgz"), "test/frog/zz.jpg", "cannot read image"


def _empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty", "empty", "folder is empty"


def _empty_class_folder(tmp_path):
    w = synthetic.write_imagefolder(tmp_path / "e")
    for f in (w.path / "test" / "ship").iterdir():
        f.unlink()
    return w.path, "test/ship", "is empty"


def _missing_path(tmp_path):
    return tmp_path / "nope.tar.gz", "nope.tar.gz", "does not exist"


def _checksum(tmp_path):
    w = synthetic.write_cifar10_binary(tmp_path / "b")
    return synthetic.pack(w.path, tmp_path / "cifar-10-binary.tar.gz"), "cifar-10-binary.tar.gz", \
        "checksum mismatch"


def _missing_batch(tmp_path):
    w = synthetic.write_cifar10_python(tmp_path / "p")
    (w.path / "data_batch_3").unlink()
    return w.path, "data_batch_3", "incomplete"


def _truncated_binary_batch(tmp_path):
    w = synthetic.write_cifar10_binary(tmp_path / "b")
    f = w.path / "test_batch.bin"
    f.write_bytes(f.read_bytes()[:-100])
    return w.path, "test_batch.bin", "truncated"


def _not_cifar(tmp_path):
    (tmp_path / "misc").mkdir()
    (tmp_path / "misc" / "notes.txt").write_text("hello")
    return tmp_path / "misc", "misc", "not a CIFAR source"


CASES = [_truncated, _corrupted, _garbage_gz, _train_only_class, _test_only_class, _unreadable_image,
         _unreadable_in_tgz, _empty_folder, _empty_class_folder, _missing_path, _checksum,
         _missing_batch, _truncated_binary_batch, _not_cifar]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_bad_input_one_line_error_and_no_partial_cache(case, tmp_path, capsys):
    path, names, problem = case(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_cifar(path, cache_dir=cache, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and names in msg and problem in msg
    assert main(["data", "info", str(path), "--cache-dir", str(cache)]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("cifarlab: error: ") and names in stderr and "Traceback" not in stderr
    leftovers = [p for p in cache.rglob("*")] if cache.exists() else []
    assert leftovers in ([], [cache / "arrays"]), leftovers
