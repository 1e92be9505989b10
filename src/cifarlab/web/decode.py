"""Pictures admitted by their headers and decoded under a memory budget.

Before any pixel is decoded, each upload's header gives its size and mode; from them
``decode_cost`` estimates the peak bytes that decoding it and converting it to RGB will
take (measured with ``VmHWM`` for a 12 Mpx picture of each mode: Pillow keeps RGB as 4
bytes a pixel, compositing RGBA on white holds three RGBA copies, 16-bit grey goes through
float64 arrays). A ``Budget`` (an async semaphore weighted by that estimate) lets only so
many bytes decode at once; the rest wait, in order, until their request's deadline.
"""

from __future__ import annotations

import asyncio
import collections
import io
from dataclasses import dataclass

from PIL import Image

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


def decode_cost(width: int, height: int, mode: str, fmt: str | None = None, transparency: bool = False) -> int:
    per = _BYTES_PER_PIXEL.get(mode, _UNKNOWN_MODE)
    if (mode == "P" and transparency) or fmt in _HIDES_ALPHA:
        per = max(per, _BYTES_PER_PIXEL["RGBA"])
    return width * height * per


def read_header(data: bytes, name: str, max_pixels: int, budget: int) -> Header:
    """Size and decode cost from the header alone; ``Refused`` 413 (too large) or 415 (not a picture)."""
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
    return Header(w * h, cost)


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
