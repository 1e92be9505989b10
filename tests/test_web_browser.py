"""The web page in a real browser: many pictures at once (chosen, dropped, pasted, examples),
one card per picture, bars on demand, no sideways scrolling on phones.

Runs the app with uvicorn in a thread on a free loopback port. Playwright never downloads a
browser: it launches /usr/bin/chromium (``make sysdeps`` installs it; ``CHROMIUM`` overrides
the path). Screenshots go to a temporary folder (``CIFARLAB_ARTIFACTS`` names another, e.g.
to keep them); never into the checkout. The server wants an API token, as one beyond
loopback would: the page is opened at ``/#token=...`` and must send it.

Every class shown is compared with ``Predictor`` on the same file, and every example with
the array it was cut from.
"""

from __future__ import annotations

import io
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import need, need_module  # noqa: E402

need_module("fastapi", "web extra not installed: pip install 'cifarlab[web]'")
need_module("playwright", "playwright not installed: pip install 'cifarlab[dev]'")
import uvicorn  # noqa: E402

from cifarlab.catalog import Catalog  # noqa: E402
from cifarlab.data import cache  # noqa: E402
from cifarlab.data.synthetic import CIFAR10_CLASSES  # noqa: E402
from cifarlab.data.types import Split  # noqa: E402
from cifarlab.inference import Predictor  # noqa: E402
from cifarlab.web import create_app  # noqa: E402

from _checkpoints import write_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow  # a browser and a server: seconds per test

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# without the background-networking flags Chromium keeps calling home, and this network refuses
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-test-token"


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("CIFARLAB_ARTIFACTS") or tempfile.mkdtemp(prefix="cifarlab-web-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fake_cache(home: Path) -> Split:
    """A cache entry whose test split is 30 noise pictures (3 per class); its test Split."""
    rng = np.random.default_rng(7)
    test = Split(rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), np.arange(30) % 10)
    train = Split(test.images[:10].copy(), np.arange(10))
    assert cache.save(cache.entry_path(home, "f" * 64, "fine"), train, test, list(CIFAR10_CLASSES), {})
    return test


def _serve(app):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 30 s")
        time.sleep(0.05)
    return srv, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base url, checkpoint path, the cached test Split the examples come from)."""
    path = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "r20.pt", top1=0.5)
    home = tmp_path_factory.mktemp("home")
    test = _fake_cache(home)
    app = create_app(Catalog({"tiny-resnet20": str(path)}, runs=False, shipped=False), token=TOKEN,
                     examples_home=home)
    srv, thread, url = _serve(app)
    yield url, path, test
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    """A server on a machine without cached data: no examples."""
    path = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "r20.pt", top1=0.5)
    app = create_app(Catalog({"tiny-resnet20": str(path)}, runs=False, shipped=False), token=TOKEN,
                     examples_home=tmp_path_factory.mktemp("empty-home"))
    srv, thread, url = _serve(app)
    yield url
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    need(Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM}: run `make sysdeps` (apt-get install chromium) "
                                   f"or set CHROMIUM")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    pg.set_default_timeout(30_000)
    failed = []  # every response of 400 or more, to check that nothing (the favicon!) is missing
    pg.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    pg.failed = failed
    yield pg
    pg.close()


def _open(page, url: str, token: str | None = TOKEN) -> None:
    page.goto("about:blank")
    page.goto(url + "/" + (f"#token={token}" if token else ""))
    if token == TOKEN:
        page.wait_for_function("document.querySelectorAll('#model option').length > 0")


def _picture(path: Path, variant: int = 0) -> Path:
    """A 640x480 photo-like picture: a sky gradient over a field, colours by ``variant``."""
    y = np.linspace(0, 1, 480)[:, None, None]
    top, bottom = np.array([[90, 150, 230], [230, 120, 60], [40, 40, 60], [200, 200, 210]][variant % 4]), 230
    sky = top * (1 - y) + bottom * y
    img = np.repeat(sky, 640, axis=1)
    img[300:] = [[60, 140, 50], [150, 120, 80], [30, 30, 30], [240, 240, 240]][variant % 4]
    img[200 + 20 * variant:260 + 20 * variant, 100 + 80 * variant:300 + 80 * variant] = [180, 30, 30]
    Image.fromarray(img.astype(np.uint8)).save(path, "JPEG", quality=90)
    return path


def _four(tmp_path: Path) -> list[Path]:
    names = ["field.jpg", "sunset.jpg", "night-sky-over-the-harbour-with-a-very-long-file-name-indeed.jpg",
             "snow.jpg"]
    return [_picture(tmp_path / name, i) for i, name in enumerate(names)]


def _wait_classified(page, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#results .card').length === {n} && "
                           f"!document.querySelector('#results .card.pending')")


def _cards(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('#results .card')].map(c => ({
        name: c.querySelector('.filename').textContent, label: c.querySelector('.label').textContent,
        confidence: c.querySelector('.confidence').textContent, truth: c.querySelector('.truth').textContent,
        error: c.querySelector('.card-error').hidden ? null : c.querySelector('.card-error').textContent}))""")


def _check_against_predictor(cards: list[dict], pictures: list, ckpt) -> None:
    expected = Predictor(ckpt).predict(pictures)
    assert [c["label"] for c in cards] == [e.label for e in expected]
    for c, e in zip(cards, expected):
        assert float(c["confidence"].rstrip("%")) == pytest.approx(100 * e.top[0][1], abs=0.06)


def test_several_pictures_make_one_card_each(server, page, tmp_path, artifacts):
    url, ckpt, _ = server
    _open(page, url)
    assert page.get_attribute("#file", "multiple") is not None
    assert page.get_attribute("#camera", "capture") == "environment"
    assert "JPEG, PNG, WebP, GIF, BMP or TIFF pictures, up to 10 MB and 24 megapixels each" in page.inner_text("#limits")
    pictures = _four(tmp_path)
    page.set_input_files("#file", [str(p) for p in pictures])
    _wait_classified(page, 4)
    cards = _cards(page)
    assert [c["name"] for c in cards] == [p.name for p in pictures] and not any(c["error"] for c in cards)
    _check_against_predictor(cards, pictures, ckpt)
    assert page.inner_text("#summary") == "4 pictures"
    # the bars only on demand: closed at first, ten of them once opened
    first = page.locator("#results .card").first
    assert not first.locator(".bars").is_visible()
    first.locator("summary").click()
    bars = first.locator(".bars li")
    assert bars.count() == 10
    shown = [float(t.rstrip("%")) for t in first.locator(".bars .pct").all_inner_texts()]
    expected = Predictor(ckpt).predict([pictures[0]], top_k=10)[0]
    assert shown == pytest.approx([100 * p for _, p in expected.top], abs=0.06)
    assert shown == sorted(shown, reverse=True) and abs(sum(shown) - 100) < 1.0
    widths = [first.locator(".bars .fill").nth(i).bounding_box()["width"] for i in (0, 9)]
    track = first.locator(".bars .track").first.bounding_box()["width"]
    assert widths[0] == pytest.approx(track * shown[0] / 100, abs=2) and widths[0] > widths[1]
    assert page.evaluate("document.querySelector('#results .card .view').naturalWidth") == 32
    assert "ms in all" in first.locator(".timing").inner_text()
    shot = artifacts / "web-1280.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.failed == []  # the favicon included


@pytest.mark.parametrize("width", [360, 390, 430])
def test_no_sideways_scrolling_on_phones(server, browser, tmp_path, artifacts, width):
    url, _, _ = server
    pg = browser.new_page(viewport={"width": width, "height": 800}, is_mobile=True, has_touch=True)
    pg.set_default_timeout(30_000)
    try:
        _open(pg, url)
        pg.set_input_files("#file", [str(p) for p in _four(tmp_path)])
        _wait_classified(pg, 4)
        overflow = "document.documentElement.scrollWidth"
        assert pg.evaluate(overflow) <= width
        pg.locator("#results .card summary").nth(2).click()  # the card with the long name, bars open
        assert pg.locator("#results .card").nth(2).locator(".bars li").count() == 10
        assert pg.evaluate(overflow) <= width
        assert pg.evaluate("document.body.scrollWidth") <= width
        if width == 390:
            pg.screenshot(path=str(artifacts / "web-390.png"), full_page=True)
    finally:
        pg.close()


def test_dropping_several_pictures_classifies_each(server, page, tmp_path):
    url, ckpt, _ = server
    _open(page, url)
    pictures = _four(tmp_path)[:3]
    page.evaluate("""(files) => {
        const dt = new DataTransfer();
        for (const [name, bytes] of files) dt.items.add(new File([new Uint8Array(bytes)], name, {type: 'image/jpeg'}));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    }""", [[p.name, list(p.read_bytes())] for p in pictures])
    _wait_classified(page, 3)
    cards = _cards(page)
    assert [c["name"] for c in cards] == [p.name for p in pictures]
    _check_against_predictor(cards, pictures, ckpt)


def test_pasting_a_picture_classifies_it(server, page, tmp_path):
    url, ckpt, _ = server
    _open(page, url)
    picture = _picture(tmp_path / "pasted.jpg", 1)
    page.evaluate("""(bytes) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], 'image.jpg', {type: 'image/jpeg'}));
        document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true}));
    }""", list(picture.read_bytes()))
    _wait_classified(page, 1)
    (card,) = _cards(page)
    assert card["name"] == "image.jpg"
    _check_against_predictor([card], [picture], ckpt)


def test_examples_come_from_the_cached_test_pictures(server, page):
    url, ckpt, test = server
    _open(page, url)
    page.wait_for_selector("#example:not([hidden])")
    page.click("#example")
    _wait_classified(page, 4)
    cards = _cards(page)
    indices = [int(c["name"].split("-")[1]) for c in cards]
    assert len(set(indices)) == 4 and all(i < 20 for i in indices)  # the first two of each class
    for card, i in zip(cards, indices):
        truth = CIFAR10_CLASSES[test.labels[i]]
        assert card["name"] == f"test-{i:05d}-{truth}.png"
        article = "an" if truth[0] in "aeiou" else "a"
        assert card["truth"].startswith(f"test picture of {article} {truth}: ")
        assert card["truth"].endswith("right" if card["label"] == truth else "wrong")
    _check_against_predictor(cards, [test.images[i] for i in indices], ckpt)
    page.click("#clear")
    assert page.locator("#results .card").count() == 0 and page.is_hidden("#results-panel")


def test_without_cached_data_there_is_no_example_button(bare_server, page):
    _open(page, bare_server)
    page.wait_for_timeout(500)  # the examples list has come back (empty)
    assert page.evaluate("fetch('/api/examples', {headers: {Authorization: 'Bearer %s'}}).then(r => r.json())"
                         % TOKEN) == {"examples": []}
    assert page.is_hidden("#example")


def test_a_file_that_is_not_a_picture_gets_an_error_card(server, page, tmp_path):
    url, ckpt, _ = server
    _open(page, url)
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    good = _picture(tmp_path / "good.jpg")
    page.set_input_files("#file", [str(bad), str(good)])
    _wait_classified(page, 2)
    bad_card, good_card = _cards(page)
    assert bad_card["label"] == "not classified"
    assert "notes.txt" in bad_card["error"] and "not a readable image" in bad_card["error"]
    assert good_card["error"] is None
    _check_against_predictor([good_card], [good], ckpt)


def test_without_the_token_the_page_says_how_to_give_it(server, page):
    url, _, _ = server
    _open(page, url, token=None)
    page.wait_for_selector("#error:not([hidden])")
    assert "needs its API token" in page.inner_text("#error") and "/#token=<token>" in page.inner_text("#error")
    _open(page, url, token="wrong")
    page.wait_for_selector("#error:not([hidden])")
    assert "needs its API token" in page.inner_text("#error")


def test_favicon_is_served(server):
    import urllib.request
    url, _, _ = server
    with urllib.request.urlopen(url + "/favicon.ico") as r:
        data = r.read()
        assert r.status == 200 and r.headers["content-type"] == "image/x-icon"
    assert Image.open(io.BytesIO(data)).format == "ICO"
    with urllib.request.urlopen(url + "/static/favicon.svg") as r:
        assert r.status == 200 and b"<svg" in r.read()


def test_a_card_shows_where_the_model_looked_on_demand(server, page, tmp_path, artifacts):
    url, ckpt, _ = server
    _open(page, url)
    picture = _picture(tmp_path / "look.jpg", 0)
    page.set_input_files("#file", [str(picture)])
    _wait_classified(page, 1)
    card = page.locator("#results .card").first
    heat, button = card.locator(".heat"), card.locator("button.explain")
    assert not heat.is_visible() and button.inner_text() == "Show where it looked"
    button.click()
    page.wait_for_function("document.querySelector('#results .card .heat').complete && "
                           "!document.querySelector('#results .card .heat').hidden")
    assert heat.is_visible() and button.get_attribute("aria-pressed") == "true"
    # the overlay is the server's map of this picture, at its aspect ratio, over the whole thumbnail
    assert page.evaluate("[document.querySelector('#results .card .heat').naturalWidth, "
                         "document.querySelector('#results .card .heat').naturalHeight]") == [96, 72]
    assert heat.bounding_box() == card.locator(".thumb").bounding_box()
    expected = Predictor(ckpt).explain(picture)
    shown = page.evaluate("""() => { const img = document.querySelector('#results .card .heat');
        const c = document.createElement('canvas'); c.width = 96; c.height = 72;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return Array.from(g.getImageData(0, 0, 96, 72).data).filter((_, i) => i % 4 === 3); }""")
    alpha = np.array(shown, dtype=float).reshape(72, 96)
    peak = np.unravel_index(np.argmax(alpha), alpha.shape)  # where the overlay is strongest ...
    assert expected[int(peak[0] * 32 / 72), int(peak[1] * 32 / 96)] > 0.8  # ... the map is near its peak
    page.screenshot(path=str(artifacts / "web-heat.png"), full_page=True)
    button.click()
    assert not heat.is_visible() and button.inner_text() == "Show where it looked"


# ---------------------------------------------------------------- the model card
@pytest.fixture(scope="module")
def card_server(tmp_path_factory):
    """A server whose one model is a run with a full card: per-class table, confused pairs,
    calibration and robustness (the widest card there is)."""
    import json
    from cifarlab.modelcard import write_run_card
    run = tmp_path_factory.mktemp("runs") / "resnet20-with-a-rather-long-run-name-2026-12-07"
    run.mkdir()
    write_checkpoint(run / "best.pt", top1=0.5)
    per_class = {c: 0.5 + i / 40 for i, c in enumerate(CIFAR10_CLASSES)}
    (run / "summary.json").write_text(json.dumps({
        "run_dir": str(run), "model": "resnet20", "recipe": "cpu-2min", "epochs_run": 7, "epochs_planned": 7,
        "steps_run": 1400, "training_time_s": 101.5, "params": {"trainable": 272474},
        "test": {"n": 10000, "top1": 0.5, "top5": 0.9, "tta": "none", "per_class": per_class},
        "data": {"source": "/srv/data/cifar10-jpeg75.tar.gz", "train": 45000, "val": 5000, "test": 10000},
        "hardware": {"device": "cpu", "device_name": "AMD EPYC"}}))
    conf = np.full((10, 10), 3) + np.diag(np.full(10, 500))
    conf[3, 5], conf[5, 3] = 140, 120
    (run / "confusion.csv").write_text("\n".join(
        ["true\\predicted," + ",".join(CIFAR10_CLASSES)]
        + [c + "," + ",".join(str(v) for v in row) for c, row in zip(CIFAR10_CLASSES, conf)]) + "\n")
    (run / "calibration.json").write_text(json.dumps({
        "n_bins": 15, "temperature": 1.31, "fitted_on": "val", "before": {"ece": 0.0712, "mce": 0.21},
        "after": {"ece": 0.0143, "mce": 0.08}}))
    (run / "corruptions.json").write_text(json.dumps({
        "clean_accuracy": 0.5, "mean_corruption_accuracy": 0.37, "relative_drop": 0.26, "n": 10000,
        "kinds": ["gaussian_noise", "fog", "contrast"], "severities": [1, 2, 3, 4, 5]}))
    write_run_card(run)
    plain = write_checkpoint(tmp_path_factory.mktemp("plain") / "plain.pt", top1=0.42)
    app = create_app(Catalog({"resnet20-with-a-rather-long-run-name": str(run / "best.pt"), "plain": str(plain)},
                             runs=False, shipped=False), token=TOKEN, examples_home=tmp_path_factory.mktemp("no-home"))
    srv, thread, url = _serve(app)
    yield url
    srv.should_exit = True
    thread.join(10)


def _api_card(url: str) -> list[dict]:
    import json
    import urllib.request
    req = urllib.request.Request(url + "/api/models", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())["models"][0]["card_sections"]


@pytest.mark.parametrize("width", [1280, 360, 390, 430])
def test_model_details_show_the_card_without_sideways_scrolling(card_server, browser, artifacts, width):
    pg = browser.new_page(viewport={"width": width, "height": 900}, is_mobile=width < 600, has_touch=width < 600)
    pg.set_default_timeout(30_000)
    try:
        _open(pg, card_server)
        details = pg.locator("#model-details")
        assert details.is_visible() and not pg.locator("#model-card").is_visible()  # closed at first
        details.locator("summary").click()
        assert pg.locator("#model-card").is_visible()
        sections = _api_card(card_server)
        shown = pg.inner_text("#model-card")
        for sec in sections:  # every sentence and every table cell the API gives, in the page
            for para in sec.get("text") or []:
                assert para.replace("`", "") in shown.replace("\n", " ")
            for row in sec.get("rows") or []:
                assert all(cell in shown for cell in row)
        assert "cat / dog" in shown and "7.12% raw, 1.43% after temperature scaling" in shown
        assert pg.locator("#model-card table").count() == 2  # per class, confused pairs
        assert pg.evaluate("document.documentElement.scrollWidth") <= width
        assert pg.evaluate("document.body.scrollWidth") <= width
        if width in (1280, 390):
            pg.screenshot(path=str(artifacts / f"web-model-card-{width}.png"), full_page=True)
        if width == 1280:  # the card follows the menu
            pg.select_option("#model", "plain")
            shown = pg.inner_text("#model-card")
            assert "top-1 42.00%, top-5 90.00% on 100 images." in shown and "cat / dog" not in shown
            assert "Per-class accuracy: not measured for this file" in shown
    finally:
        pg.close()
