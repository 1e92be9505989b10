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


async def _send(app, *requests, client: str = "127.0.0.1"):
    """Post each (files, headers, content) to /api/predict at once from ``client``; the responses in order."""
    transport = httpx.ASGITransport(app=app, client=(client, 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as c:
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
    limits = ServeLimits(max_pixels=10**7, decode_budget_bytes=budget)
    assert read_header(rgb, "rgb.png", limits).cost == budget
    with pytest.raises(Refused) as refused:
        read_header(rgba, "rgba.png", limits)
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


@pytest.mark.slow
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

    async def both():  # from two addresses: one address may have 8 requests in flight
        return await asyncio.gather(_send(app, *good, client="10.0.0.1"),
                                    _send(app, *(hostile + hostile), client="10.0.0.2"))
    valid, refused = asyncio.run(both())
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
    from cifarlab.inference import Predictor
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


# ---------------------------------------------------------------- issue 32, hole 1: scan bombs
def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment of a well-formed JPEG; a scan's entropy data is in its segment."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            break
        j = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # entropy data: 0xFF is followed by 0x00 (stuffing) or RSTn inside it
            while data[(j := data.index(b"\xff", j)) + 1] == 0 or 0xD0 <= data[j + 1] <= 0xD7:
                j += 2
        out.append((marker, i, j))
        i = j
    return out


def _scan_bomb(size=(256, 256), extra=0) -> tuple[bytes, int]:
    """A flat progressive JPEG with ``extra`` copies of its last scan (42 bytes each); (bytes, scans).

    Each copy refines every 8x8 block of the luma again: tiny on disk, a pass over the picture
    for the decoder. Pillow's progressive JPEGs have 10 scans."""
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 130, 140)).save(buf, "JPEG", quality=90, progressive=True)
    data = buf.getvalue()
    scans = [(s, e) for m, s, e in _jpeg_segments(data) if m == 0xDA]
    assert len(scans) == 10
    s, e = scans[-1]
    return data[:e] + data[s:e] * extra + data[e:], 10 + extra


def test_a_progressive_jpeg_with_many_scans_is_refused_from_its_header(ckpt):
    bomb, scans = _scan_bomb((256, 256), 6000)  # ~250 kB: decoding it takes seconds
    assert len(bomb) < 256 * 1024
    app = _app(ckpt)
    asyncio.run(_send(app, _file("warm.png", _png())))  # the model loads on the first request: not timed

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
            bombed = asyncio.create_task(c.post("/api/predict", files={"file": ("scans.jpg", bomb, "image/jpeg")}))
            waits = []
            while not bombed.done():  # /health answers meanwhile
                start = time.perf_counter()
                assert (await c.get("/health")).status_code == 200
                waits.append(time.perf_counter() - start)
                await asyncio.sleep(0.01)
            return await bombed, waits

    start = time.perf_counter()
    r, waits = asyncio.run(scenario())
    took = time.perf_counter() - start
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (f"scans.jpg: a progressive JPEG with {scans} scans, over the limit of 100 "
                                  f"(a photo has about 10; each scan is another pass over the picture); "
                                  f"save it as a baseline JPEG or a PNG")
    start = time.perf_counter()
    Image.open(io.BytesIO(bomb)).load()
    decode_s = time.perf_counter() - start  # what accepting it would have cost
    assert took < decode_s / 4 and max(waits, default=0) < decode_s / 4


def test_scan_count_and_scan_work_limits_from_the_header():
    limits = ServeLimits()
    normal, ten = _scan_bomb((1200, 900))
    header = read_header(normal, "n.jpg", limits)
    assert ten == 10 and header.scans == 10 and header.work == 10 * 1200 * 900
    baseline = io.BytesIO()
    Image.new("RGB", (64, 48)).save(baseline, "JPEG")
    assert read_header(baseline.getvalue(), "b.jpg", limits).scans == 1
    png = read_header(_png((64, 48)), "p.png", limits)
    assert png.scans == 1 and png.work == 64 * 48
    # a JPEG hidden in an EXIF thumbnail (a marker inside a segment) is not counted as a scan
    exif = Image.Exif()
    exif[0x010E] = "\xff\xda" * 50
    withexif = io.BytesIO()
    Image.new("RGB", (64, 48)).save(withexif, "JPEG", exif=exif.tobytes())
    assert read_header(withexif.getvalue(), "e.jpg", limits).scans == 1
    # 30 scans is fine for a small picture, too much work for a large one
    small, n = _scan_bomb((256, 256), 20)
    assert read_header(small, "s.jpg", limits).scans == n == 30
    large, n = _scan_bomb((4000, 4000), 20)
    with pytest.raises(Refused) as refused:
        read_header(large, "big.jpg", limits)
    assert refused.value.status == 413
    assert refused.value.detail == ("big.jpg: a 4000x4000 JPEG in 30 scans is 480 Mpixel-passes of decoding, over "
                                    "the 400 limit; save it as a baseline JPEG, or smaller")


def _calls_where(service, monkeypatch) -> list[str]:
    """The thread each decode ran in, recorded by wrapping ``service.decode``."""
    import threading
    where, decode = [], service.decode
    monkeypatch.setattr(service, "decode", lambda *a, **k: where.append(threading.current_thread().name)
                        or decode(*a, **k))
    return where


def test_only_tiny_pictures_decode_on_the_event_loop(ckpt, monkeypatch):
    app = _app(ckpt)
    where = _calls_where(app.state.service, monkeypatch)
    scans, _ = _scan_bomb((256, 256), 80)  # under the limits, but 90 passes over 65 kpx
    tiny = io.BytesIO()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(tiny, "JPEG")
    a, b = asyncio.run(_send(app, _file("scans.jpg", scans), _file("tiny.jpg", tiny.getvalue())))
    assert a.status_code == b.status_code == 200
    assert where[0].startswith("decode") and where[1] == "MainThread"


@pytest.mark.slow
def test_a_decode_past_its_deadline_stops_and_gives_its_memory_back(ckpt):
    """A picture under the limits that decodes slowly: its 503 comes at the deadline, and the
    decode itself stops there instead of running on (and holding its memory) to the end."""
    bomb, scans = _scan_bomb((2000, 2000), 300)
    start = time.perf_counter()
    Image.open(io.BytesIO(bomb)).load()
    decode_s = time.perf_counter() - start
    app = _app(ckpt, work_timeout_s=0.2, max_jpeg_scans=10_000, max_scan_pixels=10**12)
    service = app.state.service
    asyncio.run(_send(app, _file("warm.png", _png())))  # the model loads on the first request: not timed

    async def scenario():
        start = time.perf_counter()
        (r,) = await _send(app, _file("slow.jpg", bomb))
        answered = time.perf_counter() - start
        while service.budget.used:
            await asyncio.sleep(0.01)
        return r, answered, time.perf_counter() - start

    r, answered, released = asyncio.run(scenario())
    assert r.status_code == 503 and "slow.jpg: decoding did not finish within 0.2 s" in r.json()["detail"]
    assert answered < decode_s / 2 and released < decode_s / 2, (answered, released, decode_s)


def test_a_decode_stops_between_reads_once_told_to(ckpt):
    """The guarded reader: a stop asked for while Pillow reads ends the decode with a 503 line."""
    import threading

    from cifarlab.web.decode import decode_upload
    bomb, _ = _scan_bomb((512, 512), 40)
    stop = threading.Event()
    size, array = decode_upload(bomb, "ok.jpg", ServeLimits().max_pixels, stop)
    assert size == (512, 512) and array.shape == (32, 32, 3)
    stop.set()
    with pytest.raises(Refused) as refused:
        decode_upload(bomb, "late.jpg", ServeLimits().max_pixels, stop)
    assert refused.value.status == 503 and refused.value.detail.startswith("late.jpg: decoding stopped")


def _one_slow_decoder(ckpt, monkeypatch, work_timeout_s: float, first_s: float):
    """An app with one decode thread, whose decodes of "first.png" take ``first_s`` longer;
    (app, the names of the pictures whose decode started)."""
    app = _app(ckpt, decode_threads=1, work_timeout_s=work_timeout_s)
    service = app.state.service
    names, decode = [], service.decode

    def slow(filename, *a, **k):
        names.append(filename)
        if filename == "first.png":
            time.sleep(first_s)
        return decode(filename, *a, **k)
    monkeypatch.setattr(service, "decode", slow)
    return app, names


_PHOTO = _png((1600, 1200))  # over the inline size: decodes in the pool


async def _settle(app, first):
    """The first request's answer, once its decode thread is done and a queued decode could have run."""
    (answer,) = await first
    while app.state.service.budget.used:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    return answer


def test_a_request_that_times_out_drops_its_queued_decode(ckpt, monkeypatch):
    app, names = _one_slow_decoder(ckpt, monkeypatch, work_timeout_s=1.0, first_s=2.0)

    async def scenario():
        first = asyncio.create_task(_send(app, _file("first.png", _PHOTO)))
        while not names:
            await asyncio.sleep(0.01)
        (queued,) = await _send(app, _file("queued.png", _PHOTO))
        return await _settle(app, first), queued

    running, queued = asyncio.run(scenario())
    assert running.status_code == queued.status_code == 503  # a running decode cannot be dropped
    assert queued.json()["detail"].startswith("queued.png: decoding did not finish within 1 s")
    assert names == ["first.png"] and app.state.service.budget.used == 0


def test_a_request_whose_client_leaves_drops_its_queued_decode(ckpt, monkeypatch):
    """The client disconnects 0.3 s after sending its picture, long before the deadline: the
    decode waiting behind a busy thread is dropped, not run for no one."""
    app, names = _one_slow_decoder(ckpt, monkeypatch, work_timeout_s=20, first_s=1.5)
    request = httpx.Request("POST", "http://t/api/predict", files={"file": ("gone.png", _PHOTO, "image/png")})
    body = request.read()
    sent, messages = [False], []

    async def receive():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(0.3)
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/predict", "raw_path": b"/api/predict",
             "query_string": b"", "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()],
             "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("10.0.0.9", 5000),
             "root_path": ""}

    async def scenario():
        first = asyncio.create_task(_send(app, _file("first.png", _PHOTO)))
        while not names:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(app(scope, receive, send), 10)
        return await _settle(app, first)

    ok = asyncio.run(scenario())
    assert ok.status_code == 200 and messages == []  # nothing sent to a client that is gone
    assert names == ["first.png"] and app.state.service.budget.used == 0
