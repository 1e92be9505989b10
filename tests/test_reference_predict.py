"""What the user sees, checked against references computed another way.

Every number the Predictor, batch prediction, ONNX export, the catalogue and ``evaluate``'s
test-time views produce is compared here with one computed without them: the picture read
with Pillow, converted and resized as ``inference/predict.py`` documents (RGB, 32x32, bilinear,
aspect ratio not kept), then ``/255`` and ``(x - mean) / std`` in numpy with the
normalization saved in the checkpoint, through the bare ``nn.Module`` the test built
itself, softmax in float64. A known-answer model (hand-set weights whose logits are a
closed-form function of a flat colour) pins the whole chain to numbers written down
without running any cifarlab code. ``scripts/mutation_check.py`` plants faults in these
paths (normalization skipped, mean/std swapped, class order, resize, softmax dim, TTA
views...) and expects these tests to fail.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab.data.synthetic import random_cifar
from cifarlab.training import evaluate
from cifarlab.inference import Predictor
from cifarlab.models import create_model

from _reference import (CLASSES, MEAN, STD, random_lenet, reference_for, reference_input, reference_probs,
                        save_ref_checkpoint, softmax64)
from conftest import need, need_module


@pytest.fixture(scope="module")
def lenet():
    return random_lenet()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, lenet):
    return save_ref_checkpoint(tmp_path_factory.mktemp("ref") / "lenet.pt", lenet, "lenet5_modern")


def _pictures(folder) -> dict:
    """Pictures of several sizes and modes whose RGB conversion Pillow does the same on both paths."""
    rng = np.random.default_rng(5)
    out = {}
    for name, (w, h) in {"wide.png": (48, 40), "tall.png": (20, 70), "exact.png": (32, 32),
                         "tiny.png": (5, 3), "large.png": (640, 480)}.items():
        out[name] = folder / name
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(out[name])
    out["grey.png"] = folder / "grey.png"
    Image.fromarray(rng.integers(0, 256, (36, 50), dtype=np.uint8), "L").save(out["grey.png"])
    return out


def _assert_prediction_matches(pred, row: np.ndarray, classes=CLASSES, top_k=3, atol=1e-5):
    order = np.argsort(-row, kind="stable")
    assert pred.error is None
    assert pred.index == order[0] and pred.label == classes[order[0]]
    assert list(pred.probabilities) == [classes[j] for j in order]  # every class, most probable first
    np.testing.assert_allclose([pred.probabilities[classes[j]] for j in range(10)], row, atol=atol)
    assert [c for c, _ in pred.top] == [classes[j] for j in order[:top_k]]
    # the top-k shows the full-softmax probabilities, not ones renormalized over the k
    np.testing.assert_allclose([p for _, p in pred.top], row[order[:top_k]], atol=atol)


# ---------------------------------------------------------------- Predictor
def test_predictor_equals_hand_normalized_reference(ckpt, lenet, tmp_path):
    paths = list(_pictures(tmp_path).values())
    expected = reference_for(lenet, paths)
    assert expected.max(axis=1).min() > 0.15  # not a flat (0.1) output: the comparison can tell models apart
    preds = Predictor(ckpt, device="cpu").predict(paths, top_k=3, batch_size=4)  # ragged last batch
    assert [p.source for p in preds] == [str(p) for p in paths]
    for pred, row in zip(preds, expected):
        _assert_prediction_matches(pred, row)


def test_predictor_on_arrays_bytes_and_pil_equals_reference(ckpt, lenet, tmp_path):
    rng = np.random.default_rng(11)
    arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pil = Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8))
    path = tmp_path / "p.png"
    pil.save(path)
    data = path.read_bytes()
    expected = reference_probs(lenet, [reference_input(Image.fromarray(arr)), reference_input(pil),
                                       reference_input(pil)])
    pred = Predictor(ckpt, device="cpu")
    np.testing.assert_allclose(pred.probabilities([arr]), expected[:1], atol=1e-5)
    for p, row in zip(pred.predict([arr, pil, data], top_k=10), expected):
        _assert_prediction_matches(p, row, top_k=10)


def test_preprocess_is_the_documented_normalization(ckpt):
    """The tensor the model sees, element by element (catches mean/std swapped or skipped)."""
    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    got = Predictor(ckpt, device="cpu").preprocess(arrays).numpy()
    expected = np.stack([reference_input(Image.fromarray(a)) for a in arrays])
    np.testing.assert_allclose(got, expected, atol=1e-5)


# ---------------------------------------------------------------- known answers
B = 5.0  # keeps every hidden value positive, so the ReLUs pass it unchanged
A = np.array([[2.0, -1.0, 0.5], [-1.5, 2.5, 0.0], [0.0, -1.0, 3.0], [1.0, 1.0, 1.0], [-2.0, 0.5, 1.5],
              [0.7, -0.3, -2.0], [3.0, 0.0, -3.0], [-1.0, -1.0, 2.0], [0.2, 2.0, -1.0], [-0.5, -2.5, 0.4]])
C = np.linspace(-0.4, 0.5, 10) - B * A.sum(axis=1)  # the B offsets cancel: logits = A z + linspace


def _known_answer_lenet() -> torch.nn.Module:
    """LeNet-5 (biased convs, ReLU) whose logits on a flat picture are A @ (z + B) + C, where z is
    the normalized colour: each conv and dense layer averages its own channel, nothing else."""
    net = create_model("lenet5", act="relu")
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        conv1, conv2 = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        fc1, fc2, fc3 = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        for k in range(3):
            conv1.weight[k, k] = 1 / 25
            conv1.bias[k] = B
            conv2.weight[k, k] = 1 / 25
            fc1.weight[k, k * 25:(k + 1) * 25] = 1 / 25
            fc2.weight[k, k] = 1.0
        fc3.weight[:, :3] = torch.tensor(A, dtype=torch.float32)
        fc3.bias[:] = torch.tensor(C, dtype=torch.float32)
    return net.eval()


def known_answer(rgb) -> np.ndarray:
    """Probabilities, written down from the spec: z = (rgb/255 - mean) / std, logits = A(z+B)+C."""
    z = (np.asarray(rgb, np.float64) / 255 - np.asarray(MEAN)) / np.asarray(STD)
    return softmax64(A @ (z + B) + C)


@pytest.fixture(scope="module")
def known_ckpt(tmp_path_factory):
    return save_ref_checkpoint(tmp_path_factory.mktemp("known") / "known.pt", _known_answer_lenet(), "lenet5", {"act": "relu"})


def test_known_answer_pictures(known_ckpt, tmp_path):
    """Flat pictures of any size and mode: the colour the Predictor documents it sees, and nothing else."""
    cases = {  # file: (picture, the RGB colour it must be read as)
        "red.png": (Image.new("RGB", (40, 30), (255, 0, 0)), (255, 0, 0)),
        "teal.jpg": (Image.new("RGB", (32, 32), (0, 128, 128)), None),  # JPEG: colour read back below
        "grey.png": (Image.new("L", (7, 90), 77), (77, 77, 77)),
        "clear.png": (Image.new("RGBA", (64, 64), (10, 200, 10, 0)), (255, 255, 255)),  # on white
        "opaque.png": (Image.new("RGBA", (33, 31), (10, 200, 30, 255)), (10, 200, 30)),
        "deep16.png": (Image.fromarray(np.full((20, 20), 65535, np.uint16)), (255, 255, 255)),
        "palette.gif": (Image.new("P", (50, 50), 0), None),
        "big.png": (Image.new("RGB", (1000, 10), (30, 60, 250)), (30, 60, 250)),
    }
    cases["palette.gif"][0].putpalette([200, 100, 50] * 256)
    cases["palette.gif"] = (cases["palette.gif"][0], (200, 100, 50))
    paths, colours = [], []
    for name, (img, rgb) in cases.items():
        img.save(tmp_path / name)
        if rgb is None:  # lossy: the colour is whatever the (flat) decoded file holds
            decoded = np.asarray(Image.open(tmp_path / name).convert("RGB"))
            assert (decoded == decoded[0, 0]).all()
            rgb = tuple(decoded[0, 0])
        paths.append(tmp_path / name)
        colours.append(rgb)
    preds = Predictor(known_ckpt, device="cpu").predict(paths, top_k=4)
    expected = np.stack([known_answer(c) for c in colours])
    assert len({int(r.argmax()) for r in expected}) >= 4  # the colours pick different classes
    for pred, row in zip(preds, expected):
        _assert_prediction_matches(pred, row, top_k=4)


# ---------------------------------------------------------------- batch prediction (CSV)
def test_predict_folder_csv_equals_reference(ckpt, lenet, tmp_path):
    from cifarlab.inference.batch_predict import predict_folder
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(8)
    rels = []
    for i in range(7):
        rel = f"{'sub/' if i % 2 else ''}pic{i}.png"
        size = (10 + 9 * i, 50 - 5 * i)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / rel)
        rels.append(rel)
    out = tmp_path / "pred.csv"
    report = predict_folder(Predictor(ckpt, device="cpu"), folder, out, top_k=2, batch_size=3)
    assert report.written == 7 and not report.failed
    with out.open(newline="") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(rels)
    expected = reference_for(lenet, [folder / r for r in rels])
    for rel, row in zip(rels, expected):
        order = np.argsort(-row, kind="stable")
        got = rows[rel]
        assert got["class"] == CLASSES[order[0]]
        assert float(got["probability"]) == pytest.approx(row[order[0]], abs=2e-6)
        top = [item.split(":") for item in got["top_k"].split(";")]
        assert [c for c, _ in top] == [CLASSES[j] for j in order[:2]]
        np.testing.assert_allclose([float(p) for _, p in top], row[order[:2]], atol=1e-4)


# ---------------------------------------------------------------- ONNX
def test_onnx_export_equals_reference(ckpt, lenet, tmp_path):
    need_module("onnx", "onnx extra not installed: pip install 'cifarlab[onnx]'")
    ort = need_module("onnxruntime", "onnx extra not installed: pip install 'cifarlab[onnx]'")
    from cifarlab.inference.export import export_checkpoint
    onnx_path = export_checkpoint(ckpt, tmp_path / "lenet.onnx")
    paths = list(_pictures(tmp_path).values())
    inputs = [reference_input(Image.open(p)) for p in paths]
    expected = reference_probs(lenet, inputs)
    # the bare exported graph on the hand-normalized batch
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: np.stack(inputs)})[0]
    np.testing.assert_allclose(softmax64(logits), expected, atol=1e-5)
    # and the Predictor on the .onnx file, from the pictures
    onnx_pred = Predictor(onnx_path)
    assert onnx_pred.backend == "onnxruntime" and onnx_pred.classes == CLASSES
    for pred, row in zip(onnx_pred.predict(paths, top_k=3), expected):
        _assert_prediction_matches(pred, row, atol=1e-5)


# ---------------------------------------------------------------- catalogue
def test_catalogue_serves_the_reference_and_states_the_saved_accuracy(ckpt, lenet, tmp_path):
    from cifarlab.catalog import Catalog
    saved = torch.load(ckpt, weights_only=True)
    catalog = Catalog({"mine": str(ckpt)}, runs=False, shipped=False)
    entry = catalog.resolve("mine")
    assert entry.accuracy == saved["test"]["top1"] and entry.top5 == saved["test"]["top5"]
    assert entry.model == "lenet5_modern"
    assert entry.parameters == sum(p.numel() for p in lenet.parameters() if p.requires_grad)
    paths = list(_pictures(tmp_path).values())
    for pred, row in zip(catalog.predictor("mine").predict(paths, top_k=3), reference_for(lenet, paths)):
        _assert_prediction_matches(pred, row)


# ---------------------------------------------------------------- test-time views
def _np_views(x: np.ndarray, mode: str) -> list[np.ndarray]:
    """The documented views of an NCHW batch in numpy: itself, its mirror (left-right), and for
    flip-translate both shifted by one pixel each way with the edge pixels repeated."""
    views = [x, x[..., ::-1]]
    if mode == "flip-translate":
        h, w = x.shape[-2:]
        for d in (-1, 1):  # content moved down-right (d=-1), up-left (d=+1)
            rows = np.clip(np.arange(h) + d, 0, h - 1)
            cols = np.clip(np.arange(w) + d, 0, w - 1)
            views += [v[..., rows, :][..., cols] for v in (x, x[..., ::-1])]
    return views if mode != "none" else [x]


@pytest.mark.parametrize("mode,count", [("none", 1), ("flip", 2), ("flip-translate", 6)])
def test_tta_views_are_the_documented_pixels(mode, count):
    from cifarlab.training.evaluation import tta_views
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 9)).astype(np.float32)
    views = tta_views(torch.from_numpy(x), mode)
    expected = _np_views(x, mode)
    assert len(views) == count
    for got, ref in zip(views, expected):
        np.testing.assert_array_equal(got.numpy(), ref)


@pytest.mark.parametrize("mode", ["none", "flip", "flip-translate"])
def test_evaluate_averages_the_logits_of_the_views(ckpt, lenet, mode):
    """top-1, top-5 and loss over a ragged last batch = those of the mean of per-view logits."""
    data = random_cifar(n_train=10, n_test=23, seed=4)
    data.classes = list(CLASSES)
    x = np.stack([reference_input(Image.fromarray(im)) for im in data.test.images])
    with torch.no_grad():
        logits = np.mean([lenet(torch.from_numpy(np.ascontiguousarray(v))).numpy()
                          for v in _np_views(x, mode)], axis=0).astype(np.float64)
    y = data.test.labels
    log_p = np.log(softmax64(logits))
    order = np.argsort(-logits, axis=1)
    result = evaluate(ckpt, data=data, tta=mode, batch_size=10)
    assert result["n"] == 23 and result["tta"] == mode
    assert result["top1"] == pytest.approx(np.mean(order[:, 0] == y), abs=1e-12)
    assert result["top5"] == pytest.approx(np.mean((order[:, :5] == y[:, None]).any(1)), abs=1e-12)
    assert result["loss"] == pytest.approx(-log_p[np.arange(23), y].mean(), rel=1e-5)
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (y, order[:, 0]), 1)
    assert result["confusion"] == confusion.tolist()


# ---------------------------------------------------------------- the shipped models, real data
def _shipped_names() -> list[str]:
    from cifarlab.shipped import shipped_models
    return list(shipped_models()) or ["default"]  # none at all: the default's test says it is missing


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name", _shipped_names())
def test_shipped_model_states_what_the_predictor_measures(real_data, name):
    """The accuracy the model lists show for each shipped model (its checkpoint's ``test``), re-measured
    on the 10,000 test pictures through the Predictor, the path the apps and `predict` use, single view."""
    from cifarlab.catalog import Catalog
    from cifarlab.shipped import shipped_models
    path = shipped_models().get(name)
    need(path is not None and path.is_file(),
         f"no shipped model {name!r}: run scripts/package_model.py RUN_DIR --name {name} to make one")
    stated = Catalog(runs=False).resolve(name).accuracy
    assert stated == torch.load(path, weights_only=True)["test"]["top1"]
    pred = Predictor(path, device="cpu")
    assert pred.classes == list(real_data.classes)
    images, labels = real_data.test.images, real_data.test.labels
    assert len(labels) == 10_000
    hits = 0
    for start in range(0, len(labels), 500):
        batch = list(images[start:start + 500])
        hits += int((pred.probabilities(batch).argmax(1) == labels[start:start + 500]).sum())
    measured = hits / len(labels)
    print(f"shipped model {name}: stated {stated:.4f}, measured through the Predictor {measured:.4f}")
    assert math.isclose(measured, stated, abs_tol=0.003), (measured, stated)
