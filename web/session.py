"""One WebSocket: a reader, a bounded outbox, and its joined channels.

Fan-out calls `send_frame()`, which never waits: the frames a socket gets
while a fan-out runs are written together right after it (Realtime.flush_soon),
into the socket's transport, whose buffer is the outbox. A client whose backlog passes
OUTBOX_BYTES is too slow and is disconnected with SLOW (it reconnects and
resumes by version) rather than slowing anyone else or growing memory.
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

from hub import db, errors, metrics, policy, protocol
from hub.auth import Principal
from hub.errors import HubError
from hub.events import Event
from web import channels
from web.channels import Binding, Topic

if TYPE_CHECKING:
    from web.realtime import Realtime

log = logging.getLogger("hub.realtime")


class Close(NamedTuple):
    code: int
    reason: str


# The close codes the hub sends. 1012 and 4008 mean "reconnect (elsewhere) and
# resume by version"; 1000 after silence means the client stopped heartbeating.
# (aiohttp itself closes with 1009 on a frame over MAX_FRAME, web/realtime.py.)
RESTART = Close(1012, "service restart: reconnect and resume")
SLOW = Close(4008, "slow consumer: reconnect and resume")
SILENT = Close(1000, "no message within the heartbeat timeout")

OUTBOX_BYTES = 512 * 1024  # unsent bytes one socket may have before it counts as slow
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
    viewer: policy.Caller
    token_exp: int
    bindings: list[Binding]
    broadcast_self: bool = False
    broadcast_ack: bool = False
    # presence key of a caller without a user id (anon): the hub's, per channel
    anon_key: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    # Keyed by the dentist id's int: UUID.__hash__ is a Python call, twice per frame.
    last_version: dict[int, int] = dataclasses.field(default_factory=dict)
    pending: list[Event] | None = None  # live events held back while a replay is sent
    # where catch-up starts for dentists this channel has had no event from (web/catchup.py)
    start: dict[uuid.UUID, int] = dataclasses.field(default_factory=dict)
    # what every event shows on this topic, when that does not depend on the row (policy.fixed_view)
    fixed_view: policy.View | None = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.fixed_view = policy.fixed_view(self.topic.kind)

    @property
    def joined(self) -> bool:
        """Still its socket's channel on the topic: not left, closed or replaced by a rejoin."""
        return self.session.channels.get(self.topic.name) is self

    def deliver(self, event: Event, cache: dict[Any, Any]) -> int:
        """Send what `event` means on this channel, once, in version order;
        returns the frames sent. `cache` holds each frame, ready for the wire,
        per topic and serializer: built by the first subscriber, reused by all."""
        if self.pending is not None:
            self.pending.append(event)
            return 0
        dentist = event.dentist_id.int
        seen = self.last_version.get(dentist)
        if seen is not None and event.version <= seen:
            return 0  # already sent (replay seam)
        self.last_version[dentist] = event.version
        key = (self.topic.name, self.session.vsn)
        frames = cache.get(key)
        if frames is None:
            frames = cache[key] = self._frames(event)
        if frames and (self.fixed_view or policy.view(self.viewer, self.topic.kind, event)) is not policy.View.NONE:
            for frame in frames:
                self.session.send_frame(frame)
            sent = len(frames)
        else:
            sent = 0
        if self.bindings:
            ids = tuple(b.id for b in self.bindings if b.matches(event))
            if ids and policy.view(self.viewer, None, event) is policy.View.FULL:
                pg_key = ("pg", ids, self.topic.name, self.session.vsn)
                frame = cache.get(pg_key)
                if frame is None:
                    frame = cache[pg_key] = protocol.wire(protocol.encode(
                        self.session.vsn, self.topic.name, "postgres_changes",
                        channels.postgres_payload(event, list(ids))))
                self.session.send_frame(frame)
                sent += 1
        return sent

    def _frames(self, event: Event) -> list[bytes]:
        """The hub's broadcasts for `event` on this topic (the same for every subscriber)."""
        kind, vsn, name = self.topic.kind, self.session.vsn, self.topic.name
        if kind == ("availability", "dentist_id"):
            messages = [(change, channels.seed_payload(event, change, new, old))
                        for change, new, old in channels.availability_changes(event)]
        elif kind is not None and kind[0] == "appointments" and event.table_name == "appointments":
            messages = [(event.event_type, channels.seed_payload(event, event.event_type, event.new, event.old))]
        else:
            messages = []
        return [protocol.wire(protocol.encode(vsn, name, "broadcast", payload)) for _, payload in messages]

    def flush_pending(self) -> None:
        held, self.pending = self.pending or [], None
        for event in held:
            metrics.MESSAGES.inc(self.deliver(event, {}))


class Session:
    def __init__(self, ws: web.WebSocketResponse, vsn: str, principal: Principal, realtime: Realtime,
                 transport: asyncio.Transport | None) -> None:
        self.ws = ws
        self._transport = transport
        self.vsn = vsn
        self.principal = principal  # from the apikey; each join may bring its own token
        self.realtime = realtime
        self.id = uuid.uuid4().hex
        self.channels: dict[str, Channel] = {}
        self._closing = False
        self._unsent: list[bytes] = []  # frames of this loop iteration, written together
        self._tokens = PUSH_BURST
        self._refilled = time.monotonic()
        self.close_code: int | None = None

    # ---- writing ---------------------------------------------------------

    def push(self, data: bytes) -> None:
        """Write one encoded message (a reply, a system message)."""
        self.send_frame(protocol.wire(data))
        metrics.MESSAGES.inc()

    def send_frame(self, frame: bytes) -> None:
        """Write a ready WebSocket frame; never waits. The transport's buffer is
        this socket's outbox: past OUTBOX_BYTES the client is too slow and is
        disconnected with SLOW (it reconnects and resumes by version)."""
        transport = self._transport
        if self._closing or transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > OUTBOX_BYTES:
            self.realtime.slow_disconnects += 1
            metrics.OUTBOX_DROPS.inc()
            self.close_soon(SLOW)
            return
        if not self._unsent:
            self.realtime.flush_soon(self)
        self._unsent.append(frame)

    def flush(self) -> None:
        """One write (one system call) for every frame this socket got in this
        loop iteration: a burst of events costs a send, not a send per event."""
        frames, self._unsent = self._unsent, []
        transport = self._transport
        if frames and transport is not None and not transport.is_closing():
            transport.write(b"".join(frames) if len(frames) > 1 else frames[0])

    def close_soon(self, close: Close) -> None:
        if self._closing:
            return
        self._closing = True
        self.close_code = close.code
        metrics.DISCONNECTS.labels(str(close.code)).inc()
        self.realtime.tasks.spawn(self._close(close), "close")
        # A peer that stopped reading never lets the close frame out: cut it off.
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort)

    async def _close(self, close: Close) -> None:
        self.flush()  # what was already accepted goes out before the close frame
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            await asyncio.wait_for(self.ws.close(code=close.code, message=close.reason.encode()), CLOSE_GRACE)

    def _abort(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    # ---- reading -----------------------------------------------------------

    async def run(self) -> None:
        """The one reader of this socket; writes happen in push(). As Phoenix
        does, a client that sends nothing (not even a heartbeat) for
        heartbeat_timeout seconds is closed: WebSocket pongs do not count."""
        silence = self.realtime.silence
        silence.arm(self)
        try:
            async for raw in self.ws:
                silence.rearm(self)
                if raw.type == WSMsgType.TEXT:
                    await self._receive(lambda: protocol.decode_text(raw.data, self.vsn))
                elif raw.type == WSMsgType.BINARY:
                    await self._receive(lambda: protocol.decode_binary(raw.data))
                elif raw.type == WSMsgType.ERROR:
                    break
        finally:
            silence.disarm(self)
            self._closing = True
            for channel in list(self.channels.values()):
                self.realtime.leave(channel)
            self.channels.clear()

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
        except Exception as exc:
            error = db.as_hub_error(exc)  # the database away: an error reply, not a dead socket
            if error is None:  # a bug handling one message fails that message, not the socket
                log.exception("unhandled error on a socket message", extra={"topic": msg.topic, "event": msg.event})
                error = errors.HubError(errors.ErrorCode.INTERNAL_ERROR, "An unexpected error occurred")
            self.push(protocol.reply(self.vsn, msg, "error", {"reason": error.message, **error.body()}))

    def _allow_push(self) -> bool:
        now = time.monotonic()
        self._tokens = min(PUSH_BURST, self._tokens + (now - self._refilled) * PUSH_RATE)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
