"""load_cifar on real files of every supported format, written by cifarlab.data.synthetic."""

from __future__ import annotations

import numpy as np
import pytest

from cifarlab.data import load_cifar, synthetic
from cifarlab.data import load as load_mod
from cifarlab.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return synthetic.write_all(tmp_path_factory.mktemp("fixtures"))


FORMATS = {"py-dir": "cifar10-python", "py-tgz": "cifar10-python", "bin-dir": "cifar10-binary",
           "bin-tgz": "cifar10-binary", "c100-dir": "cifar100-python", "c100-tgz": "cifar100-python",
           "img-dir": "imagefolder", "img-tar": "imagefolder", "img-tar.gz": "imagefolder",
           "img-tgz": "imagefolder", "img-zip": "imagefolder"}


@pytest.mark.parametrize("key", sorted(FORMATS))
def test_every_format_returns_the_written_arrays(fixtures, key, tmp_path):
    written = fixtures[key]
    data = load_cifar(written.path, val=0, cache_dir=tmp_path, progress=False)
    assert data.info.format == FORMATS[key]
    assert data.classes == written.classes
    assert data.test.images.dtype == np.uint8 and data.test.images.shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(data.test.images, written.test.images)
    np.testing.assert_array_equal(data.test.labels, written.test.labels)
    if key.startswith("img"):  # three odd images were added to the first class's training folder
        assert len(data.train) == len(written.train) + 3
        assert np.bincount(data.train.labels)[0] == np.bincount(written.train.labels)[0] + 3
    else:
        np.testing.assert_array_equal(data.train.images, written.train.images)
        np.testing.assert_array_equal(data.train.labels, written.train.labels)


def test_odd_images_are_converted_and_each_conversion_named(fixtures, tmp_path):
    data = load_cifar(fixtures["img-zip"].path, val=0, cache_dir=tmp_path, progress=False)
    text = " | ".join(data.info.conversions)
    assert "1 train image converted L->RGB" in text and "odd_gray.png" in text
    assert "1 train image converted RGBA->RGB" in text and "odd_rgba.png" in text
    assert "1 train image resized 40x30->32x32" in text and "odd_40x30.png" in text
    assert len(data.info.conversions) == 3


def test_cifar100_coarse_labels(tmp_path):
    fine = synthetic.write_cifar100_python(tmp_path / "a", labels="fine")
    coarse = synthetic.write_cifar100_python(tmp_path / "a", labels="coarse")
    data = load_cifar(coarse.path, val=0, labels="coarse", cache_dir=tmp_path / "c", progress=False)
    assert data.classes == coarse.classes and len(data.classes) == 20
    np.testing.assert_array_equal(data.train.labels, coarse.train.labels)
    data_fine = load_cifar(fine.path, val=0, cache_dir=tmp_path / "c", progress=False)
    assert len(data_fine.classes) == 100
    np.testing.assert_array_equal(data_fine.train.labels // 5, data.train.labels)


def test_coarse_labels_on_cifar10_is_a_config_error(fixtures, tmp_path):
    with pytest.raises(ConfigError, match="coarse"):
        load_cifar(fixtures["py-dir"].path, labels="coarse", cache_dir=tmp_path, progress=False)


def test_class_order_standard_for_cifar10_names_sorted_otherwise(tmp_path):
    shuffled = ["truck", "cat", "airplane", "ship", "bird", "dog", "frog", "horse", "deer", "automobile"]
    cifar = synthetic.write_imagefolder(tmp_path / "a", classes=shuffled, per_class=1, test_per_class=1)
    data = load_cifar(cifar.path, val=0, cache_dir=tmp_path / "c", progress=False)
    assert data.classes == synthetic.CIFAR10_CLASSES
    other = synthetic.write_imagefolder(tmp_path / "b", classes=["zebra", "ant", "moth"], per_class=2)
    data = load_cifar(other.path, val=0, cache_dir=tmp_path / "c", progress=False)
    assert data.classes == ["ant", "moth", "zebra"]
    assert np.bincount(data.train.labels).tolist() == [2, 2, 2]


def test_val_split_is_stratified_seeded_and_disjoint(tmp_path):
    written = synthetic.write_cifar10_python(tmp_path, per_batch=40)  # 200 train, 20 per class
    a = load_cifar(written.path, val=50, seed=1, cache_dir=tmp_path / "c", progress=False)
    b = load_cifar(written.path, val=50, seed=1, cache_dir=tmp_path / "c", progress=False)
    c = load_cifar(written.path, val=50, seed=2, cache_dir=tmp_path / "c", progress=False)
    assert len(a.train) == 150 and len(a.val) == 50
    assert np.bincount(a.val.labels).tolist() == [5] * 10
    np.testing.assert_array_equal(a.val.images, b.val.images)
    assert not np.array_equal(a.val.images, c.val.images)
    everything = np.concatenate([a.train.images, a.val.images]).reshape(200, -1)
    assert len(np.unique(everything, axis=0)) == 200  # no image in both train and val
    full = load_cifar(written.path, val=0, cache_dir=tmp_path / "c", progress=False)
    assert len(full.train) == 200 and len(full.val) == 0


def test_val_out_of_range(fixtures, tmp_path):
    with pytest.raises(ConfigError, match="val=100"):
        load_cifar(fixtures["py-dir"].path, val=100, cache_dir=tmp_path, progress=False)


def test_second_load_comes_from_the_cache(fixtures, tmp_path, monkeypatch):
    first = load_cifar(fixtures["img-tgz"].path, val=0, cache_dir=tmp_path, progress=False)

    def no_decoding(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(load_mod, "decode_source", no_decoding)
    second = load_cifar(fixtures["img-tgz"].path, val=0, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert second.info.conversions == first.info.conversions
    assert second.info.cache_path == first.info.cache_path


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta"])
def test_corrupt_cache_is_rebuilt_not_trusted(fixtures, tmp_path, damage):
    path = fixtures["py-tgz"].path
    first = load_cifar(path, val=0, cache_dir=tmp_path, progress=False)
    entry = tmp_path / "arrays"
    (folder,) = list(entry.iterdir())
    target = folder / "train_images.npy"
    blob = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        target.write_bytes(blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:])
    else:
        (folder / "meta.json").write_text("{not json")
    again = load_cifar(path, val=0, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again.train.images, first.train.images)
    assert [p.name for p in entry.iterdir()] == [folder.name]  # rebuilt in place, no leftovers


def test_official_name_with_wrong_content_fails_the_md5(fixtures, tmp_path):
    fake = tmp_path / "cifar-10-python.tar.gz"
    fake.write_bytes(fixtures["py-tgz"].path.read_bytes())
    with pytest.raises(DataError, match="checksum mismatch.*c58f30108f718f92721af3b95e74349a"):
        load_cifar(fake, cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "arrays").exists() or not any((tmp_path / "c" / "arrays").iterdir())


def test_expected_md5_checks_any_file(fixtures, tmp_path):
    from cifarlab.data.digest import file_digest

    path = fixtures["bin-tgz"].path
    good = file_digest(path, "md5")
    load_mod.read_source(path, cache_dir=tmp_path, expected_md5=good)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_mod.read_source(path, cache_dir=tmp_path / "other", expected_md5="0" * 32)


def test_source_from_environment_then_cache_folder(fixtures, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_DATA", str(fixtures["bin-dir"].path))
    assert load_cifar(val=0, cache_dir=tmp_path, progress=False).info.format == "cifar10-binary"
    monkeypatch.delenv("CIFARLAB_DATA")
    home = tmp_path / "home"
    home.mkdir()
    (home / "cifar-10-batches-py").symlink_to(fixtures["py-dir"].path)
    data = load_cifar(val=0, cache_dir=home, download=False, progress=False)
    assert data.info.format == "cifar10-python"


def test_missing_env_path_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="nowhere.*CIFARLAB_DATA"):
        load_cifar(progress=False)


def test_no_source_without_download_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    with pytest.raises(DataError) as err:
        load_cifar(cache_dir=tmp_path, download=False, progress=False)
    msg = str(err.value)
    assert "CIFARLAB_DATA" in msg and str(tmp_path) in msg and "--data PATH" in msg and "\n" not in msg
