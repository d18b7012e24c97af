"""The fault suite's parts: hub processes on a PostgreSQL of the test's own
(the `cluster` fixture of tests/conftest.py, which it may kill), and a booking
load that retries as a careful client does (same Idempotency-Key, another
process on connection errors)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import asyncpg
import pytest

from hub import db, migrate
from hub.auth import issue_token
from hub.config import ROOT
from services import users
from tests.conftest import ALL_DAY, SECRET, HubProcesses, free_port


@dataclasses.dataclass
class Clinic:
    dsn: str
    admin: uuid.UUID
    dentists: list[uuid.UUID]
    patients: list[tuple[uuid.UUID, str]]  # (id, token)

    def slots(self, count: int, days_from: int = 2) -> list[tuple[uuid.UUID, str]]:
        """`count` distinct bookable (dentist, start) pairs on the 30-minute grid, spread over the dentists."""
        day0 = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        out = []
        for i in range(count):
            dentist = self.dentists[i % len(self.dentists)]
            n = i // len(self.dentists)
            start = day0 + timedelta(days=days_from + n // 48, minutes=30 * (n % 48))
            out.append((dentist, start.isoformat()))
        return out


async def make_clinic(dsn: str, *, dentists: int = 3, patients: int = 10) -> Clinic:
    """The schema, an admin, dentists open around the clock, and patients with tokens."""
    con = await db.connect(dsn)
    try:
        await migrate.migrate(con, migrate.load(ROOT / "sql"))
        admin = await users.create_user(con, email="admin@faults.test", full_name="Admin", roles=("admin",))
        ids = [await con.fetchval("INSERT INTO dentists (name, timezone, available_times) VALUES ($1, 'UTC', $2) "
                                  "RETURNING id", f"Dr {i}", ALL_DAY) for i in range(dentists)]
        people = []
        for i in range(patients):
            uid = await users.create_user(con, email=f"p{i}-{uuid.uuid4().hex[:6]}@faults.test", full_name=f"P {i}")
            people.append((uid, issue_token(SECRET, uid, ttl=3600)))
    finally:
        await con.close()
    return Clinic(dsn, admin, ids, people)


@pytest.fixture
async def hubs(tmp_path: Path) -> AsyncIterator[HubProcesses]:
    procs = HubProcesses("", tmp_path)
    yield procs
    procs.stop()


class Load:
    """Bookings as a careful client makes them: each one a slot and patient of
    its own and an Idempotency-Key, retried with that key (on another process
    after a connection error) until it is answered 201 or refused for good."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.statuses: collections.Counter[int | str] = collections.Counter()
        self.acked: dict[str, tuple[str, float]] = {}   # key -> (appointment id, when)
        self.refused: dict[str, Any] = {}                # key -> a final error body (409 and such)
        self.first_201_after: dict[float, float] = {}

    async def book(self, session: aiohttp.ClientSession, key: str, token: str, dentist: uuid.UUID, start: str,
                   *, deadline: float, prefer: int = 0, pause: float = 0.05) -> None:
        body = {"dentist_id": str(dentist), "appointment_date": start, "appointment_type": "checkup"}
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
        target = prefer
        while time.monotonic() < deadline:
            url = self.urls[target % len(self.urls)]
            try:
                async with session.post(url + "/api/appointments", json=body, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    answer = await resp.json(content_type=None)
                    self.statuses[resp.status] += 1
                    if resp.status == 201:
                        self.acked[key] = (answer["id"], time.monotonic())
                        return
                    if resp.status in (503, 429):  # that process cannot now: another one, soon
                        target += 1
                        await asyncio.sleep(pause)  # a measuring client: sooner than Retry-After says
                        continue
                    self.refused[key] = answer
                    return
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                self.statuses[type(exc).__name__] += 1
                target += 1  # that process is gone: the next one
                await asyncio.sleep(pause)
        self.statuses["gave_up"] += 1

    def first_ack_after(self, moment: float) -> float | None:
        later = [at for _, at in self.acked.values() if at >= moment]
        return min(later) - moment if later else None


async def verify_bookings(dsn: str, load: Load, expected: dict[str, tuple[uuid.UUID, str]]) -> dict[str, int]:
    """0 lost (every acknowledged booking is in the database, as acknowledged),
    0 doubled (one appointment per intended booking, none that nobody asked for)."""
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch("SELECT id::text, dentist_id, appointment_date FROM appointments "
                               "WHERE status <> 'cancelled'")
    finally:
        await con.close()
    by_slot = collections.Counter((r["dentist_id"], r["appointment_date"]) for r in rows)
    ids = {r["id"] for r in rows}
    lost = [key for key, (appt, _) in load.acked.items() if appt not in ids]
    doubled = [slot for slot, n in by_slot.items() if n > 1]
    wanted = {(d, datetime.fromisoformat(s)) for d, s in expected.values()}
    strangers = [r["id"] for r in rows if (r["dentist_id"], r["appointment_date"]) not in wanted]
    assert not lost, f"acknowledged bookings lost: {lost}"
    assert not doubled and not strangers, f"doubled: {doubled}, unasked for: {strangers}"
    assert len(ids) <= len(expected)
    return {"in_database": len(ids), "acknowledged": len(load.acked)}


async def health_of(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    try:
        async with session.get(url + "/health", timeout=aiohttp.ClientTimeout(total=3)) as resp:
            return resp.status, await resp.json(content_type=None)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        return 0, {"error": type(exc).__name__}


class Proxy:
    """A TCP proxy between one hub process and PostgreSQL: `cut()` closes it
    and every connection through it, `mend()` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}
