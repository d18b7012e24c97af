"""Appointment reminders: follow every change of their appointment, DST-correct,
sent once across processes, late-limited. Clock control is in SQL
(appointments booked in the past, the senders' sweep set back to when the hub
went down), never by sleeping."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from hub import db, migrate
from hub.config import ROOT, ConfigError, Settings, reminder_offsets
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


async def appointment(pool: asyncpg.Pool, dentist_id: str, patient: uuid.UUID, start: datetime,
                      booked_ago: timedelta = timedelta(0)) -> uuid.UUID:
    """An appointment typed in by hand, booked `booked_ago` (reminders due before then are none of its)."""
    return await pool.fetchval(
        "INSERT INTO public.appointments (patient_id, dentist_id, appointment_date, appointment_type, status, "
        "created_at) VALUES ($1, $2, $3, 'checkup', 'confirmed', now() - $4::interval) RETURNING id",
        patient, uuid.UUID(dentist_id), start, booked_ago)


async def hub_down_since(pool: asyncpg.Pool, ago: timedelta) -> None:
    """Clock control: no sender has looked for due reminders for `ago`."""
    await pool.execute("UPDATE public.reminder_sweep SET swept_to = now() - $1::interval", ago)


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


async def test_plan_is_dst_correct_and_follows_every_change(api: Api, clinic: Any) -> None:
    dentist_id = await make_dentist(api, clinic.admin, name="Dr Berlin", timezone="Europe/Berlin")
    change = next_dst_sundays()[0]
    start = datetime.combine(change, datetime.min.time(), BERLIN).replace(hour=10)
    booked = await appointment(api.pool, dentist_id, clinic.patient.id, start)
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


async def test_due_reminders_go_out_once_and_late_ones_are_missed(api: Api, clinic: Any, settings: Settings,
                                                                 pool: asyncpg.Pool, aiohttp_client: Any) -> None:
    await api.client.close()  # the hub goes down; reminders fall due meanwhile
    await pool.execute("INSERT INTO public.webhook_endpoints (url, events, secret, enabled) "
                       "VALUES ('http://192.0.2.1/h', '{reminder.due}', 'whsec_AAAA', true)")
    # Its 2h reminder fell due a minute ago; its 1d one fell before it was booked.
    soon = await appointment(pool, clinic.dentist_id, clinic.patient.id, now() + 2 * HOUR - timedelta(minutes=1),
                             booked_ago=HOUR)
    # Its 1d reminder fell due three hours ago, past the one-hour limit.
    stale = await appointment(pool, clinic.dentist_id, clinic.other_patient.id, now() + 21 * HOUR,
                              booked_ago=4 * HOUR)
    await hub_down_since(pool, 4 * HOUR)
    pools = [await asyncpg.create_pool(pool._connect_args[0], min_size=1, max_size=2) for _ in range(3)]
    try:  # three "processes" race for the same reminders
        results = await asyncio.gather(*(reminders.send_due(p, timedelta(hours=1)) for p in pools))
    finally:
        await asyncio.gather(*(p.close() for p in pools))
    assert sum(r["sent"] for r in results) == 1 and sum(r["missed"] for r in results) == 1
    assert await pool.fetchval("SELECT status FROM public.appointment_reminders "
                               "WHERE appointment_id = $1 AND label = '1d'", stale) == "missed"
    assert await reminders.send_due(pool, timedelta(hours=1)) == {"sent": 0, "missed": 0}  # nothing twice

    api = Api(await aiohttp_client(create_app(dataclasses.replace(settings, reminder_poll_seconds=3600))))
    status, page = await api.get("/api/notifications", clinic.patient)
    sent = [n for n in page["data"] if n["kind"] == "appointment_reminder"]
    assert len(sent) == 1 and sent[0]["data"]["appointment_id"] == str(soon) and sent[0]["data"]["offset"] == "2h"
    assert sent[0]["data"]["reminder_id"] == str(await pool.fetchval(
        "SELECT id FROM public.appointment_reminders WHERE appointment_id = $1 AND status = 'sent'", soon))
    status, page = await api.get("/api/notifications", clinic.other_patient)
    assert not [n for n in page["data"] if n["kind"] == "appointment_reminder"]
    hooks = await pool.fetch("SELECT data FROM public.webhook_messages WHERE type = 'reminder.due'")
    assert [h["data"]["appointment"]["id"] for h in hooks] == [str(soon)]
    await pool.execute("DELETE FROM public.webhook_endpoints")


async def test_a_moved_appointment_is_reminded_of_its_new_time(api: Api, clinic: Any, pool: asyncpg.Pool) -> None:
    """A reminder already sent stays sent; the new time gets its own; moving
    back to a time already reminded of sends nothing again."""
    await api.client.close()  # this test sends by itself
    booked = await appointment(pool, clinic.other_dentist_id, clinic.patient.id,
                               now() + 2 * HOUR - timedelta(minutes=1), booked_ago=HOUR)
    first = (await plan(pool, booked))["2h"]
    assert await reminders.send_due(pool, timedelta(hours=1)) == {"sent": 1, "missed": 0}
    await pool.execute("UPDATE public.appointments SET appointment_date = appointment_date + interval '1 day' "
                       "WHERE id = $1", booked)
    assert await plan(pool, booked) == {"1d": first + 2 * HOUR, "2h": first + timedelta(days=1)}  # new time, new reminders
    await pool.execute("UPDATE public.appointments SET appointment_date = appointment_date - interval '1 day' "
                       "WHERE id = $1", booked)
    await pool.execute("UPDATE public.reminder_plans SET planned_at = now() - interval '1 hour' "
                       "WHERE appointment_id = $1", booked)  # as if moved back before the first was due
    assert await plan(pool, booked) == {}  # back to the time already reminded of: nothing pending again
    assert await reminders.send_due(pool, timedelta(hours=1)) == {"sent": 0, "missed": 0}
    assert [r["status"] for r in await pool.fetch(
        "SELECT status FROM public.appointment_reminders WHERE appointment_id = $1", booked)] == ["sent"]


async def test_reminders_due_while_down_go_out_at_start(api: Api, clinic: Any, settings: Settings,
                                                        pool: asyncpg.Pool, aiohttp_client: Any) -> None:
    await api.client.close()  # the hub is down
    booked = await appointment(pool, clinic.dentist_id, clinic.patient.id, now() + 2 * HOUR - timedelta(minutes=10),
                               booked_ago=HOUR)  # its 2h reminder fell due ten minutes ago
    await hub_down_since(pool, timedelta(minutes=15))
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
    dentist = str(await pool.fetchval("INSERT INTO public.dentists (name) VALUES ('Dr Offsets') RETURNING id"))
    patient = await pool.fetchval("INSERT INTO auth.users (email) VALUES ('offsets@reminders.test') RETURNING id")
    shortly = await appointment(pool, dentist, patient, now() + timedelta(minutes=20), booked_ago=HOUR)
    later = await appointment(pool, dentist, patient, now() + 3 * HOUR, booked_ago=HOUR)
    try:
        assert await reminders.configure(pool, ("30m",)) is True
        labels = await pool.fetchval("SELECT array_agg(DISTINCT label) FROM public.appointment_reminders "
                                     "WHERE status = 'pending'")
        assert labels in (None, ["30m"])
        # A new offset counts from now: the 30m reminder that fell due ten minutes ago is none.
        assert await plan(pool, shortly) == {}
        assert await plan(pool, later) == {"30m": await pool.fetchval(
            "SELECT appointment_date - interval '30 minutes' FROM public.appointments WHERE id = $1", later)}
    finally:
        await reminders.configure(pool, ("1d", "2h"))


async def test_the_rows_of_0009_carry_over_and_back(databases: Databases) -> None:
    """sql/0016 computes what 0009 stored as rows: the same reminders pending,
    sent ones kept with their ids; its down file makes them rows again."""
    dsn = await asyncio.to_thread(databases.create, migrated=False)
    con = await db.connect(dsn)
    try:
        files = migrate.load(ROOT / "sql")
        lazy = next(f for f in files if f.name == "lazy_reminders")
        await migrate.migrate(con, [f for f in files if f.version < lazy.version])
        dentist = await con.fetchval("INSERT INTO public.dentists (name, timezone) VALUES ('Dr Rows', 'Europe/Berlin') "
                                     "RETURNING id")
        patient = await con.fetchval("INSERT INTO auth.users (email) VALUES ('rows@reminders.test') RETURNING id")
        booked = [await con.fetchval(
            "INSERT INTO public.appointments (patient_id, dentist_id, appointment_date, appointment_type) "
            "VALUES ($1, $2, now() + $3::text::interval, 'checkup') RETURNING id", patient, dentist, ahead)
            for ahead in ("3 days", "5 hours", "30 hours", "4 days", "2 days")]
        await con.execute("UPDATE public.appointment_reminders SET status = 'sent', sent_at = now() "
                          "WHERE appointment_id = $1 AND label = '1d'", booked[2])
        await con.execute("UPDATE public.appointments SET status = 'cancelled' WHERE id = $1", booked[3])
        await con.execute("UPDATE public.appointments SET appointment_date = appointment_date + interval '3 hours' "
                          "WHERE id = $1", booked[4])
        rows = ("SELECT appointment_id, label, due_at, status, CASE WHEN status <> 'pending' THEN id END "
                "FROM public.appointment_reminders ORDER BY 1, 2, 3")
        planned = [tuple(r) for r in await con.fetch(rows)]
        assert {r[3] for r in planned} == {"pending", "sent"} and len(planned) == 7  # 5h ahead: no 1d; cancelled: none
        await migrate.migrate(con, [f for f in files if f.version <= lazy.version])
        assert [tuple(r) for r in await con.fetch(rows)] == planned
        await con.execute((ROOT / "sql" / f"{lazy.version:04d}_{lazy.name}.down.sql").read_text())
        assert [tuple(r) for r in await con.fetch(rows)] == planned
    finally:
        await con.close()
        await databases.drop_async(dsn)

