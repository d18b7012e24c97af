"""A real PostgreSQL restart under a running hub: the listener reconnects and
catches up from realtime_events, and subscribers lose nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hub import db, migrate
from hub.auth import issue_token
from hub.client import RealtimeClient
from hub.config import ROOT
from services import users
from tests.conftest import ALL_DAY, SECRET, HubProcesses
from tests.test_presence import presence_until
from web.presence import PRESENCE_PERIOD

async def prepare(dsn: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """The schema, an admin, a patient and a dentist: (admin, patient, dentist)."""
    con = await db.connect(dsn)
    await migrate.migrate(con, migrate.load(ROOT / "sql"))
    admin = await users.create_user(con, email="admin@restart.test", full_name="Admin", roles=("admin",))
    patient = await users.create_user(con, email="p@restart.test", full_name="Patient")
    dentist = await con.fetchval("INSERT INTO dentists (name, timezone, available_times) VALUES ('Dr R', 'UTC', $1) "
                                 "RETURNING id", ALL_DAY)
    await con.close()
    return admin, patient, dentist


async def test_database_restart_loses_no_event(cluster, tmp_path: Path) -> None:
    dsn = cluster.dsn
    admin, patient, dentist = await prepare(dsn)
    hubs = HubProcesses(dsn, tmp_path)
    [url] = await hubs.start(1)
    client = RealtimeClient(url, issue_token(SECRET, admin))
    await client.connect()
    first = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=3)
    insert = ("INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
              "VALUES ($1, $2, $3, 'checkup') RETURNING id")
    try:
        channel = client.channel(f"appointments:dentist_id={dentist}")
        await channel.join()
        made: list[uuid.UUID] = []
        con = await db.connect(dsn)
        made.append(await con.fetchval(insert, patient, dentist, first))
        await con.close()
        await asyncio.get_running_loop().run_in_executor(None, cluster.restart)
        # Committed right after the restart, before the hub's listener is back: no NOTIFY reaches it.
        con = await db.connect(dsn)
        for i in range(1, 6):
            made.append(await con.fetchval(insert, patient, dentist, first + timedelta(hours=i)))
        await con.close()
        received = []
        while len(received) < len(made):
            msg = await channel.next(timeout=15)
            if msg.event == "broadcast" and msg.payload["event"] == "INSERT":
                received.append(uuid.UUID(msg.payload["payload"]["new"]["id"]))
        assert received == made  # all of them, in order
        with pytest.raises(asyncio.TimeoutError):
            while True:  # and none twice
                msg = await channel.next(timeout=1.0)
                assert not (msg.event == "broadcast" and msg.payload["event"] == "INSERT"), msg
    finally:
        await client.close()
        hubs.stop()


async def test_presence_converges_after_a_database_restart(cluster, tmp_path: Path) -> None:
    """A track made while the listeners reconnect may lose its NOTIFY; the
    announcements (at once on reconnect, else every period) repair it."""
    dsn = cluster.dsn
    admin, patient, _ = await prepare(dsn)
    hubs = HubProcesses(dsn, tmp_path)
    first, second = await hubs.start(2)
    one, two = RealtimeClient(first, issue_token(SECRET, admin)), RealtimeClient(second, issue_token(SECRET, patient))
    try:
        await one.connect()
        await two.connect()
        a, b = one.channel("realtime:lobby", presence={"key": "one"}), two.channel("realtime:lobby")
        await a.join()
        await b.join()
        await asyncio.get_running_loop().run_in_executor(None, cluster.restart)
        await a.push("presence", {"type": "presence", "event": "track", "payload": {"client": "one"}})
        await presence_until(b, {}, lambda s: str(admin) in s, timeout=PRESENCE_PERIOD + 10)
    finally:
        await one.close()
        await two.close()
        hubs.stop()
