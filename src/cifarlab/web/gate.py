"""The door in front of the app: the API token, the in-flight caps and the upload limits.

Everything here runs before FastAPI parses a byte, and answers what it refuses with one
line of JSON (``{"detail": "..."}``) as the app's own errors do:

- 413 at once, without reading or reserving anything, when a request to any path but
  ``POST /api/predict`` (the only one that takes a body) declares a body.
- 401 when a token is configured and it is missing (``Authorization: Bearer TOKEN``) on
  anything but the page, its files, ``/health`` and the API docs (an allow-list, so that
  a route added later is guarded by default).
- 429 when ``max_inflight`` requests, or ``max_inflight_bytes`` of declared uploads, are
  already being served, or the client's address has ``max_client_inflight`` requests or
  ``max_client_inflight_bytes`` in flight: load shed at the door, before the body is read.
- 413 when the body is over ``max_upload_bytes`` (Content-Length is checked first; a
  chunked body is counted as it arrives).
- 408 when the body does not arrive within ``body_timeout_s`` (slow senders).

A refused upload's answer is sent at once, and its body then read and dropped (for at most
``_DRAIN_S``) before the connection closes: closing on a client that is still sending
resets the connection, and the client would never read why it was refused.
"""

from __future__ import annotations

import asyncio
import hmac
import json

from cifarlab.web.limits import ServeLimits

_OPEN_PATHS = {"/", "/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/favicon.ico"}
_BODY_ROUTES = {("POST", "/api/predict")}  # the only requests that may carry a body
_DRAIN_S = 5.0  # seconds a refused upload's body is read (and dropped) before the connection closes


class Gate:
    def __init__(self, app, limits: ServeLimits, token: str | None = None):
        self.app, self.limits, self.token = app, limits, token
        self.state = app.state  # tests and the CLI reach the service through the wrapper
        self.inflight, self.inflight_bytes = 0, 0
        self.clients: dict[str, list[int]] = {}  # address -> [requests, declared bytes] in flight

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        method, path = scope["method"], scope["path"]
        if (method, path) not in _BODY_ROUTES:
            if _has_body(headers):  # answered without reading it: nothing is reserved for it
                return await refuse(send, 413, f"{method} {path} takes no request body; pictures go to "
                                               f"POST /api/predict")
            if self.token and not _open(path) and not self._authorized(headers):
                return await refuse(send, 401, _NEEDS_TOKEN)
            return await self.app(scope, receive, send)
        if self.token and not self._authorized(headers):
            return await refuse(send, 401, _NEEDS_TOKEN, drain=receive)
        return await self._admit(scope, receive, send, headers.get(b"content-length"))

    def _authorized(self, headers: dict) -> bool:
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self.token.encode())

    async def _admit(self, scope, receive, send, length: bytes | None):
        limits = self.limits
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > limits.max_upload_bytes:
            return await self._too_large(send, declared)
        size = limits.max_upload_bytes if declared is None else declared  # a chunked body may grow to the limit
        client = (scope.get("client") or ("unknown", 0))[0]
        mine = self.clients.get(client, [0, 0])
        if self.inflight >= limits.max_inflight or self.inflight_bytes + size > limits.max_inflight_bytes:
            return await refuse(send, 429, f"server busy: {self.inflight} requests "
                                           f"({self.inflight_bytes / 2**20:.0f} MiB of uploads) in flight; "
                                           f"retry in a moment", retry_after=1, drain=receive)
        if mine[0] >= limits.max_client_inflight or mine[1] + size > limits.max_client_inflight_bytes:
            return await refuse(send, 429, f"too many uploads from your address at once: {mine[0]} requests "
                                           f"({mine[1] / 2**20:.0f} MiB) in flight, at most "
                                           f"{limits.max_client_inflight} ({limits.max_client_inflight_bytes / 2**20:.0f}"
                                           f" MiB); wait for their answers", retry_after=1, drain=receive)
        self.inflight, self.inflight_bytes = self.inflight + 1, self.inflight_bytes + size
        mine[0], mine[1] = mine[0] + 1, mine[1] + size
        self.clients[client] = mine
        try:
            body = await self._read_body(receive, send)
            if body is not None:
                await _while_connected(self.app(scope, _replay(body, receive), send), receive)
        finally:
            self.inflight, self.inflight_bytes = self.inflight - 1, self.inflight_bytes - size
            mine[0], mine[1] = mine[0] - 1, mine[1] - size
            if not mine[0]:
                self.clients.pop(client, None)

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


_NEEDS_TOKEN = ("this server needs its API token: send 'Authorization: Bearer <token>' (on the page, "
                "open /#token=<token>)")


def _open(path: str) -> bool:
    return path in _OPEN_PATHS or path.startswith("/static/")


def _has_body(headers: dict) -> bool:
    length = headers.get(b"content-length", b"0").strip()
    return b"transfer-encoding" in headers or length not in (b"", b"0")


async def refuse(send, status: int, detail: str, retry_after: int | None = None, drain=None) -> None:
    """Answer ``{"detail": detail}`` with ``status`` and close the connection.

    With ``drain`` (the request's ``receive``), the body the client is still sending is read
    and dropped, for at most ``_DRAIN_S``, before the answer ends and the connection closes."""
    payload = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               (b"connection", b"close")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": drain is not None})
    if drain is not None:
        try:
            async with asyncio.timeout(_DRAIN_S):
                while (message := await drain())["type"] == "http.request" and message.get("more_body"):
                    pass
        except TimeoutError:
            pass
        await send({"type": "http.response.body", "body": b""})


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
