"""Group commit (actors/batch.py) on real PostgreSQL: writes queued while a
batch is in flight commit together, and one bad write fails only itself."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import msgspec
import pytest

from actors.batch import GroupCommit

START = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=5)


async def _dentists(pool: asyncpg.Pool, n: int) -> list[uuid.UUID]:
    return [r["id"] for r in await pool.fetch(
        "INSERT INTO dentists (name, available_times) SELECT 'Dr Batch ' || g, '{}' FROM generate_series(1, $1) g "
        "RETURNING id", n)]


def _book(patient: uuid.UUID, notes: str | None = None) -> dict:
    return {"id": uuid.uuid4(), "consume": [], "patient_id": patient, "start": START, "duration": 30, "buffer": 0,
            "type": "checkup", "notes": notes, "patient_notes": None, "medical_history": None,
            "created_by": patient, "notices": []}


@pytest.fixture
async def patient(pool: asyncpg.Pool) -> uuid.UUID:
    return await pool.fetchval(f"INSERT INTO auth.users (email) VALUES ('batch-{uuid.uuid4().hex[:8]}@test') "
                               "RETURNING id")


async def test_writes_queued_behind_a_batch_commit_together(pool, patient) -> None:
    dentists = await _dentists(pool, 10)
    writes = GroupCommit(pool, max_inflight=1)
    answers = await asyncio.gather(*(writes.write(d, 0, "book", _book(patient), None) for d in dentists))
    for d, answer in zip(dentists, answers):
        out = msgspec.json.decode(answer)
        assert out["result"]["dentist_id"] == str(d)
        assert [(e["version"], e["table_name"]) for e in out["events"]] == [(1, "appointments")]
    # The first write went alone; the nine queued behind it share one transaction.
    xids = await pool.fetch("SELECT xmin::text AS xid, count(*) FROM appointments WHERE dentist_id = ANY($1) "
                            "GROUP BY 1 ORDER BY 2", dentists)
    assert [r["count"] for r in xids] == [1, 9]


async def test_one_bad_write_fails_alone_and_stale_ones_are_told(pool, patient) -> None:
    dentists = await _dentists(pool, 6)
    writes = GroupCommit(pool, max_inflight=1)
    first = asyncio.ensure_future(writes.write(dentists[0], 0, "book", _book(patient), None))
    rest = [writes.write(dentists[1], 0, "book", _book(patient, notes="nul \x00 inside"), None),
            writes.write(dentists[2], 7, "book", _book(patient), None)]  # memory behind: version is 0
    rest += [writes.write(d, 0, "book", _book(patient), None) for d in dentists[3:]]
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert isinstance(results[1], (asyncpg.DataError, UnicodeEncodeError))
    assert msgspec.json.decode(results[2]) == {"stale": 0}
    for ok in (results[0], *results[3:]):
        assert "result" in msgspec.json.decode(ok)
    booked = await pool.fetchval("SELECT count(*) FROM appointments WHERE dentist_id = ANY($1)", dentists)
    assert booked == 4  # nothing of the bad or the stale write
