"""The FastAPI service: ``/api/models``, ``/api/predict``, ``/health``, and the page at ``/``.

Clients name models; the ``Catalog`` maps names to checkpoints, so no path from a client
is ever opened. Each model is loaded once and served by a ``MicroBatcher``. Pictures are
decoded in the thread pool (Pillow releases the GIL while decoding), the forward pass
runs in the batcher's thread, and the event loop only moves bytes.

Limits, all in ``ServeLimits``: request body size (checked before parsing, also for
chunked uploads), pixels per picture (the decompression-bomb guard runs before decoding),
pictures per request, top-k range.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from pathlib import Path

import numpy as np

from cifarlab import __version__
from cifarlab.catalog import Catalog
from cifarlab.errors import CifarlabError, ImageError
from cifarlab.web.batcher import MicroBatcher
from cifarlab.web.limits import ServeLimits

STATIC = Path(__file__).parent / "static"
# small pictures are decoded on the event loop (well under a millisecond, less than a
# thread hop costs); larger ones in the thread pool, so that they cannot stall other requests
_INLINE_BYTES = 256 * 1024
_INLINE_PIXELS = 512 * 512


def create_app(catalog: Catalog | None = None, limits: ServeLimits | None = None, preload: bool = True):
    """The ASGI app; ``catalog`` defaults to the shipped model plus finished runs."""
    try:
        from fastapi import FastAPI
    except ImportError:
        raise CifarlabError("the web app needs FastAPI: pip install 'cifarlab[web]'") from None
    service = _Service(catalog or Catalog(), limits or ServeLimits())
    app = FastAPI(title="cifarlab", version=__version__, lifespan=service.lifespan(preload),
                  description="Classify pictures into the 10 CIFAR-10 classes with a trained cifarlab model.")
    app.state.service = service
    from cifarlab.web.routes import add_routes
    add_routes(app, service)
    return _BodyLimit(app, service.limits.max_upload_bytes)


# ---------------------------------------------------------------- the work behind the routes
class _Service:
    def __init__(self, catalog: Catalog, limits: ServeLimits):
        self.catalog, self.limits = catalog, limits
        self._batchers: dict[str, MicroBatcher] = {}
        self._ready: dict[str, tuple[MicroBatcher, list[str]]] = {}
        self._lock = threading.Lock()

    def lifespan(self, preload: bool):
        import contextlib

        @contextlib.asynccontextmanager
        async def span(app):
            if preload and self.catalog.entries():  # the first request should not pay for loading
                await asyncio.to_thread(self.batcher, self.catalog.first().name)
            yield
            for b in self._batchers.values():
                b.close()
        return span

    def ready_batcher(self, name: str) -> tuple[MicroBatcher, list[str]] | None:
        """The batcher of an already loaded model, without leaving the event loop; else None."""
        entry = self.catalog.resolve(name)  # unknown names raise here, before any loading
        return self._ready.get(f"{entry.name}\0{entry.path}")

    def batcher(self, name: str) -> tuple[MicroBatcher, list[str]]:
        entry = self.catalog.resolve(name)
        predictor = self.catalog.predictor(entry.name)  # loads once, under the catalog's lock
        key = f"{entry.name}\0{entry.path}"
        with self._lock:
            if key not in self._batchers:
                # one forward first: torch's lazy set-up would otherwise land on the first user
                predictor.probabilities([np.zeros((32, 32, 3), np.uint8)])
                self._batchers[key] = MicroBatcher(predictor.probabilities, self.limits.max_batch,
                                                   self.limits.max_wait_ms / 1000, entry.name)
                self._ready[key] = (self._batchers[key], predictor.classes)
        return self._ready[key]

    def decode(self, blobs: list[tuple[str, bytes]], view: bool) -> list[dict]:
        """Each upload as {"filename", "array"} or {"filename", "error"}; in a worker thread."""
        from cifarlab.engine.predict import load_image, to_input
        out = []
        for filename, data in blobs:
            item: dict = {"filename": filename}
            try:
                img = load_image(data, self.limits.max_pixels)
                item["size"] = list(img.size)
                item["array"] = to_input(img)
                if view:
                    item["view"] = _png_data_url(item["array"])
            except ImageError as exc:
                item["error"] = str(exc).replace("<bytes>", filename or "upload", 1)
            out.append(item)
        return out

    async def predict(self, name: str, blobs: list[tuple[str, bytes]], top_k: int, view: bool) -> dict:
        start = time.perf_counter()
        batcher, classes = self.ready_batcher(name) or await asyncio.to_thread(self.batcher, name)
        if _small(blobs):
            items = self.decode(blobs, view)  # a small picture decodes faster than a thread hop
        else:
            items = await asyncio.to_thread(self.decode, blobs, view)
        decoded = time.perf_counter()
        good = [it for it in items if "array" in it]
        if not good:
            raise ImageError("; ".join(it["error"] for it in items))
        result = await asyncio.wrap_future(batcher.submit([it.pop("array") for it in good]))
        for it, row in zip(good, result.probabilities):
            it.update(_ranked(classes, row, top_k))
        done = time.perf_counter()
        return {"model": name, "top_k": top_k, "results": [_shaped(it) for it in items],
                "batch_size": result.batch_size,
                "timing_ms": {"decode": round((decoded - start) * 1000, 2),
                              "inference": round(result.compute_s * 1000, 2),
                              "total": round((done - start) * 1000, 2)}}


def _small(blobs: list[tuple[str, bytes]]) -> bool:
    """True when every upload is small in bytes and, by its header, in pixels."""
    from PIL import Image
    if sum(len(b) for _, b in blobs) > _INLINE_BYTES:
        return False
    try:
        for _, data in blobs:
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                if img.size[0] * img.size[1] > _INLINE_PIXELS:
                    return False
    except Exception:  # unreadable: let the thread pool's decode report it
        return False
    return True


def _ranked(classes: list[str], row: np.ndarray, top_k: int) -> dict:
    order = np.argsort(-row, kind="stable")
    return {"label": classes[order[0]], "index": int(order[0]),
            "probabilities": {classes[j]: round(float(row[j]), 6) for j in order},
            "top": [[classes[j], round(float(row[j]), 6)] for j in order[:top_k]]}


def _shaped(item: dict) -> dict:
    keys = ("filename", "label", "index", "probabilities", "top", "size", "view", "error")
    return {k: item.get(k) for k in keys if k in item or k in ("label", "error")}


def _png_data_url(array: np.ndarray) -> str:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- body size limit
class _BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before the app parses anything.

    Content-Length is checked first; a chunked body is read (and counted) here and handed
    on only when it fits, so a client cannot stream an endless upload into the form parser.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit
        self.state = app.state  # tests and the CLI reach the service through the wrapper

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._too_large(send, int(length))
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._too_large(send, len(body))
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, send, size: int) -> None:
        detail = (f"upload of {size / 2**20:.1f} MiB is over the {self.limit / 2**20:.1f} MiB limit; "
                  f"send a smaller picture")
        payload = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect as usual
    return replayed
