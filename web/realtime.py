"""`/realtime/v1/websocket`: Supabase Realtime's protocol over the hub's events.

Routing: every event from the feed goes to the channels indexed under its
dentist, its patient and its table; each channel decides what it means for
its caller (`web/session.py` Channel.deliver), and the frames are encoded
once per topic and serializer.

The rest follows Phoenix's seams: joins, tokens and who may see what in
`web/joins.py`, catch-up in `web/catchup.py`, client broadcasts in
`web/relay.py`, presence in `web/presence.py` (both cluster-wide through
NOTIFY, as in Supabase).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Coroutine

import asyncpg
from aiohttp import web

from hub import db, errors, metrics, policy, protocol
from hub.aio import Deadlines
from hub.auth import verify_token
from hub.events import Event
from hub.keys import Keys
from hub.protocol import Message
from hub.tasks import Tasks
from services.booking import Booking
from services.listener import Listener
from services.users import Principals
from web.bindings import BindingIndex
from web.catchup import Cursors
from web.commands import COMMANDS
from web.joins import Joins
from web.presence import Presence
from web.relay import Relay
from web.session import RESTART, SILENT, Channel, Session

log = logging.getLogger("hub.realtime")

MAX_FRAME = 64 * 1024
DB_ERRORS = db.ERRORS


class Realtime:
    def __init__(self, pool: asyncpg.Pool, principals: Principals, booking: Booking, keys: Keys, *,
                 retention_hours: int = 24) -> None:
        self._pool = pool
        self.keys = keys
        self.sessions: set[Session] = set()
        # channel indexes: by canonical topic, and by table for postgres_changes
        self._by_topic: dict[str, set[Channel]] = collections.defaultdict(set)
        self._bindings = BindingIndex()  # postgres_changes subscribers (web/bindings.py)
        self.origin = uuid.uuid4().hex  # this process, to skip its own relayed messages
        self.presence = Presence(self.origin, self.fan_out, self.notify, DB_ERRORS)
        self.relay = Relay(self.origin, self.fan_out, self.notify)
        self.tasks = Tasks("realtime", expected=DB_ERRORS)  # re-authorizations, closing handshakes, lookups
        self.cursors = Cursors(pool, retention_hours, DB_ERRORS, self.tasks.spawn)
        self.joins = Joins(self, pool, principals, booking)
        self._booking = booking
        self.slow_disconnects = 0
        # sockets by when they were last heard from: silent for the heartbeat timeout, closed (web/session.py)
        self.silence: Deadlines[Session] = Deadlines(60.0, lambda session: session.close_soon(SILENT))
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
        targets |= self._bindings.candidates(event)
        cache: dict[Any, Any] = {}
        sent = 0
        for channel in targets:
            sent += channel.deliver(event, cache)
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
            except DB_ERRORS as exc:
                log.warning("could not record broadcast latencies: %s", exc)

    async def on_notification(self, notification_id: uuid.UUID, user_id: uuid.UUID) -> None:
        mine = f"notifications:user_id={user_id}"
        topics = [t for t in (mine, f"appointments:patient_id={user_id}") if self._by_topic.get(t)]
        if not topics:
            return
        # Read as the subscribers (once per distinct token claims): the database's
        # policies, the hub's and the clinic's own, decide what each socket gets.
        groups: dict[str, list[Channel]] = collections.defaultdict(list)
        for topic in topics:
            for channel in self._by_topic.get(topic, ()):
                if policy.receives_notification(channel.viewer, user_id):  # not an anon join's
                    groups[db.claims_json(channel.viewer.principal)].append(channel)
        for members in groups.values():
            try:
                async with db.as_caller(self._pool, members[0].viewer.principal) as con:
                    row = await con.fetchrow("SELECT id, user_id, kind, title, body, data, read_at, created_at "
                                             "FROM public.notifications WHERE id = $1", notification_id)
            except asyncpg.InsufficientPrivilegeError:  # e.g. `anon` may not read notifications at all
                row = None
            if row is None:
                continue

            def theirs(channel: Channel, members: list[Channel] = members) -> bool:
                return channel in members

            payload = {"event": "INSERT", "schema": "public", "table": "notifications", "new": dict(row), "old": None}
            self.fan_out(mine, "broadcast", {"type": "broadcast", "event": "INSERT", "payload": payload}, only=theirs)
            if row["kind"] == "waitlist_offer":  # the offer's hold, on the patient's channels too (sql/0010)
                for topic in topics:
                    self.fan_out(topic, "broadcast", {"type": "broadcast", "event": "waitlist_offer",
                                                      "payload": row["data"]}, only=theirs)

    # ---- wiring ----------------------------------------------------------------

    def listen(self, listener: Listener) -> None:
        """The NOTIFY channels this layer follows, on the hub's listener."""
        def on(name: str, receive: Callable[[str], None]) -> None:
            listener.notify_handlers[name] = lambda con, pid, channel, payload: receive(payload)

        on("hub_broadcast", self.relay.on_relayed)
        on("hub_presence", self.presence.on_relayed)
        on("hub_roles", self._on_roles)
        listener.on_connect.append(self.presence.request)
        listener.on_connect.append(lambda: self.tasks.spawn(self.joins.recheck_all()))

    def background(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        return [("latencies", self.record_latencies()), ("presence", self.presence.relay()),
                ("cursors", self.cursors.run(self.channels))]

    def _on_roles(self, payload: str) -> None:
        """A user's roles changed (trigger on user_roles / dentists.user_id):
        forget them now, re-authorize their channels next."""
        try:
            user_id = uuid.UUID(payload)
        except ValueError:
            log.warning("ignored a malformed hub_roles payload: %.100s", payload)
            return
        self.joins.principals.forget(user_id)
        self.tasks.spawn(self.joins.roles_changed(user_id))

    # ---- sessions ----------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """Authenticate by the `apikey` query parameter, then speak Phoenix."""
        vsn = request.query.getall("vsn", [protocol.V1])[-1]  # phoenix appends its own: the last wins
        if vsn not in protocol.VERSIONS:
            raise errors.invalid(f"vsn must be one of {', '.join(protocol.VERSIONS)}", field="vsn", location="query")
        token = request.query.get("apikey") or (request.headers.get("Authorization", "").partition(" ")[2] or None)
        await self.keys.ready_for(token)  # a token signed with a just-rotated key is not refused
        claims = verify_token(self.keys, token)
        principal = await self.joins.principals.get(claims)
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

    def channels(self) -> list[Channel]:
        return [c for s in list(self.sessions) for c in list(s.channels.values())]

    def add(self, channel: Channel) -> None:
        self._by_topic[channel.topic.canonical].add(channel)
        self._bindings.add(channel)

    def leave(self, channel: Channel, ended: bool = True) -> None:
        """Unsubscribe; `ended`: the client is gone, so save where it was (a
        rejoin on the same socket takes over instead)."""
        subscribers = self._by_topic.get(channel.topic.canonical)
        if subscribers is not None:
            subscribers.discard(channel)
            if not subscribers:  # topics are the clients' choice: keep only those with subscribers
                del self._by_topic[channel.topic.canonical]
        self._bindings.remove(channel)
        self.presence.untrack(channel)
        if ended:
            self.cursors.ended(channel)
        else:
            self.cursors.drop(channel)

    # ---- messages ------------------------------------------------------------

    async def handle(self, session: Session, msg: Message) -> None:
        if msg.topic == "phoenix":
            if msg.event == "heartbeat":
                session.push(protocol.reply(session.vsn, msg, "ok", {}))
                return
            raise errors.invalid(f"unknown event {msg.event!r} on topic phoenix", field="event")
        if msg.event == "phx_join":
            await self.joins.join(session, msg)
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
            await self.joins.refresh(channel, msg)
        elif msg.event == "broadcast":
            await self.relay.from_socket(channel, msg)
        elif msg.event == "presence":
            self.presence.push(channel, msg)
        elif msg.event in COMMANDS:
            self.joins.check_token(channel)
            result = await COMMANDS[msg.event](self._booking, channel, msg.payload)
            session.push(protocol.reply(session.vsn, msg, "ok", result))
        else:
            raise errors.invalid(f"unknown event {msg.event!r}; commands are {', '.join(COMMANDS)}", field="event")

    # ---- to the sockets and the other processes --------------------------------

    def fan_out(self, canonical: str, event: str, payload: Any, skip: Channel | None = None,
                clients_only: bool = False, only: Callable[[Channel], bool] | None = None) -> None:
        """To every local channel on the topic (`clients_only`: not the hub's own
        channels; `only`: those it accepts), encoded once per topic name and serializer."""
        frames: dict[tuple[str, str], bytes] = {}
        for other in list(self._by_topic.get(canonical, ())):
            if other is skip or (clients_only and other.topic.kind is not None) or (only and not only(other)):
                continue
            key = (other.topic.name, other.session.vsn)
            if key not in frames:
                frames[key] = protocol.encode(other.session.vsn, other.topic.name, event, payload)
            other.session.push(frames[key])

    async def notify(self, channel: str, payloads: list[str]) -> None:
        """To the other hub processes (and our own listener, which skips them by
        origin); one statement, so they arrive together and in this order."""
        await self._pool.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", channel, payloads)
