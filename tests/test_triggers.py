"""Every change to appointments, holds and availability is logged in
realtime_events with a gapless per-dentist version, and NOTIFY carries a
small reference only (so rows over 8000 bytes still commit)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import msgspec

from hub import db
from services import users


async def _setup(con):
    patient = await users.create_user(con, email=None, full_name="Trigger Patient")
    dentist = await con.fetchval("INSERT INTO dentists (name) VALUES ('Dr Trigger') RETURNING id")
    return patient, dentist


async def _events(con, dentist):
    return await con.fetch("SELECT * FROM realtime_events WHERE dentist_id = $1 ORDER BY version", dentist)


async def test_insert_update_delete_and_large_rows(dsn: str) -> None:
    con = await db.connect(dsn)
    listener = await db.connect(dsn)
    notes: asyncio.Queue = asyncio.Queue()
    await listener.add_listener("hub_events", lambda *args: notes.put_nowait(args[3]))
    try:
        patient, dentist = await _setup(con)
        when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=5)
        big = "x" * 20000  # well past NOTIFY's 8000-byte payload limit
        appt = await con.fetchval(
            "INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type, medical_history) "
            "VALUES ($1, $2, $3, 'checkup', $4) RETURNING id", patient, dentist, when, big)
        await con.execute("UPDATE appointments SET status = 'confirmed' WHERE id = $1", appt)
        await con.execute("DELETE FROM appointments WHERE id = $1", appt)
        hold = await con.fetchval(
            "INSERT INTO slot_reservations (dentist_id, patient_id, slot_time, expires_at) "
            "VALUES ($1, $2, $3, now() + interval '5 minutes') RETURNING id", dentist, patient, when)
        await con.execute("DELETE FROM slot_reservations WHERE id = $1", hold)
        await con.execute("""UPDATE dentists SET available_times = '{"monday": "09:00-17:00"}' WHERE id = $1""", dentist)
        await con.execute("UPDATE dentists SET name = 'Dr Renamed' WHERE id = $1", dentist)  # not a schedule change

        events = await _events(con, dentist)
        assert [(e["table_name"], e["event_type"]) for e in events] == [
            ("appointments", "INSERT"), ("appointments", "UPDATE"), ("appointments", "DELETE"),
            ("slot_reservations", "INSERT"), ("slot_reservations", "DELETE"), ("dentists", "UPDATE")]
        assert [e["version"] for e in events] == [1, 2, 3, 4, 5, 6]
        assert await con.fetchval("SELECT version FROM dentists WHERE id = $1", dentist) == 6
        insert, update, delete = events[:3]
        assert insert["payload"]["old"] is None and insert["payload"]["new"]["medical_history"] == big
        assert update["payload"]["old"]["status"] == "pending" and update["payload"]["new"]["status"] == "confirmed"
        assert delete["payload"]["new"] is None and delete["payload"]["old"]["id"] == str(appt)
        assert events[5]["payload"]["new"]["available_times"] == {"monday": "09:00-17:00"}

        received = [msgspec.json.decode(await asyncio.wait_for(notes.get(), 5)) for _ in events]
        assert [(n["id"], n["version"]) for n in received] == [(e["id"], e["version"]) for e in events]
        assert all(n["dentist_id"] == str(dentist) for n in received)
        assert notes.empty()
    finally:
        await listener.close()
        await con.close()


async def test_rolled_back_change_leaves_no_event_and_no_gap(dsn: str) -> None:
    con = await db.connect(dsn)
    try:
        patient, dentist = await _setup(con)
        when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=6)
        tx = con.transaction()
        await tx.start()
        await con.execute("INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
                          "VALUES ($1, $2, $3, 'checkup')", patient, dentist, when)
        await tx.rollback()
        await con.execute("INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
                          "VALUES ($1, $2, $3, 'checkup')", patient, dentist, when)
        assert [e["version"] for e in await _events(con, dentist)] == [1]
    finally:
        await con.close()


async def test_exclusion_constraint_blocks_overlaps(dsn: str) -> None:
    import asyncpg
    import pytest

    con = await db.connect(dsn)
    try:
        patient, dentist = await _setup(con)
        when = datetime.now(timezone.utc).replace(microsecond=0, second=0, minute=0) + timedelta(days=7)
        insert = ("INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type, duration_minutes) "
                  "VALUES ($1, $2, $3, 'filling', $4) RETURNING id")
        first = await con.fetchval(insert, patient, dentist, when, 60)
        with pytest.raises(asyncpg.ExclusionViolationError):
            await con.fetchval(insert, patient, dentist, when + timedelta(minutes=30), 30)
        await con.fetchval(insert, patient, dentist, when + timedelta(minutes=60), 30)  # touching is fine
        await con.execute("UPDATE appointments SET status = 'cancelled' WHERE id = $1", first)
        await con.fetchval(insert, patient, dentist, when + timedelta(minutes=30), 30)  # freed by cancellation
    finally:
        await con.close()
