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

Goal on the 2-core CPU machine with the default model: >= 100 requests/s at 16 clients,
p99 <= 250 ms, zero errors. The clients share the machine with the server, so the number
is a floor for a server with the machine to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from PIL import Image


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


def multipart_request(host: str, port: int, model: str, picture_bytes: bytes) -> bytes:
    """The whole POST /api/predict request, built once: the clients resend these bytes."""
    boundary = "cifarlabbenchboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="bench.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + picture_bytes + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def exchange(reader, writer, request: bytes) -> tuple[int, bytes]:
    """Send one request on a kept-alive connection; (status, body) of the answer."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.lower() == "content-length")
    return status, await reader.readexactly(length)


async def one_client(host: str, port: int, request: bytes, stop_at: float, record_from: float, out: dict) -> None:
    """A client on its own connection, as light as wrk: raw HTTP/1.1 keep-alive, no HTTP library."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (start := time.perf_counter()) < stop_at:
            try:
                status, body = await exchange(reader, writer, request)
                ok = status == 200
                batch = json.loads(body).get("batch_size") if ok else None
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                ok, batch = False, None
                out["messages"].append(type(exc).__name__)
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            end = time.perf_counter()
            out["all"] += 1
            if start >= record_from:
                out["latency"].append(end - start)
                out["errors"] += 0 if ok else 1
                if batch:
                    out["batches"].append(batch)
    finally:
        writer.close()


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
            now = time.perf_counter()
            record_from, stop_at = now + args.warmup, now + args.warmup + args.duration
            out = {"latency": [], "errors": 0, "batches": [], "messages": []}
            cpu0 = (cpu_seconds(proc.pid) if proc else None, time.process_time())
            out["all"] = 0
            await asyncio.gather(*(one_client(where.hostname, where.port, request, stop_at, record_from, out)
                                   for _ in range(args.clients)))
            server_cpu = cpu_seconds(proc.pid) if proc else None
            out["server_cpu"] = None if server_cpu is None or cpu0[0] is None else server_cpu - cpu0[0]
            out["client_cpu"] = time.process_time() - cpu0[1]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    report(args, url, entry, len(body), out)


def report(args, url: str, entry: dict, nbytes: int, out: dict) -> None:
    import torch
    lat = sorted(out["latency"])
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000  # noqa: E731
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {platform.python_version()} | torch {torch.__version__} | CPU {cpu_name()} | "
          f"{os.cpu_count()} cores | load avg {load1:.2f} at end | commit {commit()}")
    acc = "not measured" if entry["accuracy"] is None else f"{entry['accuracy']:.2%}"
    print(f"server {url} ({'external' if args.url else 'started here'}) | model {entry['name']} "
          f"({entry['model']}, {entry['parameters']} params, test acc {acc}) | picture {args.size[0]}x{args.size[1]} "
          f"JPEG {nbytes} B | max_wait {args.max_wait_ms} ms")
    print(f"{args.clients} clients, {args.duration:.0f} s measured after {args.warmup:.0f} s warm-up")
    if not lat:
        print("no requests completed")
        return
    rate = len(lat) / args.duration
    mean_batch = statistics.mean(out["batches"]) if out["batches"] else float("nan")
    print(f"requests {len(lat)} | {rate:.1f} requests/s | latency p50 {q(0.50):.1f} ms  p90 {q(0.90):.1f} ms  "
          f"p99 {q(0.99):.1f} ms  max {lat[-1] * 1000:.1f} ms | mean server batch {mean_batch:.1f} | "
          f"errors {out['errors']}" + (f" ({', '.join(sorted(set(out['messages'])))})" if out["messages"] else ""))
    per = lambda sec: "n/a" if sec is None else f"{1000 * sec / max(out['all'], 1):.2f} ms"  # noqa: E731
    print(f"CPU per request (warm-up included): server {per(out['server_cpu'])}, clients {per(out['client_cpu'])}")
    goal = rate >= 100 and q(0.99) <= 250 and out["errors"] == 0
    print(f"goal (>= 100 requests/s, p99 <= 250 ms, 0 errors): {'met' if goal else 'NOT met'}")


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
    args = p.parse_args()
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("--url must be a loopback address (127.0.0.1, localhost, ::1)")
    if args.checkpoint and not args.url:
        args.model = args.model or "bench"
    asyncio.run(load(args))


if __name__ == "__main__":
    main()
