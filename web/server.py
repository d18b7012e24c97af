"""HTTP connections: JSON for the parser's refusals, a header-read timeout and
a cap on connections per client address.

aiohttp answers a request its parser refuses (a URL or header past 8 KB, a
malformed request line or header) from the connection handler, before any
middleware runs, as `400 text/plain`. `HubRequestHandler` renders those in the
hub's error body instead (414 for the URL, 431 for headers, 400 otherwise),
closes connections that do not finish their headers within
HEADER_TIMEOUT_SECONDS, and refuses connections past MAX_CONNECTIONS_PER_IP
with a JSON 503 before reading anything. `serve()` is aiohttp's `run_app`
with this handler: aiohttp has no setting for the handler class, so the
listening socket is made here and every connection still belongs to the
runner's server (graceful shutdown and connection tracking are aiohttp's).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_runner import GracefulExit

from hub.aio import Deadlines
from hub.config import Settings
from hub.errors import ErrorCode, HubError
from web._http import json

log = logging.getLogger("hub.http")

MAX_LINE = 8190  # aiohttp's default limits on the request line and each header


_URL = re.compile(rb"^(/|\*|https?://|[A-Z]+ )")


def _refusal(status: int, exc: BaseException | None) -> tuple[int, ErrorCode, str]:
    """Status, code and message for a request aiohttp refused (or a handler failed) before our middleware."""
    if status >= 500:
        return 500, ErrorCode.INTERNAL_ERROR, "An unexpected error occurred"
    if isinstance(exc, LineTooLong):
        line = exc.args[0] if exc.args and isinstance(exc.args[0], (bytes, bytearray)) else b""
        if _URL.match(line):
            return 414, ErrorCode.VALIDATION_ERROR, f"The URL is longer than {exc.args[1]} bytes"
        return 431, ErrorCode.VALIDATION_ERROR, f"A request header is longer than {exc.args[1]} bytes"
    if "Too many headers" in str(exc):
        return 431, ErrorCode.VALIDATION_ERROR, "The request has too many headers"
    if status == 413:
        return 413, ErrorCode.PAYLOAD_TOO_LARGE, "Request body is too large"
    reason = getattr(exc, "message", None) or str(exc or "bad request")
    return status, ErrorCode.VALIDATION_ERROR, f"Malformed HTTP request: {reason}"[:300]


class Connections:
    """Open connections per client address, and those waiting for a request's
    headers, shared by a process's handlers."""

    def __init__(self, per_ip: int, header_timeout: float) -> None:
        self.per_ip = per_ip
        self.open: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self.awaiting_headers = Deadlines(header_timeout, HubRequestHandler.header_timed_out)

    def admit(self, ip: str) -> bool:
        if self.per_ip and self.open[ip] >= self.per_ip:
            self.refused += 1
            return False
        self.open[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.open[ip] -= 1
        if self.open[ip] <= 0:
            del self.open[ip]


class HubRequestHandler(RequestHandler):
    def __init__(self, *args: Any, connections: Connections, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections = connections
        self._ip: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "unix"
        if not self._connections.admit(ip):
            # Refused before anything is read or a task is started: one write and close.
            body = json(HubError(ErrorCode.SERVICE_UNAVAILABLE, "Too many connections from your address",
                                 {"max_connections_per_ip": self._connections.per_ip}).body(), 503).body
            assert isinstance(body, bytes)
            head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
            transport.write(head.encode() + body)  # type: ignore[attr-defined]
            transport.close()
            return
        self._ip = ip
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._ip is None:
            return  # refused in connection_made: aiohttp never saw it
        self._connections.release(self._ip)
        self._ip = None
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._ip is None:
            return
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:  # a request's headers are complete (or refused)
            self._cancel_header_timer()
        elif not self._request_in_progress and self._payload_parser is None and not self._upgraded:
            self._arm_header_timer()  # the first bytes of the next request on a kept-alive connection

    def _arm_header_timer(self) -> None:
        if self.transport is not None:
            self._connections.awaiting_headers.arm(self)

    def _cancel_header_timer(self) -> None:
        self._connections.awaiting_headers.disarm(self)

    def header_timed_out(self) -> None:
        if not self._request_in_progress and self.transport is not None:
            log.info("closed a connection that sent no complete headers in %ss",
                     self._connections.awaiting_headers.timeout)
            self.force_close()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """The parser's refusals and the errors no middleware caught, in the hub's error body."""
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:
            log.info("refused a malformed request: %s", exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started")
        status, code, text = _refusal(status, exc)
        response = json(HubError(code, text).body(), status)
        response.force_close()
        return response


def serve(app: web.Application, settings: Settings, *, reuse_port: bool, shutdown_timeout: float,
          loop: asyncio.AbstractEventLoop) -> None:
    """Serve `app` until SIGINT/SIGTERM, as `web.run_app` does (same shutdown order)."""
    main = loop.create_task(_serve(app, settings, reuse_port, shutdown_timeout))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError, GracefulExit):
                loop.run_until_complete(main)
        rest = asyncio.all_tasks(loop)
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _serve(app: web.Application, settings: Settings, reuse_port: bool, shutdown_timeout: float) -> None:
    runner = web.AppRunner(app, handle_signals=True, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    listening: asyncio.AbstractServer | None = None
    try:
        server, loop = runner.server, asyncio.get_running_loop()
        assert server is not None
        connections = Connections(settings.max_connections_per_ip, settings.header_timeout_seconds)

        def handler() -> HubRequestHandler:
            return HubRequestHandler(server, loop=loop, access_log=None, keepalive_timeout=75,
                                     connections=connections)

        listening = await loop.create_server(handler, settings.host, settings.port, reuse_address=True,
                                             reuse_port=reuse_port or None, backlog=128)
        while True:
            await asyncio.sleep(3600)
    finally:
        if listening is not None:
            listening.close()  # stop accepting first, as a site's stop() does
        await runner.cleanup()

