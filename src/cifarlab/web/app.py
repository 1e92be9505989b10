"""The FastAPI service: ``/api/models``, ``/api/predict``, ``/health``, and the page at ``/``.

Clients name models; the ``Catalog`` maps names to checkpoints, so no path from a client
is ever opened. Each model is loaded once and served by a ``MicroBatcher``. Pictures are
decoded in a small thread pool (Pillow releases the GIL while decoding), the forward pass
runs in the batcher's thread, and the event loop only moves bytes.

Limits, all in ``ServeLimits``: the ``Gate`` (token, requests in flight, body size and
read time) runs before anything is parsed; then each picture's header is read (size,
mode, a JPEG's scans) and the request refused when a picture or all of them together have
too many pixels, or a JPEG too many scans; then pictures decode only while their estimated
memory fits the decode budget; waiting, decoding and the model share one deadline per
request. A decode whose request timed out, or whose client left, is dropped if it has not
started and stopped at its next read if it has.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cifarlab import __version__
from cifarlab.catalog import Catalog, model_card
from cifarlab.errors import CifarlabError, ImageError
from cifarlab.web.batcher import MicroBatcher, lower_priority
from cifarlab.web.decode import Budget, Header, Refused, decode_upload, read_header
from cifarlab.web.gate import Gate
from cifarlab.web.limits import ServeLimits

# tiny pictures are decoded on the event loop (well under a millisecond, less than a
# thread hop costs); all others in the thread pool, under the decode budget, so that they
# cannot stall other requests (/health included). "Tiny" by bytes, decode memory and work
# (pixels x scans: a progressive JPEG of a few kB can take seconds).
_INLINE_BYTES = 64 * 1024
_INLINE_COST = 4 * 2**20  # estimated decode bytes of the whole request
_INLINE_WORK = 200_000  # pixels x scans of the whole request: a 400x500 baseline JPEG
_CARD_TTL_S = 300.0  # an unchanged file's card is read again after this long (results/ may have new rows)


def create_app(catalog: Catalog | None = None, limits: ServeLimits | None = None, preload: bool = True,
               token: str | None = None, examples_home: str | Path | None = None):
    """The ASGI app; ``catalog`` defaults to the shipped model plus finished runs.

    With ``token``, every ``/api/*`` call needs ``Authorization: Bearer <token>``. The page's
    examples come from the data cache under ``examples_home`` (default: ``CIFARLAB_HOME``)."""
    try:
        from fastapi import FastAPI
    except ImportError:
        raise CifarlabError("the web app needs FastAPI: pip install 'cifarlab[web]'") from None
    service = _Service(catalog or Catalog(), limits or ServeLimits(), examples_home)
    app = FastAPI(title="cifarlab", version=__version__, lifespan=service.lifespan(preload),
                  description="Classify pictures into the 10 CIFAR-10 classes with a trained cifarlab model.")
    app.state.service = service
    from cifarlab.web.routes import add_routes
    add_routes(app, service)
    return Gate(app, service.limits, token)


def release_freed_memory() -> None:
    """Make glibc hand large freed blocks back to the system at once (Linux; elsewhere nothing).

    After the first large free, glibc raises its mmap threshold, and later image blocks come
    from per-thread heaps that keep what is freed: the server's RSS then grows past the decode
    budget (1.17 GiB instead of 0.73 under ``serve_load.py --hostile``). A fixed threshold keeps
    every block over 1 MiB in its own mapping, returned when it is freed. Process-wide, so
    ``cifarlab serve`` calls it, not ``create_app``.
    """
    import ctypes
    import sys
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD, bytes
    except (OSError, AttributeError):  # not glibc: its allocator has its own rules
        pass


# ---------------------------------------------------------------- the work behind the routes
class _Service:
    def __init__(self, catalog: Catalog, limits: ServeLimits, examples_home: str | Path | None = None):
        from cifarlab.data.cache import default_home
        self.catalog, self.limits = catalog, limits
        self.examples_home = Path(examples_home) if examples_home else default_home()
        self._examples: dict[tuple[str, ...], list] = {}
        self.budget = Budget(limits.decode_budget_bytes)
        self._pool = ThreadPoolExecutor(max(1, limits.decode_threads), thread_name_prefix="decode",
                                        initializer=lower_priority)
        self._batchers: dict[str, MicroBatcher] = {}
        self._ready: dict[str, tuple[MicroBatcher, list[str], float | None]] = {}  # + classes, temperature
        self._cards: dict[str, tuple] = {}  # name and path -> (file stamps, time read, card)
        self._lock = threading.Lock()
        self._count: tuple[float, int] | None = None  # (when, how many models) for /health

    async def model_count(self) -> int:
        """How many models the catalogue lists, counted off the event loop (the catalogue may read
        the run registry) at most once a second."""
        now = time.monotonic()
        if self._count is None or now - self._count[0] > 1.0:
            self._count = (now, len(await asyncio.to_thread(self.catalog.entries)))
        return self._count[1]

    def lifespan(self, preload: bool):
        import contextlib

        @contextlib.asynccontextmanager
        async def span(app):
            if preload and self.catalog.entries():  # the first request should not pay for loading
                await asyncio.to_thread(self.batcher, self.catalog.first().name)
            yield
            for b in self._batchers.values():
                b.close()
            self._pool.shutdown(wait=False, cancel_futures=True)
        return span

    def ready_batcher(self, name: str) -> tuple[MicroBatcher, list[str], float | None] | None:
        """The batcher of an already loaded model, without leaving the event loop; else None."""
        entry = self.catalog.resolve(name)  # unknown names raise here, before any loading
        return self._ready.get(f"{entry.name}\0{entry.path}")

    def batcher(self, name: str) -> tuple[MicroBatcher, list[str], float | None]:
        entry = self.catalog.resolve(name)
        predictor = self.catalog.predictor(entry.name)  # loads once, under the catalog's lock
        key = f"{entry.name}\0{entry.path}"
        with self._lock:
            if key not in self._batchers:
                # one forward first: torch's lazy set-up would otherwise land on the first user
                predictor.probabilities([np.zeros((32, 32, 3), np.uint8)])
                self._batchers[key] = MicroBatcher(predictor.probabilities, self.limits.max_batch,
                                                   self.limits.max_wait_ms / 1000, entry.name)
                self._ready[key] = (self._batchers[key], predictor.classes, getattr(predictor, "temperature", None))
        return self._ready[key]

    def card(self, entry) -> dict:
        """The model card of a catalogue entry as the API shows it (no server path in it): the
        run folder's card, or the checkpoint's own (``modelcard.card_for``); read again when its
        files change, else at most every ``_CARD_TTL_S``. Never raises: a bad card is one sentence."""
        from cifarlab import modelcard
        key = f"{entry.name}\0{entry.path}"
        stamp = (_stamp(entry.path), _stamp(Path(entry.path).parent / modelcard.CARD_JSON))
        found = self._cards.get(key)
        if found is None or found[0] != stamp or time.monotonic() - found[1] > _CARD_TTL_S:
            card = modelcard.public(model_card(entry.path, entry.name))
            if card.get("error"):  # e.g. "/srv/runs/x/best.pt asks to run code": the file, not the folder
                card["error"] = card["error"].replace(str(Path(entry.path).parent) + os.sep, "")
            found = self._cards[key] = (stamp, time.monotonic(), {"card": card,
                                                                  "card_sections": modelcard.sections(card)})
        return found[2]

    async def examples(self) -> list:
        """Test pictures of the cached data whose classes are the default model's; [] without a cache."""
        from cifarlab.web.examples import find_examples
        if not self.catalog.entries():
            return []
        _, classes, _ = self.ready_batcher(self.catalog.first().name) or await asyncio.to_thread(
            self.batcher, self.catalog.first().name)
        key = tuple(classes)
        if key not in self._examples:
            self._examples[key] = await asyncio.to_thread(find_examples, self.examples_home, classes)
        return self._examples[key]

    def decode(self, filename: str, data: bytes, view: bool, stop: threading.Event | None = None) -> dict:
        """One upload as {"filename", "array", ...} or {"filename", "error", "status"};
        ``Refused`` 503 when ``stop`` is set before it is done."""
        item: dict = {"filename": filename}
        try:
            size, item["array"] = decode_upload(data, filename, self.limits.max_pixels, stop)
            item["size"] = list(size)
            if view:
                item["view"] = _png_data_url(item["array"])
        except Refused:
            raise
        except ImageError as exc:  # truncated or corrupt past its header
            item["error"], item["status"] = str(exc), 415
        except Exception as exc:  # a hostile file can trip a Pillow plugin in ways it does not wrap
            item["error"], item["status"] = f"{filename}: unreadable ({type(exc).__name__})", 415
        return item

    def headers(self, blobs: list[tuple[str, bytes]]) -> list[Header | Refused]:
        """Each upload's header, or why it is refused; the request refused when they add up to too much."""
        out: list[Header | Refused] = []
        for filename, data in blobs:
            try:
                out.append(read_header(data, filename, self.limits))
            except Refused as exc:
                out.append(exc)
        total = sum(h.pixels for h in out if isinstance(h, Header))
        if total > self.limits.max_request_pixels:
            raise Refused(413, f"the {len(blobs)} pictures have {total / 1e6:.3g} Mpixels together, over the "
                               f"{self.limits.max_request_pixels / 1e6:.3g} Mpixel limit per request; "
                               f"send fewer or smaller pictures")
        return out

    async def decode_all(self, blobs: list[tuple[str, bytes]], view: bool, deadline: float) -> list[dict]:
        if sum(len(b) for _, b in blobs) <= _INLINE_BYTES:
            headers = self.headers(blobs)
        else:  # reading the headers and walking a JPEG's markers: ~10 ms for a large photo
            headers = await asyncio.to_thread(self.headers, blobs)
        refused = [{"filename": b[0], "error": h.detail, "status": h.status} if isinstance(h, Refused) else None
                   for b, h in zip(blobs, headers)]
        if _small(blobs, headers):  # a small picture decodes faster than a thread hop
            return [r or self.decode(*b, view) for b, r in zip(blobs, refused)]
        return [r or await self._decode_budgeted(b, h, view, deadline)
                for b, h, r in zip(blobs, headers, refused)]

    async def _decode_budgeted(self, blob: tuple[str, bytes], header: Header, view: bool, deadline: float) -> dict:
        """Decode in the pool once the budget holds the picture's estimated cost; 503 past the deadline."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):  # a timeout context: no extra task or loop hop
                await self.budget.acquire(header.cost)
        except TimeoutError:
            raise Refused(503, f"server busy: no decoding memory came free within "
                               f"{self.limits.work_timeout_s:g} s; retry in a moment") from None
        stop = threading.Event()
        job = self._pool.submit(self.decode, *blob, view, stop)
        # given back when the thread is done, not when the request gives up: the memory is held till then
        job.add_done_callback(lambda _: loop.is_closed() or loop.call_soon_threadsafe(self.budget.release,
                                                                                      header.cost))
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.wrap_future(job)
        except TimeoutError:
            raise Refused(503, f"{blob[0]}: decoding did not finish within {self.limits.work_timeout_s:g} s; "
                               f"send a smaller picture or retry later") from None
        finally:  # timed out, or cancelled because the client left: drop it if queued, else stop it
            if not job.done():
                stop.set()
                job.cancel()

    def heat_maps(self, name: str, arrays: list[np.ndarray], indices: list[int], sizes: list) -> list[str]:
        """Grad-CAM of each picture for its predicted class, as PNG data URLs to lay over the
        picture (run in the model's batcher thread: the map hooks into the model's layers)."""
        from cifarlab.explain import gradcam
        predictor = self.catalog.predictor(self.catalog.resolve(name).name)
        if predictor.backend != "torch":
            raise Refused(422, f"model {name} is an ONNX export: heat maps need its PyTorch checkpoint (.pt)")
        heats = gradcam(predictor.model, predictor.preprocess(arrays), target=list(indices))
        return [_heat_data_url(h, size) for h, size in zip(heats, sizes)]

    async def predict(self, name: str, blobs: list[tuple[str, bytes]], top_k: int, view: bool,
                      explain: bool = False, raw_probs: bool = False) -> dict:
        start = time.perf_counter()
        batcher, classes, temperature = self.ready_batcher(name) or await asyncio.to_thread(self.batcher, name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.work_timeout_s
        items = await self.decode_all(blobs, view, deadline)
        decoded = time.perf_counter()
        good = [it for it in items if "array" in it]
        if not good:
            status = 413 if any(it["status"] == 413 for it in items) else 415
            raise Refused(status, "; ".join(it["error"] for it in items))
        arrays = [it.pop("array") for it in good]
        try:
            async with asyncio.timeout_at(deadline):
                result = await asyncio.wrap_future(batcher.submit(arrays))
                # the batcher's probabilities are temperature-scaled when the model has a temperature
                probabilities = result.probabilities
                if raw_probs and temperature:
                    probabilities = _untempered(probabilities, temperature)
                for it, row in zip(good, probabilities):
                    it.update(_ranked(classes, row, top_k))
                if explain:
                    heats = await asyncio.wrap_future(batcher.call(lambda: self.heat_maps(
                        name, arrays, [it["index"] for it in good], [it["size"] for it in good])))
                    for it, heat in zip(good, heats):
                        it["heat"] = heat
        except TimeoutError:
            raise Refused(503, f"the model did not answer within {self.limits.work_timeout_s:g} s; "
                               f"the server is overloaded, retry in a moment") from None
        done = time.perf_counter()
        return {"model": name, "top_k": top_k, "temperature": temperature,
                "calibrated": bool(temperature) and not raw_probs, "results": [_shaped(it) for it in items],
                "batch_size": result.batch_size,
                "timing_ms": {"decode": round((decoded - start) * 1000, 2),
                              "inference": round(result.compute_s * 1000, 2),
                              "total": round((done - start) * 1000, 2)}}


def _stamp(path) -> tuple | None:
    """Size and modification time of ``path`` (None when it is missing): changes with the file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _small(blobs: list[tuple[str, bytes]], headers: list) -> bool:
    """True when the uploads are small in bytes and, by their headers, in decode memory and time."""
    good = [h for h in headers if isinstance(h, Header)]
    return (sum(len(b) for _, b in blobs) <= _INLINE_BYTES and sum(h.cost for h in good) <= _INLINE_COST
            and sum(h.work for h in good) <= _INLINE_WORK)


def _untempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The model's own softmax from the temperature-scaled one: softmax(z / T) ** T, normalized,
    is softmax(z) (the per-picture constant of the log cancels), computed in float64."""
    logp = np.log(np.clip(probabilities.astype(np.float64), 1e-300, None)) * temperature
    e = np.exp(logp - logp.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _ranked(classes: list[str], row: np.ndarray, top_k: int) -> dict:
    from cifarlab.inference.predict import rank
    ranked = [(j, c, round(p, 6)) for j, c, p in rank(classes, row)]
    return {"label": ranked[0][1], "index": ranked[0][0], "probabilities": {c: p for _, c, p in ranked},
            "top": [[c, p] for _, c, p in ranked[:top_k]]}


def _shaped(item: dict) -> dict:
    keys = ("filename", "label", "index", "probabilities", "top", "size", "view", "heat", "error")
    return {k: item.get(k) for k in keys if k in item or k in ("label", "error")}


def _heat_data_url(heat: np.ndarray, size, longest: int = 96, alpha: float = 0.45) -> str:
    """A heat map as an RGBA PNG data URL with the picture's aspect ratio (at most ``longest``
    pixels a side): colour from ``explain.colorize``, opacity ``alpha * sqrt(heat)`` as
    ``explain.overlay`` weighs it, so that laid over the picture it shows that overlay."""
    from PIL import Image

    from cifarlab.explain import colorize, resize_heat
    w, h = size
    scale = longest / max(w, h)
    small = resize_heat(heat, (max(1, round(w * scale)), max(1, round(h * scale))))
    small = np.clip(small, 0, 1)
    rgba = np.dstack([colorize(small), (alpha * np.sqrt(small) * 255 + 0.5).astype(np.uint8)])
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _png_data_url(array: np.ndarray) -> str:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
