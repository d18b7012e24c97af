"""One WebSocket: a reader, a writer with a bounded outbox, and its joined channels.

Fan-out calls `push()`, which never waits: a client whose outbox is full is
too slow, and is disconnected with SLOW (it reconnects and resumes by
version) rather than slowing anyone else or growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp import WSMsgType, web

from hub import errors, metrics, protocol
from hub.auth import Principal
from hub.errors import HubError
from hub.events import Event
from web import channels
from web.channels import Binding, Topic, Viewer

if TYPE_CHECKING:
    from web.realtime import Realtime

log = logging.getLogger("hub.realtime")


class Close(NamedTuple):
    code: int
    reason: str


# Close codes. 1012 and 4008 mean "reconnect (elsewhere) and resume by version";
# 4001 means "get a new token first"; 1008/1009 mean "fix the client".
GOING_AWAY = Close(1001, "server shutting down")
POLICY = Close(1008, "protocol violation")
RESTART = Close(1012, "service restart: reconnect and resume")
UNAUTHORIZED = Close(4001, "token expired or invalid")
SLOW = Close(4008, "slow consumer: reconnect and resume")

OUTBOX = 1024           # frames queued for one socket before it counts as slow
MAX_CHANNELS = 100      # channels one socket may join
PUSH_RATE = 50.0        # client pushes per second, sustained
PUSH_BURST = 100.0
CLOSE_GRACE = 2.0       # seconds a closing peer gets to take the close frame


@dataclasses.dataclass(eq=False)
class Channel:
    """A channel this socket joined."""

    session: Session
    topic: Topic
    join_ref: str | None
    viewer: Viewer
    token_exp: int
    bindings: list[Binding]
    broadcast_self: bool = False
    broadcast_ack: bool = False
    presence_key: str = ""
    last_version: dict[uuid.UUID, int] = dataclasses.field(default_factory=dict)
    pending: list[Event] | None = None  # live events held back while a replay is sent

    def deliver(self, event: Event, cache: dict[Any, Any]) -> None:
        """Send what `event` means on this channel, once, in version order."""
        if self.pending is not None:
            self.pending.append(event)
            return
        seen = self.last_version.get(event.dentist_id)
        if seen is not None and event.version <= seen:
            return  # already sent (replay seam)
        self.last_version[event.dentist_id] = event.version
        vsn, kind = self.session.vsn, self.topic.kind
        if kind == ("availability", "dentist_id"):
            changes = cache.get(("availability", id(event)))
            if changes is None:
                changes = cache[("availability", id(event))] = channels.availability_changes(event)
            for i, (name, new, old) in enumerate(changes):
                self._send(cache, ("a", i), name, lambda: channels.seed_payload(event, name, new, old))
        elif kind is not None and kind[0] == "appointments" and event.table_name == "appointments":
            if self.viewer.sees(event):
                self._send(cache, "full", event.event_type,
                           lambda: channels.seed_payload(event, event.event_type, event.new, event.old))
        if self.bindings:
            ids = [b.id for b in self.bindings if b.matches(event)]
            if ids and self.viewer.sees(event):
                key = ("pg", tuple(ids), self.topic.name, vsn)
                frame = cache.get(key)
                if frame is None:
                    frame = cache[key] = protocol.encode(vsn, self.topic.name, "postgres_changes",
                                                         channels.postgres_payload(event, ids))
                self.session.push(frame)

    def _send(self, cache: dict[Any, Any], variant: Any, name: str, payload: Any) -> None:
        key = (variant, self.topic.name, self.session.vsn)
        frame = cache.get(key)
        if frame is None:
            frame = cache[key] = protocol.encode(self.session.vsn, self.topic.name, "broadcast", payload())
        self.session.push(frame)

    def flush_pending(self) -> None:
        held, self.pending = self.pending or [], None
        for event in held:
            self.deliver(event, {})


class Session:
    def __init__(self, ws: web.WebSocketResponse, vsn: str, principal: Principal, realtime: Realtime,
                 transport: Any = None) -> None:
        self.ws = ws
        self._transport = transport
        self.vsn = vsn
        self.principal = principal  # from the apikey; each join may bring its own token
        self.realtime = realtime
        self.id = uuid.uuid4().hex
        self.channels: dict[str, Channel] = {}
        self._outbox: asyncio.Queue[bytes | Close] = asyncio.Queue(OUTBOX)
        self._closing = False
        self._tokens = PUSH_BURST
        self._refilled = time.monotonic()
        self.close_code: int | None = None

    # ---- writing ---------------------------------------------------------

    def push(self, frame: bytes) -> None:
        """Queue a frame; never waits. A full outbox disconnects the client as SLOW."""
        if self._closing:
            return
        try:
            self._outbox.put_nowait(frame)
            metrics.MESSAGES.inc()
        except asyncio.QueueFull:
            self.realtime.slow_disconnects += 1
            metrics.OUTBOX_DROPS.inc(self._outbox.qsize())
            self.close_soon(SLOW)

    def close_soon(self, close: Close) -> None:
        if self._closing:
            return
        self._closing = True
        metrics.DISCONNECTS.labels(str(close.code)).inc()
        while not self._outbox.empty():  # a slow client will not read the backlog anyway
            self._outbox.get_nowait()
        self._outbox.put_nowait(close)
        # A peer that stopped reading never lets the close frame out: cut it off.
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        if not self.ws.closed and self._transport is not None:
            self._transport.abort()

    async def _write_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item, Close):
                self.close_code = item.code
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ws.close(code=item.code, message=item.reason.encode()), CLOSE_GRACE)
                return
            await self.ws.send_str(item.decode())

    # ---- reading -----------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_loop(), name=f"ws-writer:{self.id}")
        try:
            async for raw in self.ws:
                if raw.type == WSMsgType.TEXT:
                    await self._receive_text(raw.data)
                elif raw.type == WSMsgType.BINARY:
                    await self._receive(lambda: protocol.decode_binary(raw.data))
                elif raw.type == WSMsgType.ERROR:
                    break
                if writer.done():
                    break
        finally:
            self._closing = True
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            for channel in list(self.channels.values()):
                self.realtime.leave(channel)
            self.channels.clear()

    async def _receive_text(self, data: str) -> None:
        await self._receive(lambda: protocol.decode_text(data, self.vsn))

    async def _receive(self, decode: Any) -> None:
        try:
            msg = decode()
        except protocol.ProtocolError as exc:
            # Not even a message: nothing to reply to. Say why on the socket and go on.
            self.push(protocol.encode(self.vsn, "phoenix", "phx_error", {"reason": str(exc)}))
            return
        if not self._allow_push():
            self.push(protocol.reply(self.vsn, msg, "error", errors.HubError(
                errors.ErrorCode.RATE_LIMITED, f"more than {PUSH_RATE:.0f} messages per second").body()))
            return
        try:
            await self.realtime.handle(self, msg)
        except HubError as exc:
            self.push(protocol.reply(self.vsn, msg, "error", {"reason": exc.message, **exc.body()}))

    def _allow_push(self) -> bool:
        now = time.monotonic()
        self._tokens = min(PUSH_BURST, self._tokens + (now - self._refilled) * PUSH_RATE)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
