"""The web API in-process: listing, predictions, limits, errors, batching, the CLI's checks."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import need_module  # noqa: E402

need_module("fastapi", "web extra not installed: pip install 'cifarlab[web]'")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from cifarlab.catalog import Catalog  # noqa: E402
from cifarlab.cli import main  # noqa: E402
from cifarlab.data.synthetic import CIFAR10_CLASSES  # noqa: E402
from cifarlab.inference import Predictor  # noqa: E402
from cifarlab.web import MicroBatcher, ServeLimits, create_app  # noqa: E402

from _checkpoints import write_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "r20.pt", top1=0.5)


def _client(ckpt, **limits):
    catalog = Catalog({"r20": str(ckpt)}, runs=False, shipped=False)
    return TestClient(create_app(catalog, ServeLimits(**limits)))


def _png(mode="RGB", size=(300, 200), colour=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).convert(mode).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(ckpt):
    with _client(ckpt) as c:  # the context runs the lifespan: the model is preloaded
        yield c


def test_health_models_and_docs(client):
    assert client.get("/health").json()["status"] == "ok"
    listing = client.get("/api/models").json()
    assert listing["default"] == "r20"
    (m,) = listing["models"]
    assert m["accuracy"] == 0.5 and m["parameters"] > 200_000 and "path" not in m
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="model"' in page.text and "app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_predict_matches_the_predictor(client, ckpt):
    data = _png("RGBA", (300, 200), (30, 120, 220))
    r = client.post("/api/predict", files={"file": ("pic.png", data, "image/png")},
                    data={"model": "r20", "top_k": "4", "view": "true"})
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    expected = Predictor(ckpt).predict([data], top_k=4)[0]
    assert res["label"] == expected.label and len(res["top"]) == 4
    assert list(res["probabilities"]) == list(expected.probabilities)  # every class, most probable first
    np.testing.assert_allclose(list(res["probabilities"].values()), list(expected.probabilities.values()), atol=1e-5)
    assert sum(res["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert res["size"] == [300, 200] and res["filename"] == "pic.png" and res["error"] is None
    view = Image.open(io.BytesIO(base64.b64decode(res["view"].split(",", 1)[1])))
    assert view.size == (32, 32) and np.all(np.asarray(view) == (30, 120, 220))  # a flat colour stays flat
    assert r.json()["timing_ms"]["total"] > 0


def test_several_pictures_with_one_bad(client):
    files = [("file", ("a.png", _png("L"), "image/png")), ("file", ("notes.txt", b"hello", "text/plain")),
             ("file", ("c.png", _png("I;16"), "image/png"))]
    r = client.post("/api/predict", files=files)
    assert r.status_code == 200
    a, bad, c = r.json()["results"]
    assert a["label"] in CIFAR10_CLASSES and c["label"] in CIFAR10_CLASSES
    assert bad["label"] is None and "notes.txt" in bad["error"] and "not a readable image" in bad["error"]


@pytest.mark.parametrize("form, status, words", [
    ({"model": "nope"}, 404, "unknown model 'nope'; choose one of: r20"),
    ({"model": "/etc/passwd"}, 404, "unknown model"),
    ({"top_k": "0"}, 422, "top_k 0"),
])
def test_bad_form_values(client, form, status, words):
    r = client.post("/api/predict", files={"file": ("a.png", _png(), "image/png")}, data=form)
    assert r.status_code == status and words in r.json()["detail"]


def test_not_an_image_and_no_picture(client):
    r = client.post("/api/predict", files={"file": ("x.jpg", b"\xff\xd8garbage", "image/jpeg")})
    assert r.status_code == 415 and "x.jpg" in r.json()["detail"]
    r = client.post("/api/predict", data={"model": "r20"})
    assert r.status_code == 422 and "no picture" in r.json()["detail"]


def test_upload_limits(ckpt):
    with _client(ckpt, max_upload_bytes=50_000, max_pixels=20_000, max_files=2) as c:
        big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, "PNG")  # noise does not compress: ~120 kB
        r = c.post("/api/predict", files={"file": ("big.png", buf.getvalue(), "image/png")})
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        chunked = c.post("/api/predict", content=iter([b"x" * 30_000] * 3),  # no Content-Length
                         headers={"content-type": "multipart/form-data; boundary=b"})
        assert chunked.status_code == 413
        r = c.post("/api/predict", files={"file": ("wide.png", _png(size=(400, 100)), "image/png")})
        assert r.status_code == 413 and "Mpixel" in r.json()["detail"]
        files = [("file", (f"{i}.png", _png(size=(20, 20)), "image/png")) for i in range(3)]
        r = c.post("/api/predict", files=files)
        assert r.status_code == 413 and "at most 2" in r.json()["detail"]


def test_concurrent_requests_share_a_batch(ckpt):
    app = create_app(Catalog({"r20": str(ckpt)}, runs=False, shipped=False), ServeLimits(max_wait_ms=200))

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            files = {"file": ("a.png", _png(size=(40, 40)), "image/png")}
            return await asyncio.gather(*(c.post("/api/predict", files=files) for _ in range(6)))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert max(r.json()["batch_size"] for r in responses) > 1


def test_batcher_routes_rows_and_errors():
    calls = []

    def fn(arrays):
        calls.append(len(arrays))
        time.sleep(0.05)
        return np.array([[a.mean()] for a in arrays])

    batcher = MicroBatcher(fn, max_batch=64, max_wait_s=0.1)
    jobs = [[np.full((2, 2), 10 * i + j) for j in range(i + 1)] for i in range(5)]
    futures = [None] * 5

    def submit(i):
        futures[i] = batcher.submit(jobs[i])
    threads = [threading.Thread(target=submit, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, fut in enumerate(futures):
        assert fut.result(5).probabilities[:, 0].tolist() == [10 * i + j for j in range(i + 1)]
    assert len(calls) < 5 and sum(calls) == 15
    batcher.close()

    def boom(arrays):
        raise RuntimeError("model failed")
    failing = MicroBatcher(boom)
    with pytest.raises(RuntimeError, match="model failed"):
        failing.submit([np.zeros((2, 2))]).result(5)
    failing.close()


def test_serve_cli_refuses_bad_checkpoints(tmp_path, capsys):
    assert main(["serve", "--no-runs", "--checkpoint", "x"]) == 1
    assert "NAME=PATH" in capsys.readouterr().err
    assert main(["serve", "--no-runs", "--checkpoint", f"x={tmp_path / 'none.pt'}"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_serve_cli_with_no_model_at_all_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("cifarlab.shipped.default_checkpoint", lambda: tmp_path / "absent.pt")
    assert main(["serve", "--no-runs"]) == 1
    assert "no models to choose from" in capsys.readouterr().err


def test_examples_are_the_cached_test_pictures(ckpt, tmp_path):
    from cifarlab.data import cache
    from cifarlab.data.types import Split
    rng = np.random.default_rng(3)
    test = Split(rng.integers(0, 256, (25, 32, 32, 3), dtype=np.uint8), (np.arange(25) * 7) % 10)
    assert cache.save(cache.entry_path(tmp_path / "home", "a" * 64, "fine"), test, test, list(CIFAR10_CLASSES), {})
    catalog = Catalog({"r20": str(ckpt)}, runs=False, shipped=False)
    with TestClient(create_app(catalog, examples_home=tmp_path / "home")) as c:
        listed = c.get("/api/examples").json()["examples"]
        # the first two pictures of each class, in the order of the test split
        first_two = sorted(i for k in range(10) for i in np.flatnonzero(test.labels == k)[:2])
        assert [e["name"] for e in listed] == [f"test-{i:05d}-{CIFAR10_CLASSES[test.labels[i]]}.png" for i in first_two]
        assert [e["label"] for e in listed] == [CIFAR10_CLASSES[test.labels[i]] for i in first_two]
        for e, i in zip(listed, first_two):
            png = c.get(e["url"])
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), test.images[i])
        missing = c.get(f"/api/examples/{len(listed)}.png")
        assert missing.status_code == 404 and f"there are {len(listed)}" in missing.json()["detail"]
    with TestClient(create_app(catalog, examples_home=tmp_path / "nothing-here")) as c:
        assert c.get("/api/examples").json() == {"examples": []}
    (tmp_path / "other").mkdir()  # a cache of other classes offers nothing for a CIFAR-10 model
    assert cache.save(cache.entry_path(tmp_path / "other", "b" * 64, "fine"), test, test, [f"c{i}" for i in range(10)], {})
    with TestClient(create_app(catalog, examples_home=tmp_path / "other")) as c:
        assert c.get("/api/examples").json() == {"examples": []}


def test_favicon_and_the_page_links(client):
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and Image.open(io.BytesIO(icon.content)).format == "ICO"
    page = client.get("/").text
    assert 'rel="icon" href="/static/favicon.svg"' in page and client.get("/static/favicon.svg").status_code == 200
    assert 'multiple' in page and 'capture="environment"' in page


def test_explain_returns_the_grad_cam_of_the_predicted_class(client, ckpt):
    """``explain=true``: each result's ``heat`` is Predictor.explain's map for the predicted class,
    at the picture's aspect ratio (96 px on the long side), its alpha 0.45 * sqrt(heat)."""
    y, x = np.mgrid[0:200, 0:300]
    arr = np.stack([x % 256, y % 256, (3 * x + y) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    data = buf.getvalue()
    r = client.post("/api/predict", files={"file": ("grad.png", data, "image/png")}, data={"explain": "true"})
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    heat_png = Image.open(io.BytesIO(base64.b64decode(res["heat"].split(",", 1)[1])))
    assert heat_png.mode == "RGBA" and heat_png.size == (96, 64)
    predictor = Predictor(ckpt)
    expected = predictor.explain(data)  # the predicted class, by the Predictor's own path
    assert predictor.predict([data])[0].label == res["label"]
    stretched = np.asarray(Image.fromarray(expected.astype(np.float32), "F").resize((96, 64), Image.Resampling.BILINEAR))
    alpha = np.asarray(heat_png)[..., 3].astype(float)
    np.testing.assert_allclose(alpha, np.round(0.45 * np.sqrt(np.clip(stretched, 0, 1)) * 255), atol=1.01)
    assert alpha.max() > 100  # the map is not empty: its peak is at 0.45 opacity
    plain = client.post("/api/predict", files={"file": ("grad.png", data, "image/png")}).json()["results"][0]
    assert "heat" not in plain


def test_batcher_runs_other_work_between_forwards():
    order = []

    def fn(arrays):
        order.append(("forward", len(arrays)))
        time.sleep(0.05)
        return np.zeros((len(arrays), 1))

    batcher = MicroBatcher(fn, max_wait_s=0.01)
    first = batcher.submit([np.zeros((2, 2))])
    called = batcher.call(lambda: order.append(("call", threading.current_thread().name)) or 42)
    assert called.result(5) == 42 and first.result(5).probabilities.shape == (1, 1)
    assert ("call", "batcher-model") in order
    failing = batcher.call(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    batcher.close()


def test_probabilities_are_temperature_scaled_unless_raw_is_asked(tmp_path):
    """A checkpoint with a temperature: the API's probabilities are the Predictor's calibrated
    ones, and with raw_probs=true the model's own softmax (Predictor(raw_probs=True))."""
    from cifarlab.training.calibrate import store_in_checkpoint
    path = write_checkpoint(tmp_path / "warm.pt", top1=0.5, seed=3)
    store_in_checkpoint(path, {"temperature": 0.4})
    data = _png("RGB", (300, 200), (40, 160, 90))
    with _client(path) as c:
        scaled = c.post("/api/predict", files={"file": ("a.png", data, "image/png")}).json()
        raw = c.post("/api/predict", files={"file": ("a.png", data, "image/png")}, data={"raw_probs": "true"}).json()
    assert scaled["temperature"] == raw["temperature"] == 0.4
    assert scaled["calibrated"] is True and raw["calibrated"] is False
    for answer, predictor in ((scaled, Predictor(path)), (raw, Predictor(path, raw_probs=True))):
        expected = predictor.predict([data])[0].probabilities
        got = answer["results"][0]["probabilities"]
        assert list(got) == list(expected)
        np.testing.assert_allclose(list(got.values()), list(expected.values()), atol=2e-6)
    assert max(scaled["results"][0]["probabilities"].values()) > max(raw["results"][0]["probabilities"].values())
