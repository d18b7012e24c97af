"""Change events: one per row change, numbered per dentist without gaps.

The triggers in `sql/` write them to `realtime_events`; the actors apply them
to their memory and the realtime layer delivers them. The same type carries
an event whether it was made by this process, another one, or psql.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

COLUMNS = "id, dentist_id, version, event_type, table_name, record_id, payload, created_at"

SINCE = f"""
SELECT {COLUMNS} FROM public.realtime_events
WHERE dentist_id = $1 AND version > $2 ORDER BY version LIMIT $3
"""


class Event(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    dentist_id: uuid.UUID
    version: int
    event_type: str          # INSERT | UPDATE | DELETE
    table_name: str          # appointments | slot_reservations | dentists | clinic_closures
    record_id: uuid.UUID
    payload: dict[str, Any]  # {"new": row | None, "old": row | None}
    created_at: datetime     # when the change was made (commit time within the transaction)

    @property
    def new(self) -> dict[str, Any] | None:
        return self.payload.get("new")

    @property
    def old(self) -> dict[str, Any] | None:
        return self.payload.get("old")


def from_record(row: asyncpg.Record) -> Event:
    return Event(**dict(row))


SINCE_TIME = f"""
SELECT {COLUMNS} FROM public.realtime_events
WHERE dentist_id = $1 AND created_at >= $2 ORDER BY version LIMIT $3
"""


async def since_time(con: asyncpg.Connection | asyncpg.Pool, dentist_id: uuid.UUID, started: datetime,
                     limit: int = 10_000) -> list[Event]:
    """The dentist's events made at or after `started`, in order."""
    return [from_record(r) for r in await con.fetch(SINCE_TIME, dentist_id, started, limit)]


async def since(con: asyncpg.Connection | asyncpg.Pool, dentist_id: uuid.UUID, version: int,
                limit: int = 10_000) -> list[Event]:
    """The dentist's events after `version`, in order."""
    return [from_record(r) for r in await con.fetch(SINCE, dentist_id, version, limit)]
