"""The door in front of the app: the API token, the in-flight cap and the upload limits.

Everything here runs before FastAPI parses a byte, and answers what it refuses with one
line of JSON (``{"detail": "..."}``) as the app's own errors do:

- 401 when a token is configured and it is missing (``Authorization: Bearer TOKEN``) on
  anything but the page, its files, ``/health`` and the API docs (an allow-list, so that
  a route added later is guarded by default).
- 429 when ``max_inflight`` requests, or ``max_inflight_bytes`` of declared uploads, are
  already being served: load shed at the door, before the body is read.
- 413 when the body is over ``max_upload_bytes`` (Content-Length is checked first; a
  chunked body is counted as it arrives).
- 408 when the body does not arrive within ``body_timeout_s`` (slow senders).
"""

from __future__ import annotations

import asyncio
import hmac
import json

from cifarlab.web.limits import ServeLimits

_OPEN_METHODS = ("GET", "HEAD", "OPTIONS")
_OPEN_PATHS = {"/", "/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/favicon.ico"}


class Gate:
    def __init__(self, app, limits: ServeLimits, token: str | None = None):
        self.app, self.limits, self.token = app, limits, token
        self.state = app.state  # tests and the CLI reach the service through the wrapper
        self.inflight, self.inflight_bytes = 0, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.token and not _open(scope["path"]) and not self._authorized(headers):
            return await refuse(send, 401, "this server needs its API token: send 'Authorization: Bearer "
                                           "<token>' (on the page, open /#token=<token>)")
        if scope["method"] in _OPEN_METHODS:
            return await self.app(scope, receive, send)
        return await self._admit(scope, receive, send, headers.get(b"content-length"))

    def _authorized(self, headers: dict) -> bool:
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self.token.encode())

    async def _admit(self, scope, receive, send, length: bytes | None):
        limit = self.limits.max_upload_bytes
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > limit:
            return await self._too_large(send, declared)
        size = limit if declared is None else declared  # a chunked body may grow to the limit
        if (self.inflight >= self.limits.max_inflight
                or self.inflight_bytes + size > self.limits.max_inflight_bytes):
            return await refuse(send, 429, f"server busy: {self.inflight} requests "
                                           f"({self.inflight_bytes / 2**20:.0f} MiB of uploads) in flight; "
                                           f"retry in a moment", retry_after=1)
        self.inflight, self.inflight_bytes = self.inflight + 1, self.inflight_bytes + size
        try:
            body = await self._read_body(receive, send)
            if body is not None:
                await _while_connected(self.app(scope, _replay(body, receive), send), receive)
        finally:
            self.inflight, self.inflight_bytes = self.inflight - 1, self.inflight_bytes - size

    async def _read_body(self, receive, send) -> bytes | None:
        """The whole body, or None after answering 408/413 (or when the client left)."""
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                complete = await self._collect(receive, chunks)
        except TimeoutError:
            await refuse(send, 408, f"the upload did not arrive within {self.limits.body_timeout_s:g} s; "
                                    f"check the connection and retry")
            return None
        if complete and sum(map(len, chunks)) > self.limits.max_upload_bytes:
            await self._too_large(send, sum(map(len, chunks)))
            return None
        return b"".join(chunks) if complete else None

    async def _collect(self, receive, chunks: list[bytes]) -> bool:
        """Append the body's chunks until its end (True), the limit or a disconnect (False)."""
        count, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            chunks.append(message.get("body", b""))
            count += len(chunks[-1])
            more = message.get("more_body", False)
            if count > self.limits.max_upload_bytes:
                return True  # over the limit: the caller answers 413 without reading on
        return True

    async def _too_large(self, send, size: int) -> None:
        limit = self.limits.max_upload_bytes
        await refuse(send, 413, f"upload of {size / 2**20:.1f} MiB is over the {limit / 2**20:.1f} MiB limit; "
                                f"send a smaller picture")


def _open(path: str) -> bool:
    return path in _OPEN_PATHS or path.startswith("/static/")


async def refuse(send, status: int, detail: str, retry_after: int | None = None) -> None:
    """Answer ``{"detail": detail}`` with ``status`` and close the connection."""
    payload = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               (b"connection", b"close")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _while_connected(call, receive) -> None:
    """Run the app's ``call``; cancel it if the client disconnects first (its work is for no one)."""
    task = asyncio.ensure_future(call)
    gone = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is stopping
        task.cancel()
        gone.cancel()
        raise
    if task.done():
        gone.cancel()
        return task.result()  # the app's own exception, if it raised one
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def _disconnect(receive) -> None:
    """Return once the client has disconnected (the body is read: nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _replay(body: bytes, receive):
    """A ``receive`` that hands over ``body`` once, then drops it (the parser has its copy)."""
    box = [body]

    async def replayed():
        if box:
            return {"type": "http.request", "body": box.pop(), "more_body": False}
        return await receive()  # after the body: wait for the disconnect as usual
    return replayed
