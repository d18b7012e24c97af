"""Presence, cluster-wide as in Supabase: a view of every hub process's
trackers, each process the only writer of its own.

Changes travel through NOTIFY `hub_presence`. Since a NOTIFY can be missed (a
listener reconnecting, a process killed), each process also re-announces all
of its presences every period and the others replace their copy, so every
view converges within a period.

Who a presence is belongs to the hub, not the client: the key is the caller's
user id (a per-channel id for callers without one), and `user_id` and `role`
in each meta come from the token and override whatever the client sent, so
nobody can appear as someone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Awaitable, Callable

import msgspec

from hub import errors, protocol
from hub.aio import wait_event
from hub.protocol import Message
from web import payloads
from web.session import Channel

log = logging.getLogger("hub.realtime")

PRESENCE_PERIOD = 15.0  # seconds between a process's announcements of all its presences
PRESENCE_MISSED = 3     # announcements a process may miss before its presences leave (45 s by default)
PRESENCE_MAX = 7000     # bytes of one relayed track (topic, key and meta), under NOTIFY's 8000
PRESENCE_PART = 7600    # bytes of presences per announcement message; one track always fits
META_MAX = 4096         # bytes of a client's presence payload


class _Relayed(msgspec.Struct, tag_field="op"):
    origin: str  # the hub process that sent it (Realtime.origin)


class _Track(_Relayed, tag="track"):
    """One tracker's presence on a canonical topic; `meta` None is an untrack."""
    topic: str
    id: str
    key: str
    meta: dict[str, Any] | None


class _State(_Relayed, tag="state"):
    """All of the origin's presences, in parts that each fit a NOTIFY (sent in
    one transaction, so in order). `every` is the origin's period: the others
    give up on it after PRESENCE_MISSED of them."""
    part: int
    last: bool
    every: float
    presences: list[tuple[str, str, str, dict[str, Any]]]  # (topic, id, key, meta)


class _Sync(_Relayed, tag="sync"):
    """Sent on (re)connect: every process announces its presences at once."""


_decode_presence = msgspec.json.Decoder(_Track | _State | _Sync).decode


class _Push(msgspec.Struct, frozen=True, gc=False, tag_field="event"):
    """A `presence` push from a client (realtime-js `track()`, `untrack()`); `type` is not read."""


class _TrackPush(_Push, tag="track"):
    payload: dict[str, Any] | None = None  # the client's meta


class _UntrackPush(_Push, tag="untrack"):
    pass


def _bad_meta() -> errors.HubError:
    return errors.invalid("presence payload must be an object under 4 KiB", field="payload")


_REFUSALS: dict[str, payloads.Refusal] = {
    "event": lambda *_: errors.invalid("presence event must be track or untrack", field="event"),
    "payload": lambda *_: _bad_meta(),
}


def identity(channel: Channel) -> tuple[str, dict[str, Any]]:
    """The presence key and the metas' `user_id` and `role`, from the channel's
    current token and roles: a signed-in caller is keyed by their user id; one
    without (anon, a service token with no subject) by the channel's own id."""
    p = channel.viewer.principal
    if p.is_service:
        role = "service_role"
    else:
        role = next((r for r in ("admin", "dentist", "patient") if p.has_role(r)), p.claims.role)
    key = str(p.user_id) if p.user_id is not None else channel.anon_key
    return key, {"user_id": None if p.user_id is None else str(p.user_id), "role": role}


def _who(meta: dict[str, Any]) -> dict[str, Any]:
    return {"user_id": meta.get("user_id"), "role": meta.get("role")}


class Presence:
    def __init__(self, origin: str, fan_out: Callable[[str, str, Any], None],
                 notify: Callable[[str, list[str]], Awaitable[None]],
                 db_errors: tuple[type[BaseException], ...]) -> None:
        self.origin = origin
        self._fan_out = fan_out  # (canonical topic, event, payload) to this process's sockets
        self._notify = notify    # (NOTIFY channel, payloads) to every process
        self._db_errors = db_errors
        # origin -> canonical topic -> tracker id -> (key, meta), this process's own included
        self._presence: dict[str, dict[str, dict[str, tuple[str, dict[str, Any]]]]] = {}
        self._trackers: dict[Channel, tuple[str, dict[str, Any]]] = {}  # local: tracker id, client's meta
        self._expires: dict[str, float] = {}  # other origins -> loop time their presences leave unless heard
        self._parts: dict[str, tuple[int, list[tuple[str, str, str, dict[str, Any]]]]] = {}  # announcements
        self._outbox: list[str] = []  # presence messages for relay() to send, in order
        self._wake = asyncio.Event()
        self._next_round = 0.0  # loop time of this process's next announcement

    def state(self, canonical: str) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for topics in self._presence.values():
            for key, meta in topics.get(canonical, {}).values():
                state.setdefault(key, {"metas": []})["metas"].append(meta)
        return state

    def push(self, channel: Channel, msg: Message) -> None:
        push = payloads.decode(msg.payload, _TrackPush | _UntrackPush, _REFUSALS)
        if isinstance(push, _TrackPush):
            meta = push.payload or {}
            if len(msgspec.json.encode(meta)) > META_MAX:
                raise _bad_meta()
            self._track(channel, meta)
        else:
            self.untrack(channel)
        if msg.ref is not None:
            channel.session.push(protocol.reply(channel.session.vsn, msg, "ok", {}))

    def _track(self, channel: Channel, meta: dict[str, Any]) -> None:
        canonical = channel.topic.canonical
        tracker = self._trackers[channel][0] if channel in self._trackers else uuid.uuid4().hex[:16]
        previous = self._presence.get(self.origin, {}).get(canonical, {}).get(tracker)
        key, who = identity(channel)
        entry = {**meta, **who, "phx_ref": uuid.uuid4().hex[:20]}
        if previous is not None:
            entry["phx_ref_prev"] = previous[1]["phx_ref"]
        relay = msgspec.json.encode(_Track(self.origin, canonical, tracker, key, entry))
        if len(relay) > PRESENCE_MAX:
            raise errors.HubError(errors.ErrorCode.PAYLOAD_TOO_LARGE,
                                  f"a presence key and payload must stay under {PRESENCE_MAX} bytes")
        self._trackers[channel] = (tracker, meta)
        self._apply(self.origin, [(canonical, tracker, (key, entry))])
        self._send(relay)

    def retrack(self, channel: Channel) -> None:
        """The channel's caller changed (a new token, new roles): its presence
        follows, under the new identity, with the client's own meta kept."""
        if channel in self._trackers:
            tracker = self._trackers[channel][0]
            previous = self._presence.get(self.origin, {}).get(channel.topic.canonical, {}).get(tracker)
            if previous is None or (previous[0], _who(previous[1])) != identity(channel):
                self._track(channel, self._trackers[channel][1])

    def untrack(self, channel: Channel) -> None:
        tracked = self._trackers.pop(channel, None)
        if tracked is not None:
            canonical = channel.topic.canonical
            self._apply(self.origin, [(canonical, tracked[0], None)])
            self._send(msgspec.json.encode(_Track(self.origin, canonical, tracked[0], "", None)))

    def _apply(self, origin: str, changes: list[tuple[str, str, tuple[str, dict[str, Any]] | None]]) -> None:
        """Set (or, with None, clear) trackers of `origin`, then send each topic's
        local sockets one `presence_diff` with what really changed."""
        topics = self._presence.setdefault(origin, {})
        diffs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for canonical, tracker, entry in changes:
            trackers = topics.setdefault(canonical, {})
            old = trackers.pop(tracker, None)
            if entry is not None:
                trackers[tracker] = entry
            elif not trackers:
                del topics[canonical]
            if old == entry:
                continue
            for side, item in zip(diffs.setdefault(canonical, ({}, {})), (entry, old)):
                if item is not None:
                    side.setdefault(item[0], {"metas": []})["metas"].append(item[1])
        for canonical, (joins, leaves) in diffs.items():
            self._fan_out(canonical, "presence_diff", {"joins": joins, "leaves": leaves})

    def _replace(self, origin: str, presences: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        """`origin` holds exactly `presences` now."""
        new = {(canonical, tracker): (key, meta) for canonical, tracker, key, meta in presences}
        changes: list[tuple[str, str, tuple[str, dict[str, Any]] | None]] = [
            (canonical, tracker, None) for canonical, trackers in self._presence.get(origin, {}).items()
            for tracker in trackers if (canonical, tracker) not in new]
        self._apply(origin, changes + [(canonical, tracker, entry) for (canonical, tracker), entry in new.items()])

    # ---- presence across processes ----------------------------------------------

    def _send(self, message: bytes) -> None:
        self._outbox.append(message.decode())
        self._wake.set()

    def request(self) -> None:
        """On (re)connecting the listener: we may have missed changes, so ask
        every process (ourselves too) to announce its presences now."""
        self._send(msgspec.json.encode(_Sync(self.origin)))
        self._next_round = 0.0

    def on_relayed(self, raw: str) -> None:
        """A presence change, announcement or sync request from a hub process."""
        try:
            msg = _decode_presence(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("ignored a malformed hub_presence payload: %.200s", raw)
            return
        if msg.origin == self.origin:
            return
        now = asyncio.get_running_loop().time()
        self._wake.set()  # relay() looks again: a sync request, or a new deadline
        if isinstance(msg, _Sync):
            self._next_round = 0.0
        elif isinstance(msg, _Track):
            self._expires.setdefault(msg.origin, now + PRESENCE_MISSED * PRESENCE_PERIOD)
            self._apply(msg.origin, [(msg.topic, msg.id, None if msg.meta is None else (msg.key, msg.meta))])
        else:
            self._expires[msg.origin] = now + PRESENCE_MISSED * msg.every
            expected, held = self._parts.pop(msg.origin, (0, []))
            if msg.part == 0:
                held = []
            elif msg.part != expected:
                return  # a part went missing: the next announcement repairs it
            held += msg.presences
            if msg.last:
                self._replace(msg.origin, held)
            else:
                self._parts[msg.origin] = (msg.part + 1, held)

    def _announcement(self) -> list[str]:
        parts: list[list[tuple[str, str, str, dict[str, Any]]]] = [[]]
        size = 0
        for canonical, trackers in self._presence.get(self.origin, {}).items():
            for tracker, (key, meta) in trackers.items():
                entry = (canonical, tracker, key, meta)
                length = len(msgspec.json.encode(entry)) + 1
                if parts[-1] and size + length > PRESENCE_PART:
                    parts.append([])
                    size = 0
                parts[-1].append(entry)
                size += length
        return [msgspec.json.encode(_State(self.origin, i, i == len(parts) - 1, PRESENCE_PERIOD, part)).decode()
                for i, part in enumerate(parts)]

    def _forget(self, origin: str) -> None:
        log.info("hub process %s silent for %d presence periods: its presences leave", origin, PRESENCE_MISSED)
        self._replace(origin, [])
        self._presence.pop(origin, None)
        self._expires.pop(origin, None)
        self._parts.pop(origin, None)

    async def relay(self) -> None:
        """The one sender of this process's presence messages, so they arrive in
        order: changes as they happen, all presences every PRESENCE_PERIOD (which
        also says we are alive); and presences of silent processes leave. A failed
        send is not retried: the next announcement repairs it."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                now = loop.time()
                if now >= self._next_round:
                    self._next_round = now + PRESENCE_PERIOD
                    self._outbox += self._announcement()
                for origin in [o for o, deadline in self._expires.items() if deadline <= now]:
                    self._forget(origin)
                if self._outbox:
                    batch, self._outbox = self._outbox, []
                    try:
                        await self._notify("hub_presence", batch)
                    except self._db_errors as exc:
                        log.warning("could not relay presence to the other hub processes: %s", exc)
                    continue
                self._wake.clear()
                await wait_event(self._wake, min([self._next_round, *self._expires.values()]) - now)
        finally:  # stopping: our presences leave now, not PRESENCE_MISSED periods later
            gone = msgspec.json.encode(_State(self.origin, 0, True, PRESENCE_PERIOD, [])).decode()
            with contextlib.suppress(*self._db_errors):
                await asyncio.wait_for(self._notify("hub_presence", [gone]), 1.0)

