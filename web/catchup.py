"""Catch-up for clients that cannot ask: where each signed-in user is, per topic.

supabase-js, realtime-js and realtime-py rebuild a channel's join payload from
known keys on every rejoin, so they never send `config.versions`. The hub
remembers instead, in `realtime_cursors` (so any process can resume a client
that reconnects to it, also after a restart): per (user, topic, dentist) the
last version it sent. A join without versions replays from there.

- Open channels are saved every SAVE_EVERY seconds (off the delivery path: one
  batched statement, only channels with events since, looked at SAVE_SLICE at
  a time so ten thousand sockets never hold the event loop), and each channel
  at once when it ends. A process that dies loses at most its last period, so a client
  gets some events again:
  delivery is at-least-once, and every payload's `version` lets it drop them.
- Two tabs of one user share a cursor. `away` counts that user's channels on
  the topic that ended and have not rejoined; while any is away the cursor
  only moves back (the earliest wins), so a tab that stays connected cannot
  carry the cursor past what an absent one missed.
- Callers without a user id (anon, a service token with no subject) have no
  identity to remember: they resume explicitly, with `versions`.
- Rows older than the event retention are pruned by the sweeper; a cursor
  past it resumes nothing (the client reloads as on a first visit).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from typing import Any, Callable, Coroutine, Iterable, Sequence

import asyncpg

from hub import errors
from hub.aio import wait_event
from web.session import Channel

log = logging.getLogger("hub.realtime")

SAVE_EVERY = 5.0  # seconds between saves of open channels' cursors (ended ones are saved at once)
MAX_DENTISTS = 100  # cursors kept per channel (a plain topic's postgres_changes span dentists)
# Ended channels' cursors waiting to be saved, keyed by the clients' topics: they pile up only
# while saves fail. Past this many, more are not kept (logged): those channels are not marked
# away, so their clients resume from wherever the user's cursor is saved.
MAX_ENDED = 100_000

# Many joins' lookups in one statement (a reconnect storm is thousands of
# joins): each (user, topic) once, its `away` lowered by how many of its
# channels came back, and the starting version of each dentist topic joined.
_RESUME = """
WITH asked AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[]) AS a(user_id, topic, joins)),
resumed AS (
    UPDATE public.realtime_cursors c SET away = greatest(c.away - a.joins, 0)
    FROM asked a
    WHERE c.user_id = a.user_id AND c.topic = a.topic AND c.updated_at > now() - make_interval(hours => $4)
    RETURNING c.user_id, c.topic, c.dentist_id, c.version)
SELECT r.user_id, r.topic, r.dentist_id, r.version, d.version AS current
FROM resumed r JOIN public.dentists d ON d.id = r.dentist_id
UNION ALL
SELECT NULL, NULL, id, version, NULL FROM public.dentists WHERE id = ANY($5::uuid[])
"""
MAX_LOOKUPS = 500  # joins per lookup statement
# How long a lookup waits for others to share its statement. The join is
# answered without waiting (its live events are held until the replay is out),
# so this delays only a new channel's first events; in a reconnect storm it
# turns a round trip per join into one per batch.
LOOKUP_WAIT = 0.002
SAVE_SLICE = 500  # open channels looked at per turn of the event loop when saving

_SAVE = """
INSERT INTO public.realtime_cursors AS c (user_id, topic, dentist_id, version, away)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::bigint[], $5::int[])
ON CONFLICT (user_id, topic, dentist_id) DO UPDATE SET
    version = CASE WHEN c.away > 0 THEN least(c.version, excluded.version) ELSE excluded.version END,
    away = c.away + excluded.away, updated_at = now()
"""

Key = tuple[uuid.UUID, str, uuid.UUID]  # user, canonical topic, dentist
Found = tuple[dict[uuid.UUID, tuple[int, int]], dict[uuid.UUID, int]]  # (cursors: version, current), starts


@dataclasses.dataclass(slots=True)
class _Lookup:
    user: uuid.UUID
    topic: str
    dentist: uuid.UUID | None
    done: asyncio.Future[Found]


def _user(channel: Channel) -> uuid.UUID | None:
    return channel.viewer.principal.user_id


def positions(channel: Channel) -> dict[uuid.UUID, int]:
    """Where the channel is per dentist: the last version sent, else where it started."""
    out = dict(channel.start)
    for dentist, version in channel.last_version.items():
        out[uuid.UUID(int=dentist)] = version
    return dict(list(out.items())[:MAX_DENTISTS])


class Cursors:
    def __init__(self, pool: asyncpg.Pool, retention_hours: int, db_errors: tuple[type[BaseException], ...],
                 spawn: Callable[[Coroutine[Any, Any, None]], Any]) -> None:
        self._pool = pool
        self._spawn = spawn
        self._lookups: list[_Lookup] = []  # joins waiting for the next lookup statement
        self._looking = False  # a lookup statement is in flight
        self._retention = retention_hours
        self._db_errors = db_errors
        self._ended: dict[Key, tuple[int, int]] = {}  # channels that ended: (earliest version, how many)
        self._saved: dict[Channel, dict[int, int]] = {}  # open channels: last_version when saved
        self.every = SAVE_EVERY
        self._wake = asyncio.Event()  # a channel ended: save it now, so a quick rejoin finds it

    async def resume(self, channel: Channel) -> dict[uuid.UUID, int]:
        """The versions to replay from for a join without them (only where the
        dentist has moved on since), and the channel's starting point
        (`channel.start`); one round trip, signed-in users only."""
        user = _user(channel)
        if user is None:
            return {}
        dentist = channel.topic.key if channel.topic.kind and channel.topic.kind[1] == "dentist_id" else None
        lookup = _Lookup(user, channel.topic.canonical, dentist, asyncio.get_running_loop().create_future())
        self._lookups.append(lookup)
        if not self._looking:  # else it goes with the next statement, when the one in flight is back
            self._looking = True
            if self._spawn(self._look_up()) is None:  # shutting down: no more lookups
                self._looking = False
                self._lookups.clear()
                raise errors.database_unavailable()
        cursors, starts = await lookup.done
        channel.start = {**starts, **{d: version for d, (version, _) in cursors.items()}}
        return {d: version for d, (version, current) in cursors.items() if version < current}

    async def _look_up(self) -> None:
        """Answer waiting lookups, many per statement, until none wait:
        each statement takes what came within LOOKUP_WAIT, and what comes while
        it is in flight waits for the next."""
        batch: list[_Lookup] = []
        try:
            while self._lookups:
                if len(self._lookups) < MAX_LOOKUPS:
                    await asyncio.sleep(LOOKUP_WAIT)
                batch, self._lookups = self._lookups[:MAX_LOOKUPS], self._lookups[MAX_LOOKUPS:]
                try:
                    found = await self._find(batch)
                except Exception as exc:  # every join in the batch hears of it (a lost database)
                    for lookup in batch:
                        if not lookup.done.done():
                            lookup.done.set_exception(exc)
                    continue
                for lookup in batch:
                    if not lookup.done.done():
                        lookup.done.set_result(found(lookup))
        finally:
            self._looking = False
            for lookup in [*batch, *self._lookups]:  # cancelled at shutdown: nobody waits forever
                lookup.done.cancel()
            self._lookups.clear()

    async def _find(self, batch: list[_Lookup]) -> Callable[[_Lookup], Found]:
        joins: dict[tuple[uuid.UUID, str], int] = {}
        for lookup in batch:
            joins[lookup.user, lookup.topic] = joins.get((lookup.user, lookup.topic), 0) + 1
        dentists = list({lookup.dentist for lookup in batch} - {None})
        rows = await self._pool.fetch(_RESUME, [k[0] for k in joins], [k[1] for k in joins], list(joins.values()),
                                      self._retention, dentists)
        cursors: dict[tuple[uuid.UUID, str], dict[uuid.UUID, tuple[int, int]]] = {}
        starts: dict[uuid.UUID, int] = {}
        for r in rows:
            if r["user_id"] is None:
                starts[r["dentist_id"]] = r["version"]
            else:
                cursors.setdefault((r["user_id"], r["topic"]), {})[r["dentist_id"]] = (r["version"], r["current"])
        return lambda lookup: (cursors.get((lookup.user, lookup.topic), {}),
                               {lookup.dentist: starts[lookup.dentist]} if lookup.dentist in starts else {})

    def ended(self, channel: Channel) -> None:
        """A channel left, closed or lost with its socket: saved as away."""
        saved = self._saved.pop(channel, None)
        user = _user(channel)
        if user is None or (saved is None and not channel.last_version and not channel.start):
            return
        for dentist, version in positions(channel).items():
            key = (user, channel.topic.canonical, dentist)
            if key not in self._ended and len(self._ended) >= MAX_ENDED:
                log.warning("not keeping the cursor of an ended channel: %d are waiting to be saved", MAX_ENDED)
                break
            earliest, count = self._ended.get(key, (version, 0))
            self._ended[key] = (min(earliest, version), count + 1)
        self._wake.set()

    def drop(self, channel: Channel) -> None:
        self._saved.pop(channel, None)

    def _open(self, channels: Iterable[Channel]) -> dict[Key, tuple[int, int]]:
        """What to write for open channels: those with events since their last
        save (a dict comparison each, no work for idle ones)."""
        batch: dict[Key, tuple[int, int]] = {}
        for channel in channels:
            user = channel.viewer.principal.user_id
            if user is None or self._saved.get(channel) == channel.last_version:
                continue
            if not channel.joined:
                continue  # it ended after the save began: ended() has it
            self._saved[channel] = dict(channel.last_version)
            for dentist, version in positions(channel).items():
                batch[(user, channel.topic.canonical, dentist)] = (version, 0)
        return batch

    def _take_ended(self) -> dict[Key, tuple[int, int]]:
        ended, self._ended = self._ended, {}
        return ended

    async def save(self, channels: Sequence[Channel]) -> None:
        batch: dict[Key, tuple[int, int]] = {}
        for start in range(0, len(channels), SAVE_SLICE):
            if start:
                await asyncio.sleep(0)  # bookings and frames go on between slices
            batch.update(self._open(channels[start:start + SAVE_SLICE]))
        batch.update(self._take_ended())  # an absent tab's position wins over an open one's in the same batch
        if not batch:
            return
        keys = list(batch)
        try:
            await self._pool.execute(_SAVE, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                                     [batch[k][0] for k in keys], [batch[k][1] for k in keys])
        except self._db_errors as exc:
            log.warning("could not save realtime cursors (%d): %s", len(keys), exc)
            for key in keys:  # ended ones are retried; open ones are saved again next period
                if batch[key][1]:
                    earliest, count = self._ended.get(key, (batch[key][0], 0))  # ended again meanwhile
                    self._ended[key] = (min(earliest, batch[key][0]), count + batch[key][1])
            self._saved.clear()

    async def run(self, open_channels: Callable[[], Sequence[Channel]]) -> None:
        """Save ended channels as they end, open ones every period, and once
        more when stopped (what channels ended on shutdown)."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while True:
                await wait_event(self._wake, last + self.every - loop.time())
                self._wake.clear()
                if loop.time() >= last + self.every:
                    last = loop.time()
                    await self.save(open_channels())
                else:
                    await self.save(())
        finally:
            with contextlib.suppress(*self._db_errors):
                await asyncio.wait_for(self.save(open_channels()), 2.0)
