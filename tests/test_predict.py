"""Predictor and `cifarlab predict`: pictures of every size and mode, bad files, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cifarlab.cli import main
from cifarlab.data import random_cifar
from cifarlab.training import train
from cifarlab.inference import Predictor, load_image
from cifarlab.inference import predict as predict_mod
from cifarlab.errors import ImageError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    data = random_cifar(n_train=120, n_test=20, val=20, seed=3)
    r = train(dict(model="lenet5_modern", epochs=1, batch_size=32, runs_dir=str(runs), tensorboard=False,
                   plots=False, progress=False, augment="none"), data=data)
    return r.run_dir / "best.pt"


def _rgb(w=48, h=40):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")


def _images(folder):
    """One file per awkward kind of picture a user may hand us."""
    base = _rgb()
    out = {}

    def save(name, img, **kw):
        out[name] = folder / name
        img.save(out[name], **kw)

    save("rgb.jpg", base)
    save("rgba.png", base.convert("RGBA"))
    save("la.png", base.convert("LA"))
    save("gray.png", base.convert("L"))
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("palette.png", pal, transparency=0)
    save("cmyk.jpg", base.convert("CMYK"))
    deep = Image.fromarray((np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 30))
    assert deep.mode == "I;16"
    save("deep16.png", deep)
    save("int32.tif", Image.fromarray(np.full((20, 30), 70000, np.int32)))
    save("onebit.png", base.convert("1"))
    big = Image.new("RGB", (640, 480), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    save("exif.jpg", big, exif=exif.tobytes())
    save("tiny.bmp", Image.new("RGB", (5, 3), (0, 0, 255)))
    return out


def test_every_mode_becomes_rgb(tmp_path):
    for name, path in _images(tmp_path).items():
        img = load_image(path)
        assert img.mode == "RGB", name
        arr = predict_mod.to_input(img)
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8, name


def test_transparency_is_composited_on_white(tmp_path):
    clear = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert load_image(clear).getpixel((5, 5)) == (255, 255, 255)
    half = Image.new("LA", (10, 10), (0, 128))
    assert load_image(half).getpixel((5, 5))[0] in (126, 127, 128)


def test_transparency_matches_the_rounded_formula_for_every_value_and_alpha():
    """Every (channel value, alpha) pair over white: round((c * a + 255 * (255 - a)) / 255), in
    numpy integers, for RGBA and LA pictures."""
    c, a = (m.astype(np.int64) for m in np.meshgrid(np.arange(256), np.arange(256)))
    arr = np.stack([c, 255 - c, c // 3, a], -1).astype(np.uint8)
    want = (2 * (arr[..., :3].astype(np.int64) * a[..., None] + 255 * (255 - a[..., None])) + 255) // 510
    assert np.array_equal(np.asarray(load_image(Image.fromarray(arr, "RGBA"))), want)
    la = np.asarray(load_image(Image.fromarray(arr[..., [0, 3]], "LA")))
    assert np.array_equal(la[..., 0], want[..., 0]) and np.array_equal(la[..., 1], want[..., 0])


def test_exif_rotation_and_16bit_scaling(tmp_path):
    paths = _images(tmp_path)
    assert load_image(paths["exif.jpg"]).size == (480, 640)  # portrait after EXIF transpose
    deep = np.asarray(load_image(paths["deep16.png"]))
    assert deep.max() > 200 and deep.min() < 5  # 16-bit range mapped onto 0..255, not clipped
    assert load_image(paths["int32.tif"]).getpixel((0, 0))[0] == 255


def test_predictor_on_paths_pil_and_arrays(ckpt, tmp_path):
    pred = Predictor(ckpt, device="cpu")
    items = [*_images(tmp_path).values(), _rgb(), np.zeros((32, 32, 3), np.uint8), np.zeros((50, 20), np.uint8)]
    results = pred.predict(items, top_k=3)
    assert len(results) == len(items)
    for r in results:
        assert r.error is None and r.label in pred.classes and len(r.top) == 3
        assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert r.top[0][0] == r.label and r.top[0][1] >= r.top[1][1] >= r.top[2][1]


def test_predictor_rejects_unreadable_input(ckpt, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    pred = Predictor(ckpt, device="cpu")
    with pytest.raises(ImageError, match="notes.jpg: not a readable image"):
        pred.predict([bad])
    out = pred.predict([bad, _rgb()], on_error="report")
    assert out[0].error and out[1].label in pred.classes
    with pytest.raises(ImageError, match="expected uint8"):
        pred.predict([np.zeros((8, 8, 3), np.float32)])


def test_decompression_bomb_guard(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("1", (4000, 3000)).save(path)  # small file, 12 Mpixels
    with pytest.raises(ImageError, match="huge.png: 4000x3000 is 12 Mpixels, over the 10 Mpixel limit"):
        load_image(path, max_pixels=10_000_000)


def test_cli_predict_reports_bad_files_and_exit_code(ckpt, tmp_path, capsys):
    paths = _images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = main(["predict", str(ckpt), str(paths["rgb.jpg"]), str(tmp_path / "broken.png"),
                 str(tmp_path / "missing.png"), "--top-k", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "rgb.jpg:" in out and len(out.strip().splitlines()) == 1
    assert "broken.png" in err and "missing.png: no such file" in err and "Traceback" not in err


def test_cli_predict_folder_json(ckpt, tmp_path, capsys):
    paths = _images(tmp_path)
    code = main(["predict", str(ckpt), str(tmp_path), "--json", "--top-k", "1"])
    out, _ = capsys.readouterr()
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert code == 0 and len(rows) == len(paths)
    assert all(len(r["top"]) == 1 and r["label"] == r["top"][0][0] for r in rows)
