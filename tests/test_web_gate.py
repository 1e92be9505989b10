"""The door of the web service (``cifarlab.web.gate``) under the attacks of issue 32:
bodies sent to the open paths, one client taking every place, refusals that must reach
their client, and ``serve`` addresses that cannot be listened on.

Each scenario runs against the ASGI app in-process, except the one about connection
resets, which needs a real socket (a uvicorn server on a free loopback port).
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time

import pytest
from PIL import Image

from conftest import need_module  # noqa: E402

need_module("fastapi", "web extra not installed: pip install 'cifarlab[web]'")
import httpx  # noqa: E402
import uvicorn  # noqa: E402

from cifarlab.catalog import Catalog  # noqa: E402
from cifarlab.cli import main  # noqa: E402
from cifarlab.web import ServeLimits, create_app  # noqa: E402

from _checkpoints import write_checkpoint  # noqa: E402

TOKEN = "gate-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "r20.pt", top1=0.5)


def _app(ckpt, token=TOKEN, **limits):
    return create_app(Catalog({"r20": str(ckpt)}, runs=False, shipped=False), ServeLimits(**limits), token=token)


def _png(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (20, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


def _scope(method: str, path: str, headers: dict, client: str = "10.0.0.66") -> dict:
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "http_version": "1.1",
            "scheme": "http", "server": ("t", 80), "client": (client, 40000), "root_path": ""}


async def _hanging(app, method: str, path: str, headers: dict, client: str = "10.0.0.66") -> list[dict]:
    """A request that sends one byte of its declared body and then nothing; the messages it got."""
    sent, got = [False], []

    async def receive():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": b"x", "more_body": True}
        await asyncio.sleep(3600)

    async def send(message):
        got.append(message)
    task = asyncio.create_task(app(_scope(method, path, headers, client), receive, send))
    await asyncio.sleep(0)
    return task, got


async def _upload(app, client: str = "10.0.0.1", headers=AUTH):
    transport = httpx.ASGITransport(app=app, client=(client, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as c:
        return await c.post("/api/predict", files={"file": ("a.png", _png(), "image/png")}, headers=headers)


def test_open_paths_refuse_bodies_and_reserve_nothing(ckpt):
    """16 sockets POST to /health declaring 10 MB and send 1 byte: authorised uploads go on."""
    app = _app(ckpt)

    async def scenario():
        hanging = [await _hanging(app, "POST", path, {"content-length": "10485000"})
                   for path in ["/health", "/docs", "/", "/static/app.js"] * 4]
        await asyncio.sleep(0.2)
        reserved = app.inflight, app.inflight_bytes
        upload = await asyncio.wait_for(_upload(app), 20)
        for task, _ in hanging:
            task.cancel()
        return reserved, upload, [got for _, got in hanging]

    reserved, upload, answers = asyncio.run(scenario())
    assert reserved == (0, 0)
    assert upload.status_code == 200, upload.text
    for got in answers:  # each answered at once, without waiting for its body
        assert got and got[0]["type"] == "http.response.start" and got[0]["status"] == 413
        assert b"takes no request body" in got[1]["body"]


def test_open_paths_without_a_body_answer_as_usual(ckpt):
    app = _app(ckpt)

    async def calls():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/health"), await c.get("/health"), await c.delete("/health")

    post, get, delete = asyncio.run(calls())
    assert post.status_code == 405 and delete.status_code == 405 and get.status_code == 200


def test_one_client_cannot_take_every_place(ckpt):
    """One address holds at most max_client_inflight requests and max_client_inflight_bytes of
    declared uploads (defaults: 8 and 32 MiB); others are served meanwhile."""
    app = _app(ckpt, token=None)
    limits = ServeLimits()
    assert (limits.max_client_inflight, limits.max_client_inflight_bytes) == (8, 32 * 2**20)
    big = 10 * 2**20 - 1000  # three fit in 32 MiB, a fourth does not

    async def scenario():
        def headers(n):
            return {"content-length": str(n), "content-type": "multipart/form-data; boundary=b"}
        hanging = [await _hanging(app, "POST", "/api/predict", headers(big), "10.0.0.66") for _ in range(4)]
        hanging += [await _hanging(app, "POST", "/api/predict", headers(1000), "10.0.0.66") for _ in range(8)]
        await asyncio.sleep(0.2)
        held = app.inflight, app.inflight_bytes
        same, other = await asyncio.wait_for(asyncio.gather(_upload(app, "10.0.0.66", {}),
                                                            _upload(app, "10.0.0.1", {})), 20)
        for task, _ in hanging:
            task.cancel()
        return held, same, other, [got[0]["status"] if got else None for _, got in hanging]

    held, same, other, answers = asyncio.run(scenario())
    assert held == (8, 3 * big + 5 * 1000)
    assert answers == [None] * 3 + [429] + [None] * 5 + [429] * 3  # None: admitted, waiting for its body
    assert other.status_code == 200, other.text
    assert same.status_code == 429 and same.headers["retry-after"] == "1"
    assert same.json()["detail"] == ("too many uploads from your address at once: 8 requests (30 MiB) in flight, "
                                     "at most 8 (32 MiB); wait for their answers")


@pytest.fixture()
def live(ckpt, monkeypatch):
    """A uvicorn server on a free loopback port with one place, held by a slow decode: (host, port)."""
    app = _app(ckpt, token=None, max_inflight=1)
    service = app.state.service
    decode = service.decode
    monkeypatch.setattr(service, "decode", lambda *a, **k: time.sleep(3) or decode(*a, **k))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield "127.0.0.1", port
    srv.should_exit = True
    thread.join(10)


def _raw_request(host: str, port: int) -> bytes:
    """A POST of a 300 kB picture of noise (more than a socket buffer holds; decoded in the pool)."""
    import numpy as np
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    photo = buf.getvalue()
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + photo + b"\r\n--b--\r\n")
    return (f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; boundary=b"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _status(host: str, port: int, request: bytes) -> int | str:
    """Send the head, then the body in pieces (as HTTP libraries do), then read the status."""
    head, body = request.split(b"\r\n\r\n", 1)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(head + b"\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        for i in range(0, len(body), 16384):
            writer.write(body[i:i + 16384])
            await writer.drain()
        line = await reader.readline()
        writer.close()
        return int(line.split()[1]) if line else "closed without an answer"
    except OSError as exc:
        return type(exc).__name__


def test_a_refused_request_gets_its_429_not_a_reset(live):
    host, port = live
    request = _raw_request(host, port)

    async def scenario():
        first = asyncio.create_task(_status(host, port, request))  # takes the one place for 3 s
        await asyncio.sleep(0.5)
        others = await asyncio.gather(*(_status(host, port, request) for _ in range(60)))
        return await first, others

    first, others = asyncio.run(scenario())
    assert first == 200
    assert len(request) > 300_000 and others == [429] * 60


def test_serve_refuses_ports_it_cannot_listen_on_in_one_line(ckpt, monkeypatch, capsys):
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    base = ["serve", "--no-runs", "--checkpoint", f"r20={ckpt}"]
    for port, words in [("99999", "--port 99999 must be between 0 and 65535"),
                        ("-1", "--port -1 must be between 0 and 65535")]:
        assert main(base + ["--port", port]) == 1
        err = capsys.readouterr().err
        assert err.strip() == f"cifarlab: error: {words}"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(base + ["--port", str(port)]) == 1
        err = capsys.readouterr().err
    assert err.count("\n") == 1 and "page at" not in err
    assert err.startswith(f"cifarlab: error: cannot listen on 127.0.0.1:{port}: ") and "in use" in err
    assert not served
    assert main(base + ["--port", str(port)]) == 0 and served[-1]["port"] == port  # free again


def test_serve_leaves_one_core_to_the_event_loop_unless_told(ckpt, monkeypatch):
    """The model's forward passes get torch's thread count less one (at least 1); --threads N sets N."""
    import torch
    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.append(torch.get_num_threads()))
    base = ["serve", "--no-runs", "--checkpoint", f"r20={ckpt}", "--port", "0"]
    before = torch.get_num_threads()
    try:
        for start, extra, expected in [(4, [], 3), (1, [], 1), (4, ["--threads", "2"], 2)]:
            torch.set_num_threads(start)
            assert main(base + extra) == 0
            assert seen[-1] == expected, (start, extra, seen)
        for bad in ("0", "-1"):  # refused in one line before anything starts
            assert main(base + ["--threads", bad]) == 1
        assert len(seen) == 3
    finally:
        torch.set_num_threads(before)


def test_serve_on_a_privileged_port_without_the_right_says_so_in_one_line(ckpt, monkeypatch, capsys, tmp_path):
    """``serve --port 80`` as an ordinary user: one line, before the URL is printed."""
    import os
    import shutil
    import subprocess
    import sys
    base = ["serve", "--no-runs", "--checkpoint", f"r20={ckpt}", "--port", "80"]
    expected = ("cifarlab: error: cannot listen on 127.0.0.1:80: Permission denied; ports below 1024 need "
                "administrator rights: pick another --port, e.g. 8000")
    if os.geteuid() != 0:
        monkeypatch.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("served on port 80"))
        assert main(base) == 1
        assert capsys.readouterr().err.strip() == expected
        return
    # as root, run it as the user nobody (setpriv is in util-linux)
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root without setpriv: cannot drop the privilege to bind port 80"
    readable = tmp_path / "r20.pt"
    readable.write_bytes(ckpt.read_bytes())
    readable.chmod(0o644)
    tmp_path.chmod(0o755)
    base[3] = f"r20={readable}"
    env = dict(os.environ, CIFARLAB_HOME=str(tmp_path / "home"))
    done = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                           "cifarlab", *base], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1 and done.stderr.strip() == expected, done.stderr
