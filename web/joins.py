"""Joining a channel, and keeping what it may see in step with its caller.

As in Supabase Realtime (`RealtimeChannel.join` / `handle_in("access_token")`):
- a join is authorized with its own `access_token`, or the socket's `apikey`
  when it has none (anon is accepted: see `policy.join_denied`);
- a valid token pushed as `access_token` — anon, the same user's or another's —
  changes what the channel sees; the channel is closed, with the true reason in
  a `system` message, only for an invalid or expired token, or when the new
  caller may not see the topic;
- a role change (`hub_roles`, from a trigger on `user_roles` and
  `dentists.user_id`) re-authorizes every channel of that user the same way;
- a refused join answers `{reason}` only: realtime-js builds its error
  message from every value of the response.

The join payload is decoded into `Join` before anything else happens, so a bad
one changes nothing (a rejoin keeps its channel).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import asyncpg
import msgspec

from hub import db, errors, events, metrics, policy, protocol
from hub.auth import Principal, verify_token
from hub.errors import HubError
from hub.protocol import Message
from services.booking import Booking
from services.users import Principals
from web import channels, payloads
from web.bindings import check_cap as check_bindings_cap
from web.catchup import positions
from web.session import MAX_CHANNELS, Channel, Session

if TYPE_CHECKING:
    from web.realtime import Realtime

log = logging.getLogger("hub.realtime")

REPLAY_LIMIT = 1000   # a client further behind than this reloads instead
MAX_BINDINGS = 20     # postgres_changes bindings per join

Versions = dict[uuid.UUID, int]  # dentist id -> the last version the client has


class BroadcastConfig(msgspec.Struct, frozen=True, gc=False):
    self: bool = False  # the sender gets its own broadcasts too
    ack: bool = False   # the sender gets a reply to each of its broadcasts


class JoinConfig(msgspec.Struct, frozen=True, gc=False):
    """`config` of a join. `presence` and `private` are not read (the hub keys
    presences by caller, and its own rules decide who sees what:
    docs/REALTIME.md), so whatever a client sends there cannot refuse a join."""
    broadcast: BroadcastConfig | None = None
    postgres_changes: Annotated[list[channels.BindingSpec], msgspec.Meta(max_length=MAX_BINDINGS)] | None = None
    versions: Versions | None | msgspec.UnsetType = msgspec.UNSET


class Join(msgspec.Struct, frozen=True, gc=False):
    """A `phx_join` payload; `versions` may sit here or in `config` (where it wins)."""
    config: JoinConfig | None = None
    access_token: str | None = None
    versions: Versions | None = None


class TokenRefresh(msgspec.Struct, frozen=True, gc=False):
    """An `access_token` push on a joined channel."""
    access_token: str | None = None


_NO_CONFIG = JoinConfig()
_NO_BROADCAST = BroadcastConfig()


def _token_refused(*_: Any) -> HubError:
    return errors.unauthorized("access_token must be a string")


def _versions_refused(value: Any, _holder: Any) -> HubError:
    return payloads.refusal_alone(Versions, value, "versions")


_JOIN_REFUSALS: dict[str, payloads.Refusal] = {
    "config": lambda *_: errors.invalid("config must be an object", field="config"),
    "access_token": _token_refused,
    "versions": _versions_refused,
    "config.versions": _versions_refused,
    "config.broadcast": lambda *_: errors.invalid("config.broadcast must be an object", field="config"),
    "config.postgres_changes": lambda *_: errors.invalid(
        f"postgres_changes must be a list of at most {MAX_BINDINGS} bindings", field="postgres_changes"),
    "config.postgres_changes[]": lambda *_: channels.binding_refused(None),
    "config.postgres_changes[].event": lambda value, holder: channels.binding_refused("event", value),
    "config.postgres_changes[].schema": lambda *_: channels.binding_refused("schema"),
    "config.postgres_changes[].table": lambda *_: channels.binding_refused("table"),
    "config.postgres_changes[].filter": lambda value, holder: channels.binding_refused(
        "filter", table=holder.get("table")),
}
_TOKEN_REFUSALS: dict[str, payloads.Refusal] = {"access_token": _token_refused}


class Joins:
    def __init__(self, realtime: Realtime, pool: asyncpg.Pool, principals: Principals, booking: Booking) -> None:
        self._rt = realtime
        self._pool = pool
        self.principals = principals
        self._booking = booking
        # Dentists a join found: the hub never deletes one, so the next join to
        # their channels needs no round trip (a reconnect storm is thousands).
        self._dentists: set[uuid.UUID] = set()

    # ---- who the caller is -------------------------------------------------------

    async def viewer(self, principal: Principal) -> policy.Caller:
        dentists: frozenset[uuid.UUID] = frozenset()
        if principal.has_role("dentist") and principal.user_id is not None:
            rows = await self._pool.fetch("SELECT id FROM public.dentists WHERE user_id = $1", principal.user_id)
            dentists = frozenset(r["id"] for r in rows)
        return policy.Caller(principal, dentists)

    async def _principal(self, session: Session, token: str | None) -> Principal:
        if token is None:  # the socket's caller, with the roles they hold now
            return await self.principals.get(session.principal.claims)
        return await self.principals.get(verify_token(self._rt.keys, token))

    # ---- join ----------------------------------------------------------------------

    async def join(self, session: Session, msg: Message) -> None:
        try:
            channel, versions = await self._admit(session, msg)
        except Exception as exc:
            error = exc if isinstance(exc, HubError) else db.as_hub_error(exc)  # e.g. the database away
            if error is None:
                raise
            session.push(protocol.reply(session.vsn, msg, "error", {"reason": error.message}))
            return
        topic = channel.topic
        session.channels[msg.topic] = channel
        self._rt.add(channel)
        session.push(protocol.reply(session.vsn, msg, "ok",
                                    {"postgres_changes": [b.reply() for b in channel.bindings]}))
        if channel.bindings:
            session.push(protocol.encode(session.vsn, msg.topic, "system", {
                "status": "ok", "extension": "postgres_changes", "channel": topic.canonical,
                "message": "Subscribed to PostgreSQL"}, None, channel.join_ref))
        session.push(protocol.encode(session.vsn, msg.topic, "presence_state", self._rt.presence.state(topic.canonical),
                                     None, channel.join_ref))
        if versions is None:  # after the reply: joins waiting on their lookups share statements (web/catchup.py)
            versions = await self._resume(channel)
        if channel.pending is not None:
            await self._replay(channel, versions)

    async def _admit(self, session: Session, msg: Message) -> tuple[Channel, Versions | None]:
        """The new channel, authorized, and the versions to replay from (None:
        look them up, `realtime_cursors`); live events are held meanwhile."""
        try:  # payloads.decode, inlined: joins come in storms after a restart
            join = msgspec.convert(msg.payload, Join)
        except msgspec.ValidationError as exc:
            raise payloads.refusal(exc, msg.payload, _JOIN_REFUSALS) from None
        config = join.config or _NO_CONFIG
        topic = channels.parse_topic(msg.topic)
        old = session.channels.pop(msg.topic, None)
        if old is not None:
            self._rt.leave(old, ended=False)  # a rejoin on this socket replaces the old subscription
        if len(session.channels) >= MAX_CHANNELS:
            raise errors.invalid(f"a socket may join at most {MAX_CHANNELS} channels", field="topic")
        principal = await self._principal(session, join.access_token)
        viewer = await self.viewer(principal)
        reason = policy.join_denied(viewer, topic.kind, topic.key)
        if reason is not None:
            raise errors.forbidden(reason)
        if topic.kind is not None and topic.kind[1] == "dentist_id" and topic.key not in self._dentists:
            await self._booking.dentist_user(topic.key)  # NOT_FOUND for an unknown dentist
            self._dentists.add(topic.key)
        specs = config.postgres_changes
        bindings = [channels.parse_binding(spec) for spec in specs] if specs else []
        check_bindings_cap(session.channels.values(), len(bindings))
        versions = (join.versions if config.versions is msgspec.UNSET else config.versions) or {}
        broadcast = config.broadcast or _NO_BROADCAST
        channel = Channel(session, topic, msg.join_ref or msg.ref, viewer, principal.claims.exp, bindings,
                          broadcast_self=broadcast.self, broadcast_ack=broadcast.ack)
        if versions:
            channel.start = dict(versions)
        elif old is not None and old.viewer.principal.user_id == principal.user_id:
            versions = positions(old)  # the same socket again: it knows exactly what it sent
        elif principal.user_id is not None and topic.kind != ("notifications", "user_id") and (
                topic.kind is not None or bindings):
            versions = None  # looked up after the reply (`_resume`)
        if versions is None or versions:
            channel.pending = []  # hold live events until the replay is out
        return channel, versions

    async def _resume(self, channel: Channel) -> dict[uuid.UUID, int]:
        """What the channel's user missed, from their cursor. The join was
        answered already: a failed lookup tells the client to reload."""
        try:
            return await self._rt.cursors.resume(channel)
        except Exception as exc:
            error = exc if isinstance(exc, HubError) else db.as_hub_error(exc)  # e.g. the database away
            if error is None:
                channel.flush_pending()
                raise
            self._reload(channel, "Could not look up what this channel missed: reload the state over REST")
            return {}

    async def _replay(self, channel: Channel, versions: dict[uuid.UUID, int]) -> None:
        """Missed events from the log in order, then the live ones held meanwhile."""
        try:
            for dentist_id, version in versions.items():
                missed = await events.since(self._pool, dentist_id, version, REPLAY_LIMIT + 1)
                current = await self._pool.fetchval("SELECT version FROM public.dentists WHERE id = $1", dentist_id)
                behind = current is not None and current > version
                if behind and (not missed or missed[0].version != version + 1 or len(missed) > REPLAY_LIMIT):
                    self._reload(channel, "Too far behind to replay (past retention or the replay limit): reload "
                                          "the state over REST, then rejoin without versions",
                                 dentist_id=dentist_id, version=version)
                    continue
                held, channel.pending = channel.pending, None
                for event in missed:
                    metrics.MESSAGES.inc(channel.deliver(event, {}))
                channel.pending = held
        finally:
            channel.flush_pending()

    def _reload(self, channel: Channel, message: str, **where: Any) -> None:
        """A `system` RELOAD: the channel cannot be caught up by replay."""
        session = channel.session
        session.push(protocol.encode(session.vsn, channel.topic.name, "system", {
            "status": "error", "extension": "replay", "channel": channel.topic.canonical, "code": "RELOAD",
            **where, "message": message}, None, channel.join_ref))

    # ---- tokens and roles -------------------------------------------------------------

    def check_token(self, channel: Channel) -> None:
        if channel.token_exp <= time.time():
            self.close(channel, "Token has expired")
            raise errors.unauthorized("Token has expired")

    def close(self, channel: Channel, reason: str) -> None:
        """End a channel the way Supabase Realtime does: a `system` error
        message with the reason, then `phx_close`."""
        session = channel.session
        if not channel.joined:
            return  # already ended
        session.push(protocol.encode(session.vsn, channel.topic.name, "system", {
            "status": "error", "extension": "system", "channel": channel.topic.canonical,
            "message": reason}, None, channel.join_ref))
        session.push(protocol.encode(session.vsn, channel.topic.name, "phx_close", {}, None, channel.join_ref))
        self._rt.leave(channel)
        del session.channels[channel.topic.name]

    async def refresh(self, channel: Channel, msg: Message) -> None:
        """`access_token` on a joined channel: the new token decides what it sees."""
        session = channel.session
        try:
            token = payloads.decode(msg.payload, TokenRefresh, _TOKEN_REFUSALS).access_token
            if token is None:
                session.push(protocol.reply(session.vsn, msg, "ok", {}))
                return
            principal = await self._principal(session, token)
        except HubError as exc:
            session.push(protocol.reply(session.vsn, msg, "error", {"reason": exc.message}))
            self.close(channel, exc.message)
            return
        if await self._apply(channel, principal):
            session.push(protocol.reply(session.vsn, msg, "ok", {}))
        else:
            session.push(protocol.reply(session.vsn, msg, "error", {"reason": "access revoked"}))

    async def _apply(self, channel: Channel, principal: Principal) -> bool:
        """Re-authorize `channel` for `principal`; False when it was closed."""
        viewer = await self.viewer(principal)
        if not channel.joined:
            return False  # ended while we looked
        reason = policy.join_denied(viewer, channel.topic.kind, channel.topic.key)
        if reason is not None:
            self.close(channel, f"You no longer have permission to read from this Channel topic: "
                                f"{channel.topic.canonical} ({reason})")
            return False
        channel.viewer = viewer
        channel.token_exp = principal.claims.exp
        self._rt.presence.retrack(channel)
        return True

    async def roles_changed(self, user_id: uuid.UUID) -> None:
        """`hub_roles`: forget the user's cached roles here and re-authorize
        each of their channels on this process with what they hold now."""
        self.principals.forget(user_id)
        for channel in self._rt.channels():
            principal = channel.viewer.principal
            if principal.user_id == user_id and not principal.is_service:
                try:
                    await self._apply(channel, await self.principals.get(principal.claims))
                except HubError as exc:
                    self.close(channel, exc.message)

    async def recheck_all(self) -> None:
        """After the listener reconnects (role changes may have been missed):
        forget every cached role and re-authorize every signed-in user's channels."""
        self.principals.clear()
        for user_id in {c.viewer.principal.user_id for c in self._rt.channels()} - {None}:
            await self.roles_changed(user_id)  # type: ignore[arg-type]

    def expire_tokens(self) -> int:
        now = time.time()
        expired = [c for c in self._rt.channels() if c.token_exp <= now]
        for channel in expired:
            self.close(channel, "Token has expired")
        return len(expired)
