"""uvicorn under medcl's connection limits: what uvicorn enforces itself, plus deadlines between requests.

uvicorn bounds connections (``limit_concurrency``: 503 past it), idle keep-alive connections
(``timeout_keep_alive``) and the size of a request head (h11's ``max_incomplete_event_size``: 400 past it). It
waits forever, though, for a head that trickles in or never comes (the ASGI app only sees a request once its head
is complete), and for the rest of a body the app answered without reading. :class:`DeadlineH11Protocol` adds both
deadlines.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from medcl.serve.app import ServeSettings

_HEAD_TIMEOUT_BODY = b'{"detail": "request headers not received in time"}'
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_HEAD_TIMEOUT_BODY), _HEAD_TIMEOUT_BODY)
)


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline whenever no request is being handled on the connection.

    * A request head must arrive within ``head_timeout`` seconds of the connection's start or of the previous
      answer: then the connection is closed, with a 408 when part of a head came, silently when nothing did.
    * A body the service answered without reading (401, 413 or 429 from :class:`~medcl.serve.guards.UploadGuard`)
      is received and dropped, not cut off: closing a socket with unread data makes the kernel reset the
      connection, and the client would lose the answer. Like nginx's lingering close, this drain gets at most
      ``drain_timeout`` seconds; nothing of it is kept (h11 discards body data that arrives after the answer).
    """

    head_timeout: float = 10.0
    drain_timeout: float = 15.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm(self.head_timeout)

    def _arm(self, seconds: float) -> None:
        self._cancel()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _handling_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def handle_events(self) -> None:
        super().handle_events()
        if self._handling_request():  # a complete head arrived: the app and its body timeouts take over
            self._cancel()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            draining = self.conn.their_state is h11.SEND_BODY
            self._arm(self.drain_timeout if draining else self.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._handling_request():
            return
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:  # part of a head came: say why
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def uvicorn_config(app: Any, settings: ServeSettings, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    """The uvicorn configuration ``medcl serve`` runs ``app`` under (limits from ``settings``)."""
    deadlines = {"head_timeout": settings.header_timeout, "drain_timeout": settings.body_idle_timeout}
    protocol = type("MedclH11Protocol", (DeadlineH11Protocol,), deadlines)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        access_log=False,  # replaced by medcl's PHI-free request log
        log_level=log_level,
        timeout_graceful_shutdown=10,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_timeout,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
    )
