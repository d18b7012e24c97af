"""The feed sends a backlog read from realtime_events in version order, in
slices with the rest of the process running between them (services/feed.py SLICE)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from hub import db
from services import feed, users
from services.pubsub import PubSub


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
        the_feed.notice(dentist, 50)
        await asyncio.wait_for(other, 10)
        versions = [v for kind, v in seen if kind == "event"]
        assert versions == list(range(1, 51))  # all of them, once each, in order
        first, last = seen.index(("event", 1)), seen.index(("event", 50))
        assert ("other", 0) in seen[first:last]  # the process ran other work in between
        assert the_feed.last_version(dentist) == 50
    finally:
        await pool.close()
