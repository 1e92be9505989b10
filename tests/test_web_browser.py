"""The page in a real browser: Debian's Chromium driven by Playwright against a real server.

The server is uvicorn in a thread on a free loopback port. Playwright never downloads a
browser: it launches /usr/bin/chromium (``make sysdeps`` installs it; ``CHROMIUM`` overrides
the path). The screenshot is saved to test-artifacts/web.png (``CIFARLAB_ARTIFACTS``
overrides the folder). The server wants an API token, as one beyond loopback would: the
page is opened at ``/#token=...`` and must send it.
"""

from __future__ import annotations

import os
import socket
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
from cifarlab.engine import Predictor  # noqa: E402
from cifarlab.web import create_app  # noqa: E402

from _checkpoints import write_checkpoint  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# without the background-networking flags Chromium keeps calling home, and this network refuses
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("CIFARLAB_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
TOKEN = "browser-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base url, checkpoint path) of a live server; stopped after the module."""
    path = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "r20.pt", top1=0.5)
    app = create_app(Catalog({"tiny-resnet20": str(path)}, runs=False, shipped=False), token=TOKEN)
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
    yield f"http://127.0.0.1:{port}", path
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(server):
    need(Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM}: run `make sysdeps` (apt-get install chromium) "
                                   f"or set CHROMIUM")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1000, "height": 720})
        pg.set_default_timeout(20_000)
        yield pg
        browser.close()


def _open(page, url: str, token: str | None = TOKEN) -> None:
    """Load the page afresh (a URL differing only after '#' would not reload it)."""
    page.goto("about:blank")
    page.goto(url + "/" + (f"#token={token}" if token else ""))


def _picture(path: Path) -> Path:
    """A 640x480 photo-like picture: a sky gradient over a green field."""
    y = np.linspace(0, 1, 480)[:, None, None]
    sky = np.array([90, 150, 230]) * (1 - y) + np.array([200, 220, 250]) * y
    img = np.repeat(sky, 640, axis=1)
    img[300:] = [60, 140, 50]
    Image.fromarray(img.astype(np.uint8)).save(path, "JPEG", quality=90)
    return path


def test_upload_shows_ten_bars_and_the_class(server, page, tmp_path):
    url, ckpt = server
    _open(page, url)
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    assert "tiny-resnet20" in page.inner_text("#model") and "50.00% test accuracy" in page.inner_text("#model")
    picture = _picture(tmp_path / "field.jpg")
    page.set_input_files("#file", str(picture))
    page.wait_for_selector("#result:not([hidden])")
    bars = page.locator("#bars li")
    assert bars.count() == 10
    expected = Predictor(ckpt).predict([picture])[0]
    assert page.inner_text("#label") == expected.label
    shown = [float(t.rstrip("%")) for t in page.locator("#bars .pct").all_inner_texts()]
    assert shown == sorted(shown, reverse=True) and abs(sum(shown) - 100) < 1.0
    assert shown[0] == pytest.approx(100 * expected.top[0][1], abs=0.06)
    widths = [page.locator("#bars .fill").nth(i).bounding_box()["width"] for i in (0, 9)]
    track = page.locator("#bars .track").first.bounding_box()["width"]
    assert widths[0] == pytest.approx(track * shown[0] / 100, abs=2) and widths[0] > widths[1]
    assert page.evaluate("document.getElementById('view').naturalWidth") == 32
    assert "ms in all" in page.inner_text("#timing")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "web.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_a_file_that_is_not_a_picture_shows_an_error(server, page, tmp_path):
    url, _ = server
    _open(page, url)
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert "notes.txt" in page.inner_text("#error") and "not a readable image" in page.inner_text("#error")
    assert page.is_hidden("#result") and page.is_hidden("#pictures")
    page.screenshot(path=str(ARTIFACTS / "web-error.png"))


def test_dropping_a_picture_classifies_it(server, page, tmp_path):
    url, ckpt = server
    _open(page, url)
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    data = _picture(tmp_path / "drop.jpg").read_bytes()
    page.evaluate("""(bytes) => {
        const file = new File([new Uint8Array(bytes)], 'drop.jpg', {type: 'image/jpeg'});
        const dt = new DataTransfer();
        dt.items.add(file);
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    }""", list(data))
    page.wait_for_selector("#result:not([hidden])")
    assert page.locator("#bars li").count() == 10
    assert page.inner_text("#label") == Predictor(ckpt).predict([data])[0].label
    assert page.inner_text("#preview-caption") == "drop.jpg"


def test_without_the_token_the_page_says_how_to_give_it(server, page):
    url, _ = server
    _open(page, url, token=None)
    page.wait_for_selector("#error:not([hidden])")
    assert "needs its API token" in page.inner_text("#error") and "/#token=<token>" in page.inner_text("#error")
    _open(page, url, token="wrong")
    page.wait_for_selector("#error:not([hidden])")
    assert "needs its API token" in page.inner_text("#error")
