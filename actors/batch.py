"""Group commit: the dentist actors' one-call writes, many per round trip.

Each actor has at most one write in flight, so a batch holds at most one
write per dentist. Writes queue while earlier batches are in flight and all
go in the next one; there is no timer, so a lone write goes at once and
batches grow only with load. A batch is one transaction: one round trip, one
WAL flush, and one pass through the lock PostgreSQL takes for NOTIFY at
commit and holds through the flush, which otherwise serializes every
notifying commit in the cluster.

A batch locks its dentists' rows in one order (sorted by id), so batches
never deadlock on each other. Holds and a patient's move of an appointment
also lock the patient (the hold limit, the caps), and waitlist offers lock
entries that other dentists' offers lock too; taken in the middle of a
batch, those locks would break that order, so holds, appointment changes
and offers always go alone (changes and offers are rare). A batch that
fails as a whole (a constraint caught what memory missed, a value PostgreSQL
refuses) is re-run one write at a time: each write gets its own answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from typing import Any

import asyncpg
import msgspec

from actors.dentist_sql import WRITE
from hub import metrics

log = logging.getLogger("hub.actors")
WRITE_MANY = "SELECT public.hub_write_many($1)::text"
_ALONE = frozenset({"hold", "change", "offer"})
_decode_many = msgspec.json.Decoder(list[msgspec.Raw]).decode


@dataclasses.dataclass(slots=True)
class _Write:
    dentist: uuid.UUID
    version: int
    op: str
    args: dict[str, Any]
    idem: dict[str, str] | None
    done: asyncio.Future[bytes]


class GroupCommit:
    """`await write(...)` answers hub_write's JSON for that one write."""

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 32, max_inflight: int = 2) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._queue: list[_Write] = []
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, dentist: uuid.UUID, version: int, op: str, args: dict[str, Any],
                    idem: dict[str, str] | None) -> bytes:
        item = _Write(dentist, version, op, args, idem, asyncio.get_running_loop().create_future())
        if op in _ALONE:
            return await self._one(item)
        self._queue.append(item)
        if self._inflight < self._max_inflight:
            self._start()
        return await item.done

    def _start(self) -> None:
        batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
        self._inflight += 1
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Write]) -> None:
        try:
            metrics.DB_WRITE_BATCH.observe(len(batch))
            if len(batch) == 1:
                await self._settle(batch[0])
                return
            batch.sort(key=lambda w: w.dentist.bytes)  # one lock order for every batch
            try:
                answers = _decode_many(await self._pool.fetchval(WRITE_MANY, [
                    {"dentist": w.dentist, "version": w.version, "op": w.op, "args": w.args, "idem": w.idem}
                    for w in batch]))
            except (asyncpg.PostgresError, UnicodeEncodeError) as exc:
                log.info("a group commit of %d writes failed (%s); running them one by one", len(batch), exc)
                await asyncio.gather(*(self._settle(w) for w in batch))
                return
            for w, answer in zip(batch, answers, strict=True):
                if not w.done.done():
                    w.done.set_result(bytes(answer))
        except Exception as exc:  # a lost connection: every caller hears of it
            for w in batch:
                if not w.done.done():
                    w.done.set_exception(exc)
        finally:
            for w in batch:  # cancelled at shutdown: nobody waits forever
                if not w.done.done():
                    w.done.cancel()
            self._inflight -= 1
            if self._queue:
                self._start()

    async def _one(self, w: _Write) -> bytes:
        raw: str = await self._pool.fetchval(WRITE, w.dentist, w.version, w.op, w.args, w.idem)
        return raw.encode()

    async def _settle(self, w: _Write) -> None:
        """Run one write alone; its answer or its error goes to its caller."""
        try:
            answer = await self._one(w)
        except Exception as exc:
            if not w.done.done():
                w.done.set_exception(exc)
        else:
            if not w.done.done():
                w.done.set_result(answer)
