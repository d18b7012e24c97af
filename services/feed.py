"""This process's ordered stream of committed events, each exactly once.

Two sources feed it: the dentist actors of this process publish their own
events right after commit (the fast path), and the listener reports what
NOTIFY says was committed anywhere (other processes, psql). Per dentist the
feed remembers the last version it published; an event at or below it is a
duplicate, one above it by more than one means something was missed, and
the gap is read from `realtime_events` before anything later goes out.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime

import asyncpg

from hub import db, events
from hub.events import Event
from hub.tasks import Tasks
from services.pubsub import PubSub

log = logging.getLogger("hub.feed")

# A backlog is sent in slices of this many seconds of fan-out work, each
# followed by the sockets' writes and whatever else waits: under overload one
# read of the log can hold thousands of events for thousands of sockets, which
# sent in one go froze the whole process for seconds.
SLICE = 0.05


class Feed:
    def __init__(self, pool: asyncpg.Pool, pubsub: PubSub) -> None:
        self._pool = pool
        self._pubsub = pubsub
        self._last: dict[uuid.UUID, int] = {}
        # The database's time when this feed started: the first time it hears of
        # a dentist, it sends everything of that dentist's made since then, so an
        # event still on its way from our own actor is not skipped over.
        self.started: datetime | None = None
        self._wanted: dict[uuid.UUID, int] = {}
        self._filling: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._tasks = Tasks("feed")

    def last_version(self, dentist_id: uuid.UUID) -> int | None:
        return self._last.get(dentist_id)

    def publish(self, batch: list[Event]) -> None:
        """Events this process committed, in version order."""
        for event in batch:
            last = self._last.get(event.dentist_id)
            if last is not None and event.version <= last:
                continue
            if event.dentist_id not in self._filling and last is not None and event.version == last + 1:
                self._emit(event)
            else:  # a gap, or a dentist heard of for the first time: read the log in order
                self.committed(event.dentist_id, event.version)

    def committed(self, dentist_id: uuid.UUID, version: int) -> None:
        """Something up to `version` was committed for this dentist: make sure it goes out."""
        last = self._last.get(dentist_id)
        if last is not None and version <= last:
            return
        self._wanted[dentist_id] = max(self._wanted.get(dentist_id, 0), version)
        if dentist_id not in self._filling and (task := self._tasks.spawn(self._fill(dentist_id), "fill")):
            self._filling[dentist_id] = task

    async def aclose(self) -> None:
        """Stop reading missed events (shutdown); later notices are ignored."""
        await self._tasks.aclose()

    def known(self) -> list[uuid.UUID]:
        return list(self._last)

    def _emit(self, event: Event) -> None:
        self._last[event.dentist_id] = event.version
        self._pubsub.publish([event])

    async def _fill(self, dentist_id: uuid.UUID) -> None:
        try:
            while True:
                target = self._wanted.get(dentist_id, 0)
                last = self._last.get(dentist_id)
                if last is not None and last >= target:
                    return
                if last is None and self.started is not None:
                    missed = await events.since_time(self._pool, dentist_id, self.started)
                else:
                    missed = await events.since(self._pool, dentist_id, last if last is not None else target - 1)
                if not missed:
                    return  # pruned or rolled back: nothing to send
                loop = asyncio.get_running_loop()
                until = loop.time() + SLICE
                for event in missed:
                    if event.version > self._last.get(dentist_id, -1):
                        self._emit(event)
                    if loop.time() > until:
                        await asyncio.sleep(0)
                        until = loop.time() + SLICE
        except db.ERRORS as exc:
            log.warning("could not read missed events of %s: %s (the listener retries on reconnect)",
                        dentist_id, exc)
        finally:
            self._filling.pop(dentist_id, None)
