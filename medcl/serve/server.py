"""uvicorn under medcl's connection limits: what uvicorn enforces itself, plus a deadline for request heads.

uvicorn bounds connections (``limit_concurrency``: 503 past it), idle keep-alive connections
(``timeout_keep_alive``) and the size of a request head (h11's ``max_incomplete_event_size``: 400 past it), but it
waits forever for a head that trickles in or never comes, and the ASGI app only sees a request once its head is
complete. :class:`HeadTimeoutH11Protocol` closes such connections: with a 408 when part of a head came, silently
when nothing did (an idle connection).
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


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline (``head_timeout`` s) for each request head, counted from the
    connection's start or the end of the previous response."""

    head_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a complete head arrived
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a head came: tell the client why it is cut
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def uvicorn_config(app: Any, settings: ServeSettings, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    """The uvicorn configuration ``medcl serve`` runs ``app`` under (limits from ``settings``)."""
    protocol = type("MedclH11Protocol", (HeadTimeoutH11Protocol,), {"head_timeout": settings.header_timeout})
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
