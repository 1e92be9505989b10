"""Load test of `cifarlab serve`: N concurrent clients for a fixed time, on loopback.

Starts the server itself (a subprocess, `cifarlab serve --no-runs` with the shipped model
or --checkpoint) or uses a running one (--url, loopback only). Each client posts the same
small picture to /api/predict in a loop, on its own kept-alive connection with raw
HTTP/1.1 (an HTTP library would spend as much CPU as the server); after a warm-up, every request's latency is
recorded. Prints the environment, requests/s, p50/p90/p99 latency, the mean batch size the
server formed, and the error count.

    python benchmarks/serve_load.py --clients 16 --duration 20
    python benchmarks/serve_load.py --checkpoint runs/resnet20-x/best.pt
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --model default
    python benchmarks/serve_load.py --hostile --duration 20

Goal on the 2-core CPU machine with the default model: >= 100 requests/s at 16 clients,
p99 <= 250 ms, zero errors. The clients share the machine with the server, so the number
is a floor for a server with the machine to itself.

``--hostile`` adds one attacker per kind beside the 16 clients, each on fresh connections,
for the same time and at most ``--hostile-max`` requests each: decompression bombs (a PNG
header declaring 400 Mpx; a 20 Mpx RGBA PNG of zeros in 60 kB, under the limits, which the
server must decode within its memory budget; 16 pictures of 12 Mpx in one request),
progressive JPEGs (a 250 kB scan bomb: 256x256 in 6,010 scans; a 12 Mpx photo in 30 scans,
under the limits, which decodes for a second or more), truncated JPEGs, an oversize body
(12 MiB declared), a slow sender (one byte every 0.5 s), text posted as a picture, and
declared lengths that are never sent (16 sockets posting to /health with Content-Length
10485000 and 1 byte, as the probe of issue 32 did; 16 more doing the same to /api/predict
from one address). Meanwhile a prober in a process of its own asks /health every 50 ms; a
second one inside the load generator's busy event loop is reported beside it (its figure
adds that loop's own lag). It reports what each got back, and the goals: zero errors on the
valid requests, /health p99 <= 100 ms (the prober of its own), and the
server's peak RSS (VmHWM of the server process, when it is started here) <= 1.5 GiB.

Each valid client and each kind of attacker connects from its own loopback address
(127.0.0.10 on, 127.0.1.x; Linux routes all of 127/8 to the loopback), as separate
machines would: the server caps what one address may have in flight. Where the system
refuses those addresses, everyone connects from 127.0.0.1.

Each run appends a row to ``results/serve_load.csv`` (``--no-results``: print only; use it
for smoke runs and on a busy machine).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from _env import add_results_args, record


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def picture(size: tuple[int, int]) -> bytes:
    """A JPEG of smooth colour (like a photo, unlike noise, which JPEG cannot shrink)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(w + h - 2, 1)], -1)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss(pid: int) -> int | None:
    """Peak resident bytes of a process so far (VmHWM, Linux /proc); None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "cifarlab", "serve", "--no-runs", "--port", str(port),
           "--max-wait-ms", str(args.max_wait_ms)]
    if args.checkpoint:
        cmd += ["--checkpoint", f"{args.model}={args.checkpoint}"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.max_inflight:
        cmd += ["--max-inflight", str(args.max_inflight)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}"


async def wait_ready(client, url: str, proc: subprocess.Popen | None, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()}")
        try:
            r = await client.get(url + "/api/models")
            if r.status_code == 200:
                return r.json()
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"server at {url} not ready after {timeout:.0f}s")


def multipart_request(host: str, port: int, model: str, picture_bytes: bytes | list[bytes],
                      length: int | None = None) -> bytes:
    """The whole POST /api/predict request, built once: the clients resend these bytes.

    Several pictures go as several 'file' fields; ``length`` overrides Content-Length."""
    boundary = "cifarlabbenchboundary"
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'.encode()
    for i, data in enumerate(picture_bytes if isinstance(picture_bytes, list) else [picture_bytes]):
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="bench{i}.jpg"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    head = (f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {length or len(body)}\r\n\r\n").encode()
    return head + body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """(status, header fields with lower-case names) of an HTTP/1.1 answer's head."""
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), fields


async def exchange(reader, writer, request: bytes, closing: list | None = None) -> tuple[int, bytes]:
    """Send one request on a kept-alive connection; (status, body) of the answer. ``closing``
    (a list) gets True appended when the server said it closes the connection after it."""
    writer.write(request)
    status, fields = parse_head(await reader.readuntil(b"\r\n\r\n"))
    if closing is not None and fields.get("connection", "").lower() == "close":
        closing.append(True)
    return status, await reader.readexactly(int(fields["content-length"]))


_OWN_ADDRESSES = [True]  # False once the system refused a loopback address other than 127.0.0.1


async def connect(host: str, port: int, source: str | None = None):
    """A connection from the loopback address ``source`` (127.0.0.1 where that cannot be had)."""
    if source and _OWN_ADDRESSES[0] and host in ("127.0.0.1", "localhost"):
        try:
            return await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            _OWN_ADDRESSES[0] = False
    return await asyncio.open_connection(host, port)


async def one_client(host: str, port: int, request: bytes, stop_at: float, record_from: float, out: dict,
                     source: str | None = None) -> None:
    """A client on its own connection, as light as wrk: raw HTTP/1.1 keep-alive, no HTTP library."""
    reader, writer = await connect(host, port, source)
    try:
        while (start := time.perf_counter()) < stop_at:
            closing: list = []
            try:
                status, body = await exchange(reader, writer, request, closing)
                ok = status == 200
                batch = json.loads(body).get("batch_size") if ok else None
                if not ok:
                    out["messages"].append(f"HTTP {status}")
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                ok, batch = False, None
                out["messages"].append(type(exc).__name__)
                closing.append(True)
            if closing:  # as a browser does: a connection the server closes is not used again
                writer.close()
                reader, writer = await connect(host, port, source)
            end = time.perf_counter()
            out["all"] += 1
            if start >= record_from:
                out["latency"].append(end - start)
                out["errors"] += 0 if ok else 1
                if batch:
                    out["batches"].append(batch)
    finally:
        writer.close()


# ---------------------------------------------------------------- hostile clients
# what each kind of attack should get back (one status, or those allowed), and how many
# attackers of that kind run at once
EXPECTED = {"bomb: 400 Mpx header": (413, 1), "bomb: 20 Mpx RGBA in 60 kB": (200, 2),
            "16 x 12 Mpx in one request": (413, 1), "truncated JPEG": (415, 1), "oversize body": (413, 1),
            "slow sender": (408, 1), "not an image": (415, 1),
            "progressive JPEG, 6,010 scans": (413, 1), "progressive 12 Mpx, 30 scans": (200, 1),
            "10 MB declared to /health": (413, 16),
            # three fit one address's 32 MiB and wait for their bodies (408); the others get 429
            "10 MB declared to /api, one address": ((408, 429), 16)}
_BY_LENGTH = ("10 MB declared to /health", "10 MB declared to /api, one address")  # send 1 byte, then wait


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def png_of_zeros(width: int, height: int, channels: int, rows: int | None = None) -> bytes:
    """A PNG of black (transparent) pixels: a few kB that inflate to width x height.

    ``rows`` writes only that many rows: the header still declares all of them."""
    colour = {1: 0, 4: 6}[channels]
    line = b"\0" * (width * channels + 1)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(line * min(256, height - y)) for y in range(0, rows or height, 256)) + z.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, colour, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _jpeg_scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan (SOS segment and its entropy-coded data) of a well-formed JPEG."""
    out, i = [], 2
    while i < len(data) and data[i + 1] != 0xD9:
        j = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if data[i + 1] == 0xDA:
            while data[(j := data.index(b"\xff", j)) + 1] == 0 or 0xD0 <= data[j + 1] <= 0xD7:
                j += 2
            out.append((i, j))
        i = j
    return out


def progressive(size: tuple[int, int], extra: int, flat: bool = True) -> bytes:
    """A progressive JPEG (10 scans) with ``extra`` copies of its last scan: each copy is a
    few dozen bytes and another pass over every 8x8 block of the picture."""
    buf = io.BytesIO()
    img = Image.new("RGB", size, (120, 130, 140)) if flat else Image.open(io.BytesIO(picture(size)))
    img.save(buf, "JPEG", quality=90, progressive=True)
    data = buf.getvalue()
    s, e = _jpeg_scans(data)[-1]
    return data[:e] + data[s:e] * extra + data[e:]


def declared(host: str, port: int, path: str, length: int = 10_485_000) -> bytes:
    """A POST head declaring ``length`` bytes of body, and the first byte of it."""
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary=b\r\nContent-Length: {length}\r\n\r\n-").encode()


def hostile_requests(host: str, port: int, model: str, valid: bytes) -> dict[str, bytes]:
    """The raw bytes each attacker sends (the slow sender trickles a valid request)."""
    photo = picture((640, 480))
    make = lambda pictures: multipart_request(host, port, model, pictures)  # noqa: E731
    oversize = multipart_request(host, port, model, b"", length=12 * 2**20)
    return {"progressive JPEG, 6,010 scans": make(progressive((256, 256), 6000)),
            "progressive 12 Mpx, 30 scans": make(progressive((4000, 3000), 20, flat=False)),
            "10 MB declared to /health": declared(host, port, "/health"),
            "10 MB declared to /api, one address": declared(host, port, "/api/predict"),
            "bomb: 400 Mpx header": make(png_of_zeros(20_000, 20_000, 1, rows=256)),
            "bomb: 20 Mpx RGBA in 60 kB": make(png_of_zeros(5000, 4000, 4)),
            "16 x 12 Mpx in one request": make([png_of_zeros(4000, 3000, 1)] * 16),
            "truncated JPEG": make(photo[:len(photo) // 2]),
            "oversize body": oversize[:oversize.index(b"\r\n\r\n") + 4],  # the head; the body never comes
            "slow sender": valid,
            "not an image": make(b"plain text, not a picture\n" * 40)}


async def read_status(reader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.lower() == "content-length"), 0)
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def trickle(writer, request: bytes) -> None:
    """A slow sender: the head, then one byte every half second."""
    writer.write(request[:request.index(b"\r\n\r\n") + 4])
    for i in range(request.index(b"\r\n\r\n") + 4, len(request)):
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.write(request[i:i + 1])


async def attack_once(kind: str, host: str, port: int, request: bytes, source: str | None = None) -> int:
    reader, writer = await connect(host, port, source)
    sender = asyncio.create_task(trickle(writer, request)) if kind == "slow sender" else None
    try:
        if sender is None:
            writer.write(request)
        return await read_status(reader)
    finally:
        if sender is not None:
            sender.cancel()
        writer.close()


async def attacker(kind: str, host: str, port: int, request: bytes, stop_at: float, limit: int, out: dict,
                   source: str | None = None) -> None:
    """One kind of attack, one request at a time on a fresh connection, until stop_at or ``limit`` sent."""
    for _ in range(limit):
        start = time.perf_counter()
        if start >= stop_at:
            return
        try:  # an answer still pending at the end is cut off, not waited for
            status = await asyncio.wait_for(attack_once(kind, host, port, request, source), stop_at - start + 5)
        except TimeoutError:
            status = "cut off at the end"
        except (OSError, asyncio.IncompleteReadError) as exc:
            status = type(exc).__name__
        out[kind]["status"][status] += 1
        out[kind]["latency"].append(time.perf_counter() - start)


async def health_prober(host: str, port: int, stop_at: float, record_from: float, out: list) -> None:
    """GET /health every 50 ms on a kept-alive connection; each answer's latency after the warm-up."""
    request = f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    reader, writer = await connect(host, port, "127.0.0.9")
    try:
        while (start := time.perf_counter()) < stop_at:
            try:
                status, _ = await asyncio.wait_for(exchange(reader, writer, request), 30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                status = None
                writer.close()
                reader, writer = await connect(host, port, "127.0.0.9")
            if start >= record_from:
                out.append(time.perf_counter() - start if status == 200 else float("inf"))
            await asyncio.sleep(max(0.0, 0.05 - (time.perf_counter() - start)))
    finally:
        writer.close()


def health_process(host: str, port: int, record_from: float, stop_at: float, conn) -> None:
    """The goal's /health prober, in a process of its own: GET /health every 50 ms on a kept-alive
    blocking socket from 127.0.0.8, each answer's latency (``time.monotonic``, as ``record_from``
    and ``stop_at``) after the warm-up, sent back through ``conn``. The prober inside the load
    generator's event loop also waits for that loop, which its 16 clients and the attackers keep
    busy: its figure is the server's latency plus the generator's own lag."""
    request = f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()

    def dial() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(30)
        if host in ("127.0.0.1", "localhost"):
            try:
                s.bind(("127.0.0.8", 0))
            except OSError:
                pass
        s.connect((host, port))
        return s

    def answer(s: socket.socket) -> int:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionResetError("closed")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status, fields = parse_head(head)
        need = int(fields.get("content-length", 0)) - len(body)
        while need > 0:
            chunk = s.recv(need)
            if not chunk:
                raise ConnectionResetError("closed")
            need -= len(chunk)
        return status

    out: list[float] = []
    s = dial()
    try:
        while (start := time.monotonic()) < stop_at:
            try:
                s.sendall(request)
                status = answer(s)
            except (OSError, ValueError, IndexError):
                status = None
                s.close()
                s = dial()
            if start >= record_from:
                out.append(time.monotonic() - start if status == 200 else float("inf"))
            time.sleep(max(0.0, 0.05 - (time.monotonic() - start)))
    finally:
        s.close()
        conn.send(out)
        conn.close()


async def load(args) -> None:
    import httpx
    proc, url = (None, args.url) if args.url else start_server(args)
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    try:
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            listing = await wait_ready(client, url, proc)
            model = args.model or listing["default"]
            entry = next((m for m in listing["models"] if m["name"] == model), None)
            if entry is None:
                raise SystemExit(f"model {model!r} not served; it lists {[m['name'] for m in listing['models']]}")
            body = picture(args.size)
            where = urlparse(url)
            request = multipart_request(where.hostname, where.port, model, body)
            out = {"latency": [], "errors": 0, "batches": [], "messages": [], "hostile": {}, "health": [],
                   "health_loop": []}
            attacks = hostile_requests(where.hostname, where.port, model, request) if args.hostile else {}
            out["rss_ready"] = peak_rss(proc.pid) if proc else None
            now = time.perf_counter()  # the attacks took a moment to build
            record_from, stop_at = now + args.warmup, now + args.warmup + args.duration
            cpu0 = (cpu_seconds(proc.pid) if proc else None, time.process_time())
            out["all"] = 0
            clients = [one_client(where.hostname, where.port, request, stop_at, record_from, out,
                                  f"127.0.0.{10 + i % 240}") for i in range(args.clients)]
            clients.append(health_prober(where.hostname, where.port, stop_at, record_from, out["health_loop"]))
            mono = time.monotonic() - time.perf_counter()
            receive, send = mp.Pipe(duplex=False)
            prober = mp.get_context("spawn").Process(target=health_process, daemon=True, args=(
                where.hostname, where.port, record_from + mono, stop_at + mono, send))
            prober.start()
            for k, (kind, raw) in enumerate(attacks.items()):
                out["hostile"][kind] = {"status": Counter(), "latency": []}
                clients += [attacker(kind, where.hostname, where.port, raw, stop_at, args.hostile_max, out["hostile"],
                                     f"127.0.1.{k + 1}" if kind.endswith("one address") else f"127.0.{k + 2}.{a + 1}")
                            for a in range(EXPECTED[kind][1])]
            await asyncio.gather(*clients)
            out["health"] = receive.recv() if receive.poll(35) else [float("inf")]
            prober.join(5)
            out["rss_peak"] = peak_rss(proc.pid) if proc else None
            server_cpu = cpu_seconds(proc.pid) if proc else None
            out["server_cpu"] = None if server_cpu is None or cpu0[0] is None else server_cpu - cpu0[0]
            out["client_cpu"] = time.process_time() - cpu0[1]
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # still draining requests: the numbers are in already
                proc.kill()
                proc.wait()
    report(args, url, entry, len(body), out)


def server_stack() -> str:
    """uvicorn's HTTP parser and event loop as it picks them here (C ones when importable)."""
    from importlib.util import find_spec
    http = "httptools" if find_spec("httptools") else "h11"
    return f"{http}+{'uvloop' if find_spec('uvloop') else 'asyncio'}"


def report(args, url: str, entry: dict, nbytes: int, out: dict) -> None:
    import torch
    lat = sorted(out["latency"])
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000  # noqa: E731
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {platform.python_version()} | torch {torch.__version__} | CPU {cpu_name()} | "
          f"{os.cpu_count()} cores | load avg {load1:.2f} at end | commit {commit()}")
    acc = "not measured" if entry["accuracy"] is None else f"{entry['accuracy']:.2%}"
    print(f"server {url} ({'external' if args.url else 'started here'}, {server_stack()}) | model {entry['name']} "
          f"({entry['model']}, {entry['parameters']} params, test acc {acc}) | picture {args.size[0]}x{args.size[1]} "
          f"JPEG {nbytes} B | max_wait {args.max_wait_ms} ms | {'HOSTILE mix' if args.hostile else 'valid requests only'}")
    print(f"{args.clients} clients, {args.duration:.0f} s measured after {args.warmup:.0f} s warm-up")
    if not lat:
        print("no requests completed")
        return
    rate = len(lat) / args.duration
    mean_batch = statistics.mean(out["batches"]) if out["batches"] else float("nan")
    print(f"requests {len(lat)} | {rate:.1f} requests/s | latency p50 {q(0.50):.1f} ms  p90 {q(0.90):.1f} ms  "
          f"p99 {q(0.99):.1f} ms  max {lat[-1] * 1000:.1f} ms | mean server batch {mean_batch:.1f} | "
          f"errors {out['errors']}" + (f" ({', '.join(f'{k}: {n}' for k, n in Counter(out['messages']).most_common())}; warm-up "
                                     f"included)" if out["messages"] else ""))
    per = lambda sec: "n/a" if sec is None else f"{1000 * sec / max(out['all'], 1):.2f} ms"  # noqa: E731
    extra = ", the hostile requests' work included" if args.hostile else ""
    print(f"CPU per valid request (warm-up{extra}): server {per(out['server_cpu'])}, "
          f"clients {per(out['client_cpu'])}")
    gib = lambda b: "n/a" if b is None else f"{b / 2**30:.2f} GiB"  # noqa: E731
    print(f"server RSS: {gib(out['rss_ready'])} when ready, peak {gib(out['rss_peak'])} (VmHWM)")
    health = sorted(out["health"])
    hq = lambda p: health[min(len(health) - 1, int(p * len(health)))] * 1000 if health else float("nan")  # noqa: E731
    print(f"/health every 50 ms, from a process of its own: {len(health)} answers, p50 {hq(0.5):.1f} ms  "
          f"p99 {hq(0.99):.1f} ms  max {hq(1.0):.1f} ms"
          + (" (some failed: counted as infinite)" if health and health[-1] == float("inf") else ""))
    loop = sorted(out["health_loop"])
    lq = lambda p: loop[min(len(loop) - 1, int(p * len(loop)))] * 1000 if loop else float("nan")  # noqa: E731
    print(f"/health every 50 ms, inside the load generator's event loop (its own lag included): {len(loop)} "
          f"answers, p50 {lq(0.5):.1f} ms  p99 {lq(0.99):.1f} ms  max {lq(1.0):.1f} ms")
    row = {"mode": "hostile" if args.hostile else "valid", "model": entry["name"],
           "picture": f"{args.size[0]}x{args.size[1]}", "clients": args.clients, "duration_s": args.duration,
           "requests": len(lat), "requests_per_s": round(rate, 1), "p50_ms": round(q(0.5), 1),
           "p90_ms": round(q(0.9), 1), "p99_ms": round(q(0.99), 1), "errors": out["errors"],
           "mean_batch": round(mean_batch, 2), "health_p99_ms": round(hq(0.99), 1),
           "health_loop_p99_ms": round(lq(0.99), 1),
           "rss_peak_gib": None if out["rss_peak"] is None else round(out["rss_peak"] / 2**30, 3),
           "load_avg_end": round(load1, 2), "server_stack": server_stack()}
    if args.hostile:
        report_hostile(out)
        rss_ok = out["rss_peak"] is not None and out["rss_peak"] <= 1.5 * 2**30
        goal = out["errors"] == 0 and rss_ok and hq(0.99) <= 100
        print(f"goal (valid requests: 0 errors; /health p99 <= 100 ms; server peak RSS <= 1.5 GiB): "
              f"{'met' if goal else 'NOT met'}")
    else:
        goal = rate >= 100 and q(0.99) <= 250 and out["errors"] == 0
        print(f"goal (>= 100 requests/s, p99 <= 250 ms, 0 errors): {'met' if goal else 'NOT met'}")
    row["goal_met"] = goal
    written = record("serve_load", row, args=args)
    if written:
        print(f"row appended to {written}")


def report_hostile(out: dict) -> None:
    print("hostile requests (alongside; warm-up included):")
    for kind, seen in out["hostile"].items():
        expected, attackers = EXPECTED[kind]
        answers = ", ".join(f"{status}: {n}" for status, n in seen["status"].most_common())
        median = statistics.median(seen["latency"]) * 1000 if seen["latency"] else float("nan")
        allowed = "/".join(map(str, expected)) if isinstance(expected, tuple) else expected
        print(f"  {kind:36} x{attackers:<2}  sent {sum(seen['status'].values()):4}  answers {answers or 'none'}  "
              f"(expected {allowed})  median {median:.0f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server (loopback only); default: start one here")
    p.add_argument("--checkpoint", help="serve this checkpoint instead of the shipped default model")
    p.add_argument("--model", default=None, help="model name to request (default: the server's default, "
                                                 "or 'bench' for --checkpoint)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(160, 120),
                   help="test picture WxH (default 160x120)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="server batching wait (when started here)")
    p.add_argument("--threads", type=int, default=None, help="server torch threads (when started here)")
    p.add_argument("--max-inflight", type=int, default=None, help="server's --max-inflight (when started here)")
    p.add_argument("--hostile", action="store_true", help="add bombs, scan bombs, truncated files, oversize and "
                                                          "never-sent bodies, slow senders and non-images")
    p.add_argument("--hostile-max", type=int, default=500, help="most requests each attacker sends")
    add_results_args(p)
    args = p.parse_args()
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("--url must be a loopback address (127.0.0.1, localhost, ::1)")
    if args.checkpoint and not args.url:
        args.model = args.model or "bench"
    asyncio.run(load(args))


if __name__ == "__main__":
    main()
