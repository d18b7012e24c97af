"""The feed sends each committed event once, in version order: a backlog read
from realtime_events in slices with the rest of the process running between
them (services/feed.py SLICE), a gap filled from the log, a duplicate dropped."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from hub import db, events
from hub.events import Event
from services import feed, users
from services.pubsub import PubSub
from tests.conftest import eventually


async def test_a_backlog_goes_out_in_order_without_holding_the_loop(dsn: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed, "SLICE", 0.0)  # every event its own slice
    pool = await db.create_pool(dsn)
    try:
        async with pool.acquire() as con:
            began = await con.fetchval("SELECT now()")
            patient = await users.create_user(con, email=None, full_name="Feed Patient")
            dentist = await con.fetchval("INSERT INTO dentists (name) VALUES ('Dr Feed') RETURNING id")
            start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
            await con.execute(  # 50 events committed before the feed hears of any
                "INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
                "SELECT $1, $2, $3::timestamptz + g * interval '30 minutes', 'checkup' FROM generate_series(1, 50) g",
                patient, dentist, start)
        pubsub = PubSub()
        the_feed = feed.Feed(pool, pubsub)
        the_feed.started = began  # as at start-up: a dentist heard of first gets all since then
        seen: list[tuple[str, int]] = []  # what went out, and when another task got to run
        pubsub.subscribe(lambda event: seen.append(("event", event.version)))

        async def other_work() -> None:
            while len([s for s in seen if s[0] == "event"]) < 50:
                seen.append(("other", 0))
                await asyncio.sleep(0)

        other = asyncio.create_task(other_work())
        the_feed.committed(dentist, 50)
        await asyncio.wait_for(other, 10)
        versions = [v for kind, v in seen if kind == "event"]
        assert versions == list(range(1, 51))  # all of them, once each, in order
        first, last = seen.index(("event", 1)), seen.index(("event", 50))
        assert ("other", 0) in seen[first:last]  # the process ran other work in between
        assert the_feed.last_version(dentist) == 50
    finally:
        await pool.close()


async def test_a_gap_is_read_from_the_log_and_a_duplicate_dropped(pool) -> None:
    async with pool.acquire() as con:
        patient = await users.create_user(con, email=None, full_name="Feed Patient")
        dentist = await con.fetchval("INSERT INTO dentists (name) VALUES ('Dr Gap') RETURNING id")
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)

    async def write(n: int) -> list[Event]:
        """`n` appointments committed by someone (the feed is not told), and their events."""
        since = await pool.fetchval("SELECT version FROM dentists WHERE id = $1", dentist)
        for _ in range(n):
            await pool.execute("INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
                               "VALUES ($1, $2, $3::timestamptz + (SELECT count(*) FROM appointments "
                               "WHERE dentist_id = $2) * interval '30 minutes', 'checkup')", patient, dentist, start)
        return await events.since(pool, dentist, since)

    pubsub = PubSub()
    the_feed = feed.Feed(pool, pubsub)
    seen: list[int] = []
    pubsub.subscribe(lambda event: seen.append(event.version))

    [first] = await write(1)
    the_feed.publish([first])  # a dentist heard of for the first time: read from the log
    await eventually(lambda: the_feed.last_version(dentist) == 1, what="the first event")
    assert seen == [1]
    second, third = await write(2)
    the_feed.publish([third])  # 2 never came this way: a gap
    await eventually(lambda: the_feed.last_version(dentist) == 3, what="the gap's fill")
    assert seen == [1, 2, 3]  # the missing one first, then the one that showed the gap, each once
    [fourth] = await write(1)
    the_feed.publish([fourth])  # the next in line goes out at once, without reading the log
    assert seen == [1, 2, 3, 4]
    # Duplicates (an actor's own event, then NOTIFY about it; a replay) are dropped.
    the_feed.publish([second, third, fourth])
    the_feed.committed(dentist, 4)
    the_feed.committed(dentist, 3)
    assert seen == [1, 2, 3, 4] and the_feed.last_version(dentist) == 4
    [fifth] = await write(1)
    the_feed.committed(dentist, 5)  # NOTIFY of a write made elsewhere
    the_feed.committed(dentist, 5)
    the_feed.publish([fifth])
    await eventually(lambda: the_feed.last_version(dentist) == 5, what="the noticed event")
    assert seen == [1, 2, 3, 4, 5]
