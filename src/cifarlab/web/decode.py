"""Pictures admitted by their headers and decoded under a memory budget.

Before any pixel is decoded, each upload's header gives its size and mode; from them
``decode_cost`` estimates the peak bytes that decoding it and converting it to RGB will
take (measured with ``VmHWM`` for a 12 Mpx picture of each mode: Pillow keeps RGB as 4
bytes a pixel, compositing RGBA on white holds three RGBA copies, 16-bit grey goes through
float64 arrays). A ``Budget`` (an async semaphore weighted by that estimate) lets only so
many bytes decode at once; the rest wait, in order, until their request's deadline.

A JPEG's time to decode is not bounded by its pixels: a progressive one is a series of
scans, each another pass over every 8x8 block, and a scan can be a few dozen bytes. So
the header check also counts the scans (``jpeg_scans``, a walk over the markers) and
refuses too many of them, or too many scans times pixels. Decoding then reads through a
``_Guarded`` file that hands Pillow one scan at a time and stops the decode, between two
reads, once its request has timed out or gone.
"""

from __future__ import annotations

import asyncio
import collections
import io
import re
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from cifarlab.errors import ImageError

# peak bytes per pixel while decoding and converting to RGB, by the mode in the header,
# rounded up from measurements (RGB 12, L 6, RGBA/LA 24, P with transparency 22, I;16 28, F 32)
_BYTES_PER_PIXEL = {"1": 8, "L": 8, "P": 12, "RGB": 12, "CMYK": 12, "YCbCr": 12, "LAB": 12, "HSV": 12,
                    "RGBA": 24, "LA": 24, "PA": 24, "RGBa": 24, "La": 24,
                    "I;16": 32, "I;16L": 32, "I;16B": 32, "I;16N": 32, "I": 36, "F": 36}
_UNKNOWN_MODE = 36  # the most any mode above takes
_HIDES_ALPHA = {"WEBP"}  # WebP's header says RGB for pictures that decode as RGBA
# what an upload may be, as Pillow identifies it (the same way as the decoder will after
# us): exotic plugins are refused, EPS for one would run Ghostscript
FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")


class Refused(Exception):
    """A request the server will not serve: an HTTP status and one line for the client."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class Header:
    pixels: int
    cost: int  # estimated peak bytes of decoding it
    scans: int = 1  # passes over the picture: a progressive JPEG's scans, else 1
    work: int = 0  # pixels x scans: what decoding it costs in time

    def __post_init__(self):
        self.work = self.work or self.pixels * self.scans


# a marker outside a segment's stated length: 0xFF, then neither a stuffed 0x00, a restart
# marker (they sit inside a scan's data) nor another 0xFF (fill before a marker)
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_STANDALONE = {0x01, 0xD8}  # TEM and SOI carry no length (RSTn are skipped by _MARKER)


def jpeg_scans(data: bytes) -> list[int]:
    """Where each scan (SOS marker) of a JPEG starts, up to its first EOI.

    The way libjpeg reads: segments are skipped by their stated length, and anything between
    them (a scan's entropy-coded data, or junk) is searched for the next marker. So a JPEG
    inside an EXIF thumbnail is not counted, and scans hidden after junk are."""
    starts, pos = [], 2
    while (m := _MARKER.search(data, pos)) is not None:
        code = data[m.end() - 1]
        if code == 0xD9:  # EOI: what follows (the other pictures of an MPO file) is not decoded
            break
        if code in _STANDALONE:
            pos = m.end()
            continue
        if code == 0xDA:
            starts.append(m.start())
        pos = m.end() + max(2, int.from_bytes(data[m.end():m.end() + 2], "big"))
    return starts


def decode_cost(width: int, height: int, mode: str, fmt: str | None = None, transparency: bool = False) -> int:
    per = _BYTES_PER_PIXEL.get(mode, _UNKNOWN_MODE)
    if (mode == "P" and transparency) or fmt in _HIDES_ALPHA:
        per = max(per, _BYTES_PER_PIXEL["RGBA"])
    return width * height * per


def read_header(data: bytes, name: str, limits) -> Header:
    """Size, decode cost and scans from the header alone (``limits``: a ``ServeLimits``);
    ``Refused`` 413 (too large, too many scans) or 415 (not a picture)."""
    max_pixels, budget = limits.max_pixels, limits.decode_budget_bytes
    try:
        with Image.open(io.BytesIO(data)) as img:
            (w, h), mode, fmt, info = img.size, img.mode, img.format, img.info
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # a warning when run with -W error
        raise Refused(413, f"{name}: far too many pixels (decompression-bomb guard); downscale it first") from None
    except Exception:  # Pillow raises many kinds for what it cannot identify
        raise Refused(415, f"{name}: not a readable image (send a JPEG, PNG, WebP, GIF, BMP or TIFF)") from None
    if fmt not in FORMATS:
        raise Refused(415, f"{name}: {fmt} pictures are not accepted; send a JPEG, PNG, WebP, GIF, BMP or TIFF")
    if w * h > max_pixels:
        raise Refused(413, f"{name}: {w}x{h} is {w * h / 1e6:.3g} Mpixels, over the {max_pixels / 1e6:.3g} "
                           f"Mpixel limit (decompression-bomb guard); downscale it first")
    cost = decode_cost(w, h, mode, fmt, "transparency" in info)
    if cost > budget:
        raise Refused(413, f"{name}: a {w}x{h} {mode} picture needs about {cost / 2**20:.0f} MiB to decode, "
                           f"over the server's {budget / 2**20:.0f} MiB; send it as 8-bit RGB or smaller")
    scans = len(jpeg_scans(data)) if fmt in ("JPEG", "MPO") else 1
    if scans > limits.max_jpeg_scans:
        raise Refused(413, f"{name}: a progressive JPEG with {scans} scans, over the limit of {limits.max_jpeg_scans} "
                           f"(a photo has about 10; each scan is another pass over the picture); "
                           f"save it as a baseline JPEG or a PNG")
    header = Header(w * h, cost, max(scans, 1))
    if header.work > limits.max_scan_pixels:
        raise Refused(413, f"{name}: a {w}x{h} JPEG in {scans} scans is {header.work / 1e6:.0f} Mpixel-passes of "
                           f"decoding, over the {limits.max_scan_pixels / 1e6:.0f} limit; save it as a baseline "
                           f"JPEG, or smaller")
    return header


class _Stopped(Exception):
    """Raised inside Pillow's read loop: the decode was told to stop."""


class _Guarded(io.BytesIO):
    """The upload as a file that raises once ``stop`` is set, and that, once ``clip`` is on,
    never returns bytes past the next scan's start: Pillow then feeds libjpeg one scan per
    read, and the stop is seen after each pass over the picture."""

    def __init__(self, data: bytes, stop: threading.Event, cuts: list[int]):
        super().__init__(data)
        self.stop, self.cuts, self.clip = stop, cuts, False

    def read(self, size: int | None = -1) -> bytes:
        if self.stop.is_set():
            raise _Stopped
        if self.clip and self.cuts:
            pos = self.tell()
            nxt = next((c for c in self.cuts if c > pos), None)
            if nxt is not None and (size is None or size < 0 or pos + size > nxt):
                size = nxt - pos
        return super().read(size)


def decode_upload(data: bytes, name: str, max_pixels: int,
                  stop: threading.Event | None = None) -> tuple[tuple[int, int], np.ndarray]:
    """(width, height) and the 32x32 RGB input of one upload, decoded as ``Predictor`` does
    (EXIF orientation, transparency on white, deep modes scaled); ``ImageError`` when it
    cannot be read, ``Refused`` 503 when ``stop`` was set before the decode was done."""
    from cifarlab.inference.predict import to_input, to_rgb
    reader = _Guarded(data, stop or threading.Event(), jpeg_scans(data) if data[:2] == b"\xff\xd8" else [])
    try:
        with Image.open(reader) as img:
            reader.clip = True
            rgb = to_rgb(ImageOps.exif_transpose(img), name, max_pixels)
            return rgb.size, to_input(rgb)
    except _Stopped:
        raise Refused(503, f"{name}: decoding stopped: the request timed out or its client left") from None
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: too many pixels (decompression-bomb guard); downscale it first") from None
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "not a readable image" if isinstance(exc, Image.UnidentifiedImageError) else f"unreadable ({exc})"
        raise ImageError(f"{name}: {reason}") from None


class Budget:
    """A weighted async semaphore: ``acquire(n)`` waits, first come first served, until n fits.

    Use from the event loop only; ``release`` may be scheduled from a thread with
    ``loop.call_soon_threadsafe``. First come first served, so that a large picture is not
    starved by a stream of small ones.
    """

    def __init__(self, capacity: int):
        self.capacity, self.used = capacity, 0
        self._waiters: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    async def acquire(self, n: int) -> None:
        if not self._waiters and self.used + n <= self.capacity:
            self.used += n
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append((n, granted))
        try:
            await granted
        except BaseException:  # timed out or cancelled: leave the line, or give back a late grant
            if granted.done() and not granted.cancelled():
                self.release(n)
            else:
                self._wake()
            raise

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and (self._waiters[0][1].done() or self.used + self._waiters[0][0] <= self.capacity):
            n, granted = self._waiters.popleft()
            if not granted.done():
                self.used += n
                granted.set_result(None)
