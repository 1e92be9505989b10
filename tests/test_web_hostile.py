"""The web API under hostile uploads: each refusal's status and line, the token, the budget.

Bombs and oversize pictures get 413, what is not a picture (or is cut short) 415, too many
requests at once 429, slow uploads 408, no decode memory or time left 503; requests that
are fine still get 200 while the hostile ones are refused.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="web extra not installed: pip install 'cifarlab[web]'")
import httpx  # noqa: E402

from cifarlab.catalog import Catalog  # noqa: E402
from cifarlab.cli import main  # noqa: E402
from cifarlab.web import ServeLimits, create_app  # noqa: E402
from cifarlab.web.decode import Budget, Refused, decode_cost, read_header  # noqa: E402

from _checkpoints import write_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "r20.pt", top1=0.5)


def _app(ckpt, token=None, **limits):
    return create_app(Catalog({"r20": str(ckpt)}, runs=False, shipped=False), ServeLimits(**limits), token=token)


def _png(size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (20, 120, 200)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def _bomb_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height grey pixels; a few zero rows follow, then it ends."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


async def _send(app, *requests):
    """Post each (files, headers, content) to /api/predict at once; the responses in order."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30) as c:
        async def one(files=None, headers=None, content=None):
            return await c.post("/api/predict", files=files, headers=headers, content=content)
        return await asyncio.gather(*(one(**r) for r in requests))


def _file(name, data):
    return {"files": {"file": (name, data, "image/png")}}


def test_bombs_are_refused_from_their_header_with_413(ckpt):
    app = _app(ckpt, max_pixels=1_000_000)
    zeros = io.BytesIO()
    Image.new("L", (2000, 2000)).save(zeros, "PNG")  # a real bomb in miniature: 4 Mpx in a few kB
    assert len(zeros.getvalue()) < 20_000
    big, huge = asyncio.run(_send(app, _file("zeros.png", zeros.getvalue()),
                                  _file("huge.png", _bomb_header(20_000, 20_000))))
    assert big.status_code == 413 and "zeros.png: 2000x2000 is 4 Mpixels, over the 1 Mpixel limit" in big.json()["detail"]
    assert huge.status_code == 413 and "huge.png" in huge.json()["detail"]
    assert "downscale" in huge.json()["detail"]


def test_decode_cost_counts_alpha_and_deep_modes(ckpt):
    assert decode_cost(100, 100, "RGBA") == 2 * decode_cost(100, 100, "RGB")  # compositing on white
    assert decode_cost(100, 100, "P", transparency=True) == decode_cost(100, 100, "RGBA")
    assert decode_cost(100, 100, "RGB", "WEBP") == decode_cost(100, 100, "RGBA")  # WebP hides its alpha
    assert decode_cost(100, 100, "I;16") > decode_cost(100, 100, "RGBA") > decode_cost(100, 100, "L")
    rgb, rgba = _png((1000, 1000)), _png((1000, 1000), "RGBA")
    budget = decode_cost(1000, 1000, "RGB")  # room for the RGB picture, not for its RGBA twin
    assert read_header(rgb, "rgb.png", 10**7, budget).cost == budget
    with pytest.raises(Refused) as refused:
        read_header(rgba, "rgba.png", 10**7, budget)
    assert refused.value.status == 413 and "needs about 23 MiB to decode, over the server's 11 MiB" in str(refused.value)
    (r,) = asyncio.run(_send(_app(ckpt, decode_budget_bytes=budget), _file("rgba.png", rgba)))
    assert r.status_code == 413 and "rgba.png" in r.json()["detail"]


def test_not_pictures_and_truncated_pictures_get_415(ckpt):
    whole, pcx = _png((300, 200)), io.BytesIO()
    Image.new("RGB", (30, 20)).save(pcx, "PCX")  # a format Pillow reads, but not one the server takes
    text, cut, zeros, exotic = asyncio.run(_send(
        _app(ckpt), _file("notes.txt", b"hello, not a picture"), _file("cut.png", whole[:len(whole) // 2]),
        _file("z.png", b"\0" * 5000), _file("old.pcx", pcx.getvalue())))
    assert text.status_code == 415 and text.json()["detail"].startswith("notes.txt: not a readable image")
    assert cut.status_code == 415 and cut.json()["detail"].startswith("cut.png: unreadable")
    assert zeros.status_code == 415 and "z.png" in zeros.json()["detail"]
    assert exotic.status_code == 415 and "old.pcx: PCX pictures are not accepted" in exotic.json()["detail"]


def test_request_totals_are_capped(ckpt):
    app = _app(ckpt, max_request_pixels=100_000, max_files=4, max_upload_bytes=200_000)
    pictures = [("file", (f"{i}.png", _png((200, 200)), "image/png")) for i in range(3)]  # 120 kpx together
    too_many_pixels, too_many_files, too_big = asyncio.run(_send(
        app, {"files": pictures}, {"files": pictures * 2},
        {"content": b"x" * 300_000, "headers": {"content-type": "multipart/form-data; boundary=b"}}))
    assert too_many_pixels.status_code == 413
    assert "3 pictures have 0.12 Mpixels together, over the 0.1 Mpixel limit" in too_many_pixels.json()["detail"]
    assert too_many_files.status_code == 413 and "at most 4" in too_many_files.json()["detail"]
    assert too_big.status_code == 413 and "over the 0.2 MiB limit" in too_big.json()["detail"]


def test_slow_sender_gets_408_and_holds_its_place_meanwhile(ckpt):
    app = _app(ckpt, max_inflight=1, body_timeout_s=3)

    async def trickle():
        yield b"--b\r\n"
        await asyncio.sleep(30)  # never finishes in time
        yield b"--b--\r\n"

    async def scenario():
        slow = asyncio.create_task(_send(app, {"content": trickle(),
                                               "headers": {"content-type": "multipart/form-data; boundary=b"}}))
        while not app.inflight:  # the slow one is through the door (a loaded machine may take a while)
            await asyncio.sleep(0.01)
        (busy,) = await _send(app, _file("a.png", _png()))
        (timed_out,) = await slow
        (after,) = await _send(app, _file("a.png", _png()))
        return busy, timed_out, after

    busy, timed_out, after = asyncio.run(scenario())
    assert busy.status_code == 429 and busy.json()["detail"].startswith("server busy: 1 requests")
    assert busy.headers["retry-after"] == "1"
    assert timed_out.status_code == 408 and "did not arrive within 3 s" in timed_out.json()["detail"]
    assert after.status_code == 200, after.text


def test_busy_decoder_and_slow_decode_get_503_and_the_budget_comes_back(ckpt, monkeypatch):
    app = _app(ckpt, work_timeout_s=0.5)
    service = app.state.service
    photo = _png((1600, 1200))  # 23 MiB to decode by the estimate: goes through the budget
    service.budget.used = service.budget.capacity  # all decode memory taken
    (busy,) = asyncio.run(_send(app, _file("p.png", photo)))
    assert busy.status_code == 503 and "no decoding memory came free" in busy.json()["detail"]
    assert busy.headers["retry-after"] == "1"
    service.budget.used = 0
    decode = service.decode
    monkeypatch.setattr(service, "decode", lambda *a: time.sleep(1.5) or decode(*a))

    async def scenario():
        (slow,) = await _send(app, _file("p.png", photo))
        held = service.budget.used  # the thread still decodes: its memory is still counted
        for _ in range(200):
            if not service.budget.used:
                break
            await asyncio.sleep(0.05)
        return slow, held, service.budget.used

    slow, held, after = asyncio.run(scenario())
    assert slow.status_code == 503 and "p.png: decoding did not finish within 0.5 s" in slow.json()["detail"]
    assert held == decode_cost(1600, 1200, "RGB") and after == 0


def test_valid_requests_succeed_while_hostile_ones_are_refused(ckpt):
    app = _app(ckpt, max_upload_bytes=2 * 2**20)
    good = [_file(f"ok{i}.png", _png((64 + i, 48))) for i in range(8)]
    whole = _png((300, 200))
    hostile = [_file("bomb.png", _bomb_header(30_000, 30_000)), _file("cut.png", whole[:200]),
               _file("notes.txt", b"plain text"),
               {"content": b"x" * (3 * 2**20), "headers": {"content-type": "multipart/form-data; boundary=b"}}]
    responses = asyncio.run(_send(app, *[r for pair in zip(good, hostile + hostile) for r in pair]))
    valid, refused = responses[0::2], responses[1::2]
    assert [r.status_code for r in valid] == [200] * 8
    assert [r.json()["results"][0]["filename"] for r in valid] == [f"ok{i}.png" for i in range(8)]
    assert [r.status_code for r in refused] == [413, 415, 415, 413] * 2
    assert all(r.json()["detail"] for r in refused)


def test_token_guards_the_api_not_the_page(ckpt):
    app = _app(ckpt, token="s3cret")

    async def calls():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            with_token = {"Authorization": "Bearer s3cret"}
            return [await c.get("/api/models"), await c.get("/api/models", headers={"Authorization": "Bearer nope"}),
                    await c.post("/api/predict", files=_file("a.png", _png())["files"]),
                    await c.get("/api/models", headers=with_token),
                    await c.post("/api/predict", files=_file("a.png", _png())["files"], headers=with_token),
                    await c.get("/health"), await c.get("/"), await c.get("/static/app.js")]

    missing, wrong, post_missing, listed, predicted, health, page, script = asyncio.run(calls())
    for r in (missing, wrong, post_missing):
        assert r.status_code == 401 and "Authorization: Bearer <token>" in r.json()["detail"]
    assert listed.status_code == 200 and predicted.status_code == 200
    assert health.status_code == page.status_code == 200
    assert "Bearer" in script.text and "#token=" not in page.text  # the page sends it; nothing is baked in


def test_serve_beyond_loopback_needs_a_token(ckpt, monkeypatch, capsys):
    import uvicorn
    monkeypatch.delenv("CIFARLAB_TOKEN", raising=False)
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append((app, kw)))
    base = ["serve", "--no-runs", "--checkpoint", f"r20={ckpt}"]
    assert main(base + ["--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs an API token: pass --token or set CIFARLAB_TOKEN" in err and not served
    monkeypatch.setenv("CIFARLAB_TOKEN", "from-env")
    assert main(base + ["--host", "0.0.0.0"]) == 0
    assert served[-1][0].token == "from-env" and served[-1][1]["host"] == "0.0.0.0"
    assert "API token required" in capsys.readouterr().err
    monkeypatch.delenv("CIFARLAB_TOKEN")
    assert main(base) == 0 and served[-1][0].token is None  # loopback stays open
    assert "token" not in capsys.readouterr().err
    assert main(base + ["--max-inflight-mb", "5"]) == 1
    assert "--max-inflight-mb (5) must be at least --max-upload-mb (10)" in capsys.readouterr().err


def test_budget_is_first_come_first_served_and_a_timeout_leaves_the_line():
    async def scenario():
        budget, order = Budget(10), []

        async def take(name, n):
            await budget.acquire(n)
            order.append(name)

        await budget.acquire(8)
        big = asyncio.create_task(take("big", 6))
        await asyncio.sleep(0)
        small = asyncio.create_task(take("small", 2))  # would fit now, but waits behind "big"
        await asyncio.sleep(0.01)
        assert order == [] and budget.used == 8
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(budget.acquire(9), 0.01)
        budget.release(8)
        await asyncio.gather(big, small)
        return order, budget.used

    assert asyncio.run(scenario()) == (["big", "small"], 8)


def test_large_pictures_decode_through_the_budget_to_the_same_answer(ckpt):
    from cifarlab.engine import Predictor
    y, x = np.mgrid[0:1200, 0:1600]
    arr = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")  # 1.9 Mpx RGB: 23 MiB by the estimate, over the inline limit
    app = _app(ckpt)
    (r,) = asyncio.run(_send(app, _file("big.png", buf.getvalue())))
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    expected = Predictor(ckpt).predict([buf.getvalue()])[0]
    assert res["size"] == [1600, 1200] and res["label"] == expected.label
    np.testing.assert_allclose(list(res["probabilities"].values()), list(expected.probabilities.values()), atol=1e-5)
    assert app.state.service.budget.used == 0
