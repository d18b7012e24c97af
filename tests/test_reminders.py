"""Appointment reminders: planned by trigger, DST-correct, sent once, late-limited.
Clock control is in SQL (due times set in the past), never by sleeping."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from hub.config import ConfigError, Settings, reminder_offsets
from services import reminders
from tests.conftest import Api, Databases, eventually, make_dentist, slot_at
from tests.test_calendar import next_dst_sundays
from web import create_app

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def dsn(databases: Databases) -> str:
    """Due reminders are sent by every hub on the database: this module gets its own."""
    return databases.create()


async def plan(pool: asyncpg.Pool, appointment_id: uuid.UUID) -> dict[str, datetime]:
    rows = await pool.fetch("SELECT label, due_at FROM public.appointment_reminders "
                            "WHERE appointment_id = $1 AND status = 'pending'", appointment_id)
    return {r["label"]: r["due_at"] for r in rows}


async def appointment(api: Api, dentist_id: str, patient: uuid.UUID, start: datetime) -> uuid.UUID:
    return await api.pool.fetchval(
        "INSERT INTO public.appointments (patient_id, dentist_id, appointment_date, appointment_type, status) "
        "VALUES ($1, $2, $3, 'checkup', 'confirmed') RETURNING id", patient, uuid.UUID(dentist_id), start)


async def test_plan_is_dst_correct_and_follows_every_change(api: Api, clinic: Any) -> None:
    dentist_id = await make_dentist(api, clinic.admin, name="Dr Berlin", timezone="Europe/Berlin")
    change = next_dst_sundays()[0]
    start = datetime.combine(change, datetime.min.time(), BERLIN).replace(hour=10)
    booked = await appointment(api, dentist_id, clinic.patient.id, start)
    planned = await plan(api.pool, booked)
    assert planned["2h"] == start - 2 * HOUR
    day_before = planned["1d"].astimezone(BERLIN)
    assert (day_before.date(), day_before.hour, day_before.minute) == (change - timedelta(days=1), 10, 0)
    assert start - planned["1d"] != timedelta(days=1)  # 23 or 25 hours: the clocks changed in between

    later = start + 3 * HOUR  # rescheduled: the plan moves with it
    await api.pool.execute("UPDATE public.appointments SET appointment_date = $2 WHERE id = $1", booked, later)
    assert (await plan(api.pool, booked))["2h"] == later - 2 * HOUR
    await api.pool.execute("UPDATE public.appointments SET status = 'cancelled' WHERE id = $1", booked)
    assert await plan(api.pool, booked) == {}  # dropped on cancel

    # The booking API's own path (the actor's write) is planned by the same trigger.
    status, body = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=3, hour=13), "appointment_type": "checkup"})
    assert status == 201, body
    assert set(await plan(api.pool, uuid.UUID(body["id"]))) == {"1d", "2h"}
    status, _ = await api.delete(f"/api/appointments/{body['id']}", clinic.patient)
    assert status == 200 and await plan(api.pool, uuid.UUID(body["id"])) == {}


async def test_due_reminders_go_out_once_and_late_ones_are_missed(api: Api, clinic: Any) -> None:
    await api.pool.execute("INSERT INTO public.webhook_endpoints (url, events, secret, enabled) "
                           "VALUES ('http://192.0.2.1/h', '{reminder.due}', 'whsec_AAAA', true)")
    soon = await appointment(api, clinic.dentist_id, clinic.patient.id,
                             datetime.now(timezone.utc).replace(microsecond=0) + 5 * HOUR)
    stale = await appointment(api, clinic.dentist_id, clinic.other_patient.id,
                              datetime.now(timezone.utc).replace(microsecond=0) + 7 * HOUR)
    # Clock control: one fell due a minute ago, the other three hours ago (past the one-hour limit).
    await api.pool.execute("UPDATE public.appointment_reminders SET due_at = now() - interval '1 minute' "
                           "WHERE appointment_id = $1 AND label = '2h'", soon)
    await api.pool.execute("UPDATE public.appointment_reminders SET due_at = now() - interval '3 hours' "
                           "WHERE appointment_id = $1 AND label = '2h'", stale)
    pools = [await asyncpg.create_pool(api.pool._connect_args[0], min_size=1, max_size=2) for _ in range(3)]
    try:  # three "processes" race for the same reminders
        results = await asyncio.gather(*(reminders.send_due(p, timedelta(hours=1)) for p in pools))
    finally:
        await asyncio.gather(*(p.close() for p in pools))
    assert sum(r["sent"] for r in results) == 1 and sum(r["missed"] for r in results) == 1
    assert await api.pool.fetchval("SELECT status FROM public.appointment_reminders "
                                   "WHERE appointment_id = $1 AND label = '2h'", stale) == "missed"

    status, page = await api.get("/api/notifications", clinic.patient)
    sent = [n for n in page["data"] if n["kind"] == "appointment_reminder"]
    assert len(sent) == 1 and sent[0]["data"]["appointment_id"] == str(soon) and sent[0]["data"]["offset"] == "2h"
    status, page = await api.get("/api/notifications", clinic.other_patient)
    assert not [n for n in page["data"] if n["kind"] == "appointment_reminder"]
    hooks = await api.pool.fetch("SELECT data FROM public.webhook_messages WHERE type = 'reminder.due'")
    assert [h["data"]["appointment"]["id"] for h in hooks] == [str(soon)]
    assert await reminders.send_due(api.pool, timedelta(hours=1)) == {"sent": 0, "missed": 0}  # nothing twice
    await api.pool.execute("DELETE FROM public.webhook_endpoints")


async def test_reminders_due_while_down_go_out_at_start(api: Api, clinic: Any, settings: Settings,
                                                        pool: asyncpg.Pool, aiohttp_client: Any) -> None:
    await api.client.close()  # the hub is down
    booked = await pool.fetchval(
        "INSERT INTO public.appointments (patient_id, dentist_id, appointment_date, appointment_type) "
        "VALUES ($1, $2, now() + interval '4 hours', 'checkup') RETURNING id", clinic.patient.id,
        uuid.UUID(clinic.dentist_id))
    await pool.execute("UPDATE public.appointment_reminders SET due_at = now() - interval '10 minutes' "
                       "WHERE appointment_id = $1", booked)
    await aiohttp_client(create_app(dataclasses.replace(settings, reminder_poll_seconds=60)))  # back up

    async def sent() -> bool:
        return await pool.fetchval("SELECT status FROM public.appointment_reminders WHERE appointment_id = $1",
                                   booked) == "sent"

    await eventually(sent, timeout=10, what="the reminder's sending after the restart")


async def test_offsets_are_validated_and_replanned(pool: asyncpg.Pool) -> None:
    assert reminder_offsets("1d, 2h,30m") == ("1d", "2h", "30m") and reminder_offsets("") == ()
    for bad in ("1w", "0h", "2h,2h", "-1d", "400d"):
        with pytest.raises(ConfigError):
            reminder_offsets(bad)
    assert reminders.offsets(("1d", "90m")) == [("1d", 1, 0), ("90m", 0, 90)]
    assert await reminders.configure(pool, ("1d", "2h")) is False  # already so: nothing re-planned
    try:
        assert await reminders.configure(pool, ("30m",)) is True
        labels = await pool.fetchval("SELECT array_agg(DISTINCT label) FROM public.appointment_reminders "
                                     "WHERE status = 'pending'")
        assert labels in (None, ["30m"])
    finally:
        await reminders.configure(pool, ("1d", "2h"))
