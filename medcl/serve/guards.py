"""Pure ASGI layers in front of the service's routes: the request log and the upload guard.

They work on the raw ASGI messages, before FastAPI parses anything, because FastAPI reads (and spools to disk) a
multipart body before any dependency runs: a token check in a dependency comes too late to protect memory and disk.

* :class:`RequestLog` (outermost): one PHI-free log line per request, whoever answered it (a guard or a route),
  an ``X-Request-ID`` on every response, and a PHI-safe 500 for any exception that escapes.
* :class:`UploadGuard`: on every route but the open ones (``/health``, ``/ready``, the schema and its viewers),
  in this order and each before the body is read:

  1. the bearer token (401: the app never receives the body; what the client still sends is dropped, see
     :class:`medcl.serve.server.DeadlineH11Protocol`);
  2. the declared ``Content-Length`` (413);
  3. the client's uploads in flight (429 past ``max_uploads_per_client``);

  then, while the app reads the body: its size (413) and its pace (408 when no byte came for ``body_idle_timeout``
  seconds or the whole body took longer than ``body_timeout``; the connection is closed).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

log = logging.getLogger("medcl.serve")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
CLOSE = (b"connection", b"close")


async def send_problem(send: Send, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """A JSON ``{"detail": ...}`` answer, the shape of every error the service gives."""
    body = json.dumps({"detail": detail}).encode()
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


def token_matches(authorization: bytes | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, given = (authorization or b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode())


class RequestLog:
    """One log line per request: id, method, route template, status, declared size, latency, error class.

    Raw paths of unknown URLs are not logged (they may carry anything); ``known_paths`` are the app's route
    templates, used for answers given before routing (a guard's 401/408/413/429).
    """

    def __init__(self, app: ASGIApp, known_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.known_paths = frozenset(known_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"")[:64].decode("latin-1")
        request_id = given if given.isalnum() else uuid.uuid4().hex[:12]
        state = scope.setdefault("state", {})
        state["id"] = request_id
        status = 0
        started = time.perf_counter()

        async def logged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        except Exception as err:
            # Messages and tracebacks may quote request data: log where it happened, not what it said.
            tb = err.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
            log.error("%s internal error %s at %s", request_id, type(err).__name__, where)
            if not status:
                await send_problem(logged_send, 500, f"internal error (request {request_id})")
        route = getattr(scope.get("route"), "path", None)
        path = route or (scope["path"] if scope["path"] in self.known_paths else "<unmatched>")
        log.info(
            "%s %s %s %d %s bytes %.1f ms %s",
            request_id, scope["method"], path, status, headers.get(b"content-length", b"-").decode("latin-1"),
            (time.perf_counter() - started) * 1000, state.get("error", ""),
        )  # fmt: skip


class _BodyRejected(Exception):
    """Raised inside the app's ``receive`` to abort reading a body; the guard answers instead."""


@dataclass(repr=False, eq=False)  # no repr: it would show the token
class UploadGuard:
    """Token, declared size and per-client slots before the body; size and pace while it is read (see module doc).

    Args:
        app: the ASGI app behind the guard.
        token: the bearer token; None serves anonymously.
        max_bytes: largest request body.
        max_uploads_per_client: requests with a body in flight per client address (the peer address, or the
            one a trusted proxy forwards); each holds up to ``max_bytes`` of memory or temp space.
        body_timeout: seconds for the whole body, from the end of the headers.
        body_idle_timeout: seconds without a body byte.
    """

    app: ASGIApp
    _: KW_ONLY
    token: str | None
    max_bytes: int
    max_uploads_per_client: int
    body_timeout: float
    body_idle_timeout: float
    in_flight: Counter[str] = field(default_factory=Counter, init=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.token is not None and not token_matches(headers.get(b"authorization"), self.token):
            scope.setdefault("state", {})["error"] = "Unauthorized"
            await send_problem(send, 401, "missing or invalid bearer token", [(b"www-authenticate", b"Bearer")])
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, send)
            return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown",))[0]
        if self.in_flight[client] >= self.max_uploads_per_client:
            scope.setdefault("state", {})["error"] = "TooManyUploads"
            detail = f"more than {self.max_uploads_per_client} uploads in flight from this client; retry later"
            await send_problem(send, 429, detail, [(b"retry-after", b"1")])
            return
        self.in_flight[client] += 1
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.in_flight[client] -= 1
            if not self.in_flight[client]:
                del self.in_flight[client]

    async def _too_large(self, scope: Scope, send: Send) -> None:
        scope.setdefault("state", {})["error"] = "BodyTooLarge"
        await send_problem(send, 413, f"request body exceeds the limit of {self.max_bytes:,} bytes")

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        received = 0
        body_done = False
        rejected: int | None = None  # the status the guard answers instead of the app
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, body_done, rejected
            if body_done:  # after the body the app only waits for a disconnect: no deadline applies
                return await receive()
            wait = min(self.body_idle_timeout, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except asyncio.TimeoutError:
                rejected = 408
                raise _BodyRejected from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    rejected = 413
                    raise _BodyRejected
                body_done = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected is not None:
                return  # whatever the app makes of the aborted body (FastAPI: a 400), the guard answers
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if rejected is None:
                raise
        if rejected is None or started:
            return
        if rejected == 413:
            await self._too_large(scope, send)
            return
        scope.setdefault("state", {})["error"] = "BodyTimeout"
        detail = (
            f"request body too slow: no data for {self.body_idle_timeout:g} s or not complete within "
            f"{self.body_timeout:g} s"
        )
        await send_problem(send, 408, detail, [CLOSE])
