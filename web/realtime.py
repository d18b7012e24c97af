"""`/realtime/v1/websocket`: Supabase Realtime's protocol over the hub's events.

Routing: every event from the feed goes to the channels indexed under its
dentist, its patient and its table; each channel decides what it means for
its caller (`web/session.py` Channel.deliver), and the frames are encoded
once per topic and serializer.

Client broadcasts and presence are cluster-wide, as in Supabase: they travel
between hub processes through NOTIFY (`hub_broadcast`, `hub_presence`).
Presence is a view of every process's trackers, each process the only writer
of its own; since a NOTIFY can be missed (a listener reconnecting, a process
killed), each process also re-announces all of its presences every period and
the others replace their copy, so every view converges within a period.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from hub import db, errors, events, metrics, protocol
from hub.auth import Principal, verify_token
from hub.booking import Booking
from hub.errors import HubError
from hub.events import Event
from hub.protocol import Message
from hub.users import Principals
from web import channels
from web.channels import Viewer
from web.commands import COMMANDS
from web.session import MAX_CHANNELS, RESTART, Channel, Session

log = logging.getLogger("hub.realtime")

REPLAY_LIMIT = 1000   # a client further behind than this reloads instead
BROADCAST_MAX = 7000  # bytes: a client broadcast is relayed through NOTIFY (8000-byte limit)
MAX_FRAME = 64 * 1024
PRESENCE_PERIOD = 15.0  # seconds between a process's announcements of all its presences
PRESENCE_MISSED = 3     # announcements a process may miss before its presences leave (45 s by default)
PRESENCE_MAX = 7000     # bytes of one relayed track (topic, key and meta), under NOTIFY's 8000
PRESENCE_PART = 7600    # bytes of presences per announcement message; one track always fits

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


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


class Realtime:
    def __init__(self, pool: asyncpg.Pool, principals: Principals, booking: Booking, secret: str) -> None:
        self._pool = pool
        self._principals = principals
        self._booking = booking
        self._secret = secret
        self.sessions: set[Session] = set()
        # channel indexes: by canonical topic, and by table for postgres_changes
        self._by_topic: dict[str, set[Channel]] = collections.defaultdict(set)
        self._by_table: dict[str, set[Channel]] = collections.defaultdict(set)
        # Dentists a join found: the hub never deletes one, so the next join to
        # their channels needs no round trip (a reconnect storm is thousands).
        self._dentists: set[uuid.UUID] = set()
        self.origin = uuid.uuid4().hex  # this process, to skip its own relayed messages
        # presence: origin -> canonical topic -> tracker id -> (key, meta), this process's own included
        self._presence: dict[str, dict[str, dict[str, tuple[str, dict[str, Any]]]]] = {}
        self._trackers: dict[Channel, str] = {}  # local channels that track, and their tracker ids
        self._expires: dict[str, float] = {}  # other origins -> loop time their presences leave unless heard
        self._parts: dict[str, tuple[int, list[tuple[str, str, str, dict[str, Any]]]]] = {}  # announcements
        self._outbox: list[str] = []  # presence messages for relay_presence to send, in order
        self._wake = asyncio.Event()
        self._next_round = 0.0  # loop time of this process's next announcement
        self.slow_disconnects = 0
        self.delivered = 0
        self._latencies: dict[int, int] = {}  # event id -> ms from commit to the last local hand-off
        self._unflushed: list[Session] = []  # sessions with frames for the next flush (flush_soon)

    # ---- fan-out ---------------------------------------------------------

    def on_event(self, event: Event) -> None:
        targets: set[Channel] = set()
        d = event.dentist_id
        targets |= self._by_topic.get(f"availability:dentist_id={d}", set())
        if event.table_name == "appointments":
            targets |= self._by_topic.get(f"appointments:dentist_id={d}", set())
            for row in (event.new, event.old):
                if row is not None:
                    targets |= self._by_topic.get(f"appointments:patient_id={row['patient_id']}", set())
        targets |= self._by_table.get(event.table_name, set())
        cache: dict[Any, Any] = {}
        sent = 0
        for channel in targets:
            sent += channel.deliver(event, cache)
        self.delivered += sent
        metrics.MESSAGES.inc(sent)
        if targets:
            lag = (datetime.now(timezone.utc) - event.created_at).total_seconds() * 1000
            self._latencies[event.id] = max(self._latencies.get(event.id, 0), round(lag))
            metrics.BROADCAST_LATENCY.observe(max(lag, 0) / 1000)

    def flush_soon(self, session: Session) -> None:
        """Flush `session` in one callback queued behind the running ones, with
        every other socket the fan-out touched: one callback, not one per socket."""
        if not self._unflushed:
            asyncio.get_running_loop().call_soon(self._flush)
        self._unflushed.append(session)

    def _flush(self) -> None:
        sessions, self._unflushed = self._unflushed, []
        for session in sessions:
            session.flush()

    async def record_latencies(self, every: float = 1.0) -> None:
        """Write realtime_events.broadcast_latency_ms in batches (the largest
        any process saw wins), so the log shows how long delivery took."""
        while True:
            await asyncio.sleep(every)
            if not self._latencies:
                continue
            batch, self._latencies = self._latencies, {}
            try:
                await self._pool.execute(
                    "UPDATE public.realtime_events e SET broadcast_latency_ms = greatest(e.broadcast_latency_ms, v.ms) "
                    "FROM unnest($1::bigint[], $2::int[]) AS v(id, ms) WHERE e.id = v.id",
                    list(batch), list(batch.values()))
            except _DB_ERRORS as exc:
                log.warning("could not record broadcast latencies: %s", exc)

    async def on_notification(self, notification_id: uuid.UUID, user_id: uuid.UUID) -> None:
        subscribers = self._by_topic.get(f"notifications:user_id={user_id}")
        if not subscribers:
            return
        # Read as each subscriber (once per distinct token claims): the database's
        # policies, the hub's and the clinic's own, decide what the socket sends.
        rows: dict[str, Any] = {}
        for channel in list(subscribers):
            who = channel.viewer.principal
            claims = db.claims_json(who)
            if claims not in rows:
                async with db.as_caller(self._pool, who) as con:
                    rows[claims] = await con.fetchrow("SELECT id, user_id, kind, title, body, data, read_at, "
                                                      "created_at FROM public.notifications WHERE id = $1",
                                                      notification_id)
            if rows[claims] is not None:
                channel.session.push(protocol.encode(channel.session.vsn, channel.topic.name, "broadcast", {
                    "type": "broadcast", "event": "INSERT",
                    "payload": {"event": "INSERT", "new": dict(rows[claims]), "old": None}}))

    # ---- sessions ----------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """Authenticate by the `apikey` query parameter, then speak Phoenix."""
        vsn = request.query.get("vsn", protocol.V1)
        if vsn not in protocol.VERSIONS:
            raise errors.invalid(f"vsn must be one of {', '.join(protocol.VERSIONS)}", field="vsn", location="query")
        claims = verify_token(self._secret, request.query.get("apikey")
                              or (request.headers.get("Authorization", "").partition(" ")[2] or None))
        principal = await self._principals.get(claims)
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME, compress=False)
        await ws.prepare(request)
        session = Session(ws, vsn, principal, self, request.transport)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
        return ws

    async def close_all(self) -> None:
        """On shutdown: tell every client to reconnect elsewhere and resume."""
        for session in list(self.sessions):
            session.close_soon(RESTART)
        if self.sessions:
            await asyncio.sleep(0.2)

    def leave(self, channel: Channel) -> None:
        canonical = channel.topic.canonical
        self._by_topic.get(canonical, set()).discard(channel)
        for binding in channel.bindings:
            self._by_table.get(binding.table, set()).discard(channel)
        self._untrack(channel)

    # ---- messages ------------------------------------------------------------

    async def handle(self, session: Session, msg: Message) -> None:
        if msg.topic == "phoenix":
            if msg.event == "heartbeat":
                session.push(protocol.reply(session.vsn, msg, "ok", {}))
                return
            raise errors.invalid(f"unknown event {msg.event!r} on topic phoenix", field="event")
        if msg.event == "phx_join":
            await self._join(session, msg)
            return
        channel = session.channels.get(msg.topic)
        if channel is None:
            raise errors.invalid(f"join {msg.topic!r} before sending {msg.event!r} to it", field="topic")
        if msg.event == "phx_leave":
            self.leave(channel)
            del session.channels[msg.topic]
            session.push(protocol.reply(session.vsn, msg, "ok", {}))
            session.push(protocol.encode(session.vsn, msg.topic, "phx_close", {}, msg.ref, channel.join_ref))
        elif msg.event == "access_token":
            await self._refresh(channel, msg)
        elif msg.event == "broadcast":
            await self._broadcast(channel, msg)
        elif msg.event == "presence":
            self._presence_push(channel, msg)
        elif msg.event in COMMANDS:
            self._check_token(channel)
            result = await COMMANDS[msg.event](self._booking, channel, msg.payload)
            session.push(protocol.reply(session.vsn, msg, "ok", result))
        else:
            raise errors.invalid(f"unknown event {msg.event!r}; commands are {', '.join(COMMANDS)}", field="event")

    async def _viewer(self, principal: Principal) -> Viewer:
        dentists: frozenset[uuid.UUID] = frozenset()
        if principal.has_role("dentist") and principal.user_id is not None:
            rows = await self._pool.fetch("SELECT id FROM public.dentists WHERE user_id = $1", principal.user_id)
            dentists = frozenset(r["id"] for r in rows)
        return Viewer(principal, dentists)

    async def _principal_for(self, session: Session, token: Any) -> Principal:
        if token is None:
            principal = session.principal
        elif isinstance(token, str):
            principal = await self._principals.get(verify_token(self._secret, token))
        else:
            raise errors.unauthorized("access_token must be a string")
        if principal.claims.role == "anon":
            raise errors.unauthorized("Sign in required: join with a user's access_token")
        return principal

    async def _join(self, session: Session, msg: Message) -> None:
        payload = msg.payload
        config = payload.get("config") or {}
        if not isinstance(config, dict):
            raise errors.invalid("config must be an object", field="config")
        topic = channels.parse_topic(msg.topic)
        if msg.topic in session.channels:
            self.leave(session.channels.pop(msg.topic))  # a rejoin replaces the old subscription
        if len(session.channels) >= MAX_CHANNELS:
            raise errors.invalid(f"a socket may join at most {MAX_CHANNELS} channels", field="topic")
        principal = await self._principal_for(session, payload.get("access_token"))
        viewer = await self._viewer(principal)
        channels.authorize_join(topic, viewer)
        if topic.kind is not None and topic.kind[1] == "dentist_id" and topic.key not in self._dentists:
            await self._booking.dentist_user(topic.key)  # NOT_FOUND for an unknown dentist
            self._dentists.add(topic.key)
        raw_bindings = config.get("postgres_changes") or []
        if not isinstance(raw_bindings, list) or len(raw_bindings) > 20:
            raise errors.invalid("postgres_changes must be a list of at most 20 bindings", field="postgres_changes")
        bindings = [channels.parse_binding(spec) for spec in raw_bindings]
        versions = _versions(config.get("versions", payload.get("versions")))
        broadcast = config.get("broadcast") or {}
        presence = config.get("presence") or {}
        channel = Channel(session, topic, msg.join_ref or msg.ref, viewer, principal.claims.exp, bindings,
                          broadcast_self=bool(broadcast.get("self")), broadcast_ack=bool(broadcast.get("ack")),
                          presence_key=str(presence.get("key") or "") or uuid.uuid4().hex)
        if versions:
            channel.pending = []  # hold live events until the replay is out
        session.channels[msg.topic] = channel
        self._by_topic[topic.canonical].add(channel)
        for binding in bindings:
            self._by_table[binding.table].add(channel)
        session.push(protocol.reply(session.vsn, msg, "ok",
                                    {"postgres_changes": [b.reply() for b in bindings]}))
        if bindings:
            session.push(protocol.encode(session.vsn, msg.topic, "system", {
                "status": "ok", "extension": "postgres_changes", "channel": topic.canonical,
                "message": "Subscribed to PostgreSQL"}, None, channel.join_ref))
        session.push(protocol.encode(session.vsn, msg.topic, "presence_state", self._presence_state(topic.canonical),
                                     None, channel.join_ref))
        if versions:
            await self._replay(channel, versions)

    async def _replay(self, channel: Channel, versions: dict[uuid.UUID, int]) -> None:
        """Missed events from the log in order, then the live ones held meanwhile."""
        try:
            for dentist_id, version in versions.items():
                missed = await events.since(self._pool, dentist_id, version, REPLAY_LIMIT + 1)
                current = await self._pool.fetchval("SELECT version FROM public.dentists WHERE id = $1", dentist_id)
                behind = current is not None and current > version
                if behind and (not missed or missed[0].version != version + 1 or len(missed) > REPLAY_LIMIT):
                    self._reload(channel, dentist_id, version)
                    continue
                held, channel.pending = channel.pending, None
                for event in missed:
                    metrics.MESSAGES.inc(channel.deliver(event, {}))
                channel.pending = held
        finally:
            channel.flush_pending()

    def _reload(self, channel: Channel, dentist_id: uuid.UUID, version: int) -> None:
        session = channel.session
        session.push(protocol.encode(session.vsn, channel.topic.name, "system", {
            "status": "error", "extension": "replay", "channel": channel.topic.canonical, "code": "RELOAD",
            "dentist_id": dentist_id, "version": version,
            "message": "Too far behind to replay (past retention or the replay limit): reload the state "
                       "over REST, then rejoin without versions"}, None, channel.join_ref))

    # ---- tokens --------------------------------------------------------------

    def _check_token(self, channel: Channel) -> None:
        if channel.token_exp <= time.time():
            self._expire(channel)
            raise errors.unauthorized("Token has expired")

    def _expire(self, channel: Channel) -> None:
        """End a channel whose token ran out, the way Supabase Realtime does."""
        session = channel.session
        session.push(protocol.encode(session.vsn, channel.topic.name, "system", {
            "status": "error", "extension": "system", "channel": channel.topic.canonical,
            "message": "Token has expired"}, None, channel.join_ref))
        session.push(protocol.encode(session.vsn, channel.topic.name, "phx_close", {}, None, channel.join_ref))
        self.leave(channel)
        session.channels.pop(channel.topic.name, None)

    async def _refresh(self, channel: Channel, msg: Message) -> None:
        token = msg.payload.get("access_token")
        try:
            principal = await self._principal_for(channel.session, token)
            if principal.user_id != channel.viewer.principal.user_id or \
                    principal.claims.role != channel.viewer.principal.claims.role:
                raise errors.unauthorized("access_token is for another user; join again instead")
        except HubError as exc:
            channel.session.push(protocol.reply(channel.session.vsn, msg, "error", {"reason": exc.message,
                                                                                   **exc.body()}))
            self._expire(channel)
            return
        channel.viewer = await self._viewer(principal)
        channel.token_exp = principal.claims.exp
        channel.session.push(protocol.reply(channel.session.vsn, msg, "ok", {}))

    def expire_tokens(self) -> int:
        now = time.time()
        expired = [c for s in list(self.sessions) for c in list(s.channels.values()) if c.token_exp <= now]
        for channel in expired:
            self._expire(channel)
        return len(expired)

    # ---- client broadcast and presence -----------------------------------------

    def _fan_out(self, canonical: str, event: str, payload: Any, skip: Channel | None = None,
                 clients_only: bool = False) -> None:
        """To every local channel on the topic (`clients_only`: not the hub's own
        channels), encoded once per topic name and serializer."""
        frames: dict[tuple[str, str], bytes] = {}
        for other in list(self._by_topic.get(canonical, ())):
            if other is skip or (clients_only and other.topic.kind is not None):
                continue
            key = (other.topic.name, other.session.vsn)
            if key not in frames:
                frames[key] = protocol.encode(other.session.vsn, other.topic.name, event, payload)
            other.session.push(frames[key])

    async def _notify(self, channel: str, payloads: list[str]) -> None:
        """To the other hub processes (and our own listener, which skips them by
        origin); one statement, so they arrive together and in this order."""
        await self._pool.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", channel, payloads)

    async def _broadcast(self, channel: Channel, msg: Message) -> None:
        """Client to client: to this process's sockets on the topic at once, and
        to the other hub processes' through NOTIFY (so a payload must fit in it)."""
        if channel.topic.kind is not None:
            raise errors.forbidden("clients cannot broadcast on the hub's own channels")
        event = msg.payload.get("event")
        if not isinstance(event, str) or not event:
            raise errors.invalid("broadcast needs an event name", field="event")
        relay = msgspec.json.encode({"origin": self.origin, "topic": channel.topic.canonical, "event": event,
                                     "payload": msg.payload.get("payload")})
        if len(relay) > BROADCAST_MAX:
            raise errors.HubError(errors.ErrorCode.PAYLOAD_TOO_LARGE,
                                  f"a broadcast payload must stay under {BROADCAST_MAX} bytes")
        self._deliver_broadcast(channel.topic.canonical, event, msg.payload.get("payload"),
                                skip=None if channel.broadcast_self else channel)
        await self._notify("hub_broadcast", [relay.decode()])
        if channel.broadcast_ack and msg.ref is not None:
            channel.session.push(protocol.reply(channel.session.vsn, msg, "ok", {}))

    def on_relayed_broadcast(self, raw: str) -> None:
        """A client broadcast made on another hub process."""
        relayed = msgspec.json.decode(raw)
        if relayed.get("origin") != self.origin:
            self._deliver_broadcast(str(relayed["topic"]), str(relayed["event"]), relayed.get("payload"))

    def _deliver_broadcast(self, canonical: str, event: str, body: Any, skip: Channel | None = None) -> None:
        self._fan_out(canonical, "broadcast", {"type": "broadcast", "event": event, "payload": body}, skip,
                      clients_only=True)

    def _presence_state(self, canonical: str) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for topics in self._presence.values():
            for key, meta in topics.get(canonical, {}).values():
                state.setdefault(key, {"metas": []})["metas"].append(meta)
        return state

    def _presence_push(self, channel: Channel, msg: Message) -> None:
        kind = msg.payload.get("event")
        if kind == "track":
            self._track(channel, msg.payload.get("payload") or {})
        elif kind == "untrack":
            self._untrack(channel)
        else:
            raise errors.invalid("presence event must be track or untrack", field="event")
        if msg.ref is not None:
            channel.session.push(protocol.reply(channel.session.vsn, msg, "ok", {}))

    def _track(self, channel: Channel, meta: Any) -> None:
        if not isinstance(meta, dict) or len(msgspec.json.encode(meta)) > 4096:
            raise errors.invalid("presence payload must be an object under 4 KiB", field="payload")
        canonical = channel.topic.canonical
        tracker = self._trackers.get(channel) or uuid.uuid4().hex[:16]
        previous = self._presence.get(self.origin, {}).get(canonical, {}).get(tracker)
        entry = {**meta, "phx_ref": uuid.uuid4().hex[:20]}
        if previous is not None:
            entry["phx_ref_prev"] = previous[1]["phx_ref"]
        relay = msgspec.json.encode(_Track(self.origin, canonical, tracker, channel.presence_key, entry))
        if len(relay) > PRESENCE_MAX:
            raise errors.HubError(errors.ErrorCode.PAYLOAD_TOO_LARGE,
                                  f"a presence key and payload must stay under {PRESENCE_MAX} bytes")
        self._trackers[channel] = tracker
        self._apply(self.origin, [(canonical, tracker, (channel.presence_key, entry))])
        self._send(relay)

    def _untrack(self, channel: Channel) -> None:
        tracker = self._trackers.pop(channel, None)
        if tracker is not None:
            canonical = channel.topic.canonical
            self._apply(self.origin, [(canonical, tracker, None)])
            self._send(msgspec.json.encode(_Track(self.origin, canonical, tracker, channel.presence_key, None)))

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

    def request_presence(self) -> None:
        """On (re)connecting the listener: we may have missed changes, so ask
        every process (ourselves too) to announce its presences now."""
        self._send(msgspec.json.encode(_Sync(self.origin)))
        self._next_round = 0.0

    def on_relayed_presence(self, raw: str) -> None:
        """A presence change, announcement or sync request from a hub process."""
        try:
            msg = _decode_presence(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("ignored a malformed hub_presence payload: %.200s", raw)
            return
        if msg.origin == self.origin:
            return
        now = asyncio.get_running_loop().time()
        self._wake.set()  # relay_presence looks again: a sync request, or a new deadline
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

    async def relay_presence(self) -> None:
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
                    except _DB_ERRORS as exc:
                        log.warning("could not relay presence to the other hub processes: %s", exc)
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min([self._next_round, *self._expires.values()]) - now)
        finally:  # stopping: our presences leave now, not PRESENCE_MISSED periods later
            gone = msgspec.json.encode(_State(self.origin, 0, True, PRESENCE_PERIOD, [])).decode()
            with contextlib.suppress(*_DB_ERRORS):
                await asyncio.wait_for(self._notify("hub_presence", [gone]), 1.0)


def _versions(raw: Any) -> dict[uuid.UUID, int]:
    if raw is None:
        return {}
    try:
        return msgspec.convert(raw, dict[uuid.UUID, int])
    except msgspec.ValidationError as exc:
        raise errors.from_validation(exc, where="versions") from None
