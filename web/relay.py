"""Client broadcasts, cluster-wide as in Supabase.

A broadcast goes to this process's sockets on the topic at once and to the
other hub processes through NOTIFY `hub_broadcast` (so a payload must fit in
one: BROADCAST_MAX). It arrives from a joined socket (`broadcast` push) or over
HTTP, as realtime-js `httpSend()` and `send()` before joining post it:
`POST /realtime/v1/api/broadcast` with `{messages: [{topic, event, payload,
private}]}`, or `POST /realtime/v1/api/broadcast/{topic}/events/{event}` with
the payload as the body. Both answer 202 with no body, as Supabase does; both
follow the socket's rules (any valid token, anon too; never on the hub's own
channels).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import msgspec
from aiohttp import web

from hub import errors, protocol
from hub.auth import bearer
from hub.protocol import Message
from web import channels, payloads
from web.session import Channel

BROADCAST_MAX = 7000  # bytes: a client broadcast is relayed through NOTIFY (8000-byte limit)
BATCH_MAX = 100       # messages in one HTTP request

FanOut = Callable[..., None]  # (canonical, event, payload, skip=, clients_only=)


class _HttpMessage(msgspec.Struct):
    topic: str
    event: str
    payload: Any = None
    private: bool = False


class _Batch(msgspec.Struct):
    messages: list[_HttpMessage]


class _Push(msgspec.Struct, frozen=True, gc=False):
    """A `broadcast` pushed on a joined socket (`type` is not read)."""
    event: str
    payload: Any = None


def _no_event() -> errors.HubError:
    return errors.invalid("broadcast needs an event name", field="event")


_REFUSALS: dict[str, payloads.Refusal] = {"event": lambda *_: _no_event()}


class Relay:
    def __init__(self, origin: str, fan_out: FanOut, notify: Callable[[str, list[str]], Awaitable[None]]) -> None:
        self.origin = origin
        self._fan_out = fan_out
        self._notify = notify

    def _encode(self, canonical: str, event: str, body: Any) -> str:
        """The relayed form, checked: raises for an empty event or an oversized payload."""
        if not event:
            raise _no_event()
        relay = msgspec.json.encode({"origin": self.origin, "topic": canonical, "event": event, "payload": body})
        if len(relay) > BROADCAST_MAX:
            raise errors.HubError(errors.ErrorCode.PAYLOAD_TOO_LARGE,
                                  f"a broadcast payload must stay under {BROADCAST_MAX} bytes")
        return relay.decode()

    async def from_socket(self, channel: Channel, msg: Message) -> None:
        if channel.topic.kind is not None:
            raise errors.forbidden("clients cannot broadcast on the hub's own channels")
        push = payloads.decode(msg.payload, _Push, _REFUSALS)
        relay = self._encode(channel.topic.canonical, push.event, push.payload)
        self.deliver(channel.topic.canonical, push.event, push.payload,
                     skip=None if channel.broadcast_self else channel)
        await self._notify("hub_broadcast", [relay])
        if channel.broadcast_ack and msg.ref is not None:
            channel.session.push(protocol.reply(channel.session.vsn, msg, "ok", {}))

    async def from_http(self, messages: list[_HttpMessage]) -> None:
        """All or nothing: every message is checked before any is sent."""
        if not messages or len(messages) > BATCH_MAX:
            raise errors.invalid(f"messages must hold 1 to {BATCH_MAX} broadcasts", field="messages")
        relayed = []
        for message in messages:
            topic = channels.parse_topic(message.topic)
            if topic.kind is not None:
                raise errors.forbidden("clients cannot broadcast on the hub's own channels")
            relayed.append((topic.canonical, message, self._encode(topic.canonical, message.event, message.payload)))
        for canonical, message, _ in relayed:
            self.deliver(canonical, message.event, message.payload)
        await self._notify("hub_broadcast", [r for _, _, r in relayed])

    def on_relayed(self, raw: str) -> None:
        """A client broadcast made on another hub process."""
        relayed = msgspec.json.decode(raw)
        if relayed.get("origin") != self.origin:
            self.deliver(str(relayed["topic"]), str(relayed["event"]), relayed.get("payload"))

    def deliver(self, canonical: str, event: str, body: Any, skip: Channel | None = None) -> None:
        self._fan_out(canonical, "broadcast", {"type": "broadcast", "event": event, "payload": body}, skip,
                      clients_only=True)


def routes(relay: Callable[[web.Request], Relay], verify: Callable[[str | None], Any]) -> list[web.RouteDef]:
    """The HTTP side; `verify(token)` raises UNAUTHORIZED for a bad token."""

    async def authenticate(request: web.Request) -> None:
        verify(bearer(request.headers.get("Authorization")) or request.headers.get("apikey"))

    async def batch(request: web.Request) -> web.Response:
        await authenticate(request)
        try:
            body = msgspec.json.decode(await request.read() or b"null", type=_Batch)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise errors.from_validation(exc) from None
        await relay(request).from_http(body.messages)
        return web.Response(status=202)

    async def single(request: web.Request) -> web.Response:
        await authenticate(request)
        try:
            payload = msgspec.json.decode(await request.read() or b"null")
        except msgspec.DecodeError as exc:
            raise errors.from_validation(exc) from None
        await relay(request).from_http([_HttpMessage(request.match_info["topic"], request.match_info["event"],
                                                     payload)])
        return web.Response(status=202)

    return [web.post("/realtime/v1/api/broadcast", batch),
            web.post("/realtime/v1/api/broadcast/{topic}/events/{event}", single)]
