"""Three hub processes, 10,000 concurrent attempts on 50 slots: exactly 50 bookings."""

from __future__ import annotations

import asyncio
import collections
import random
import time

import aiohttp
import asyncpg
import pytest

from tests.faults.conftest import make_clinic

# A cluster and hub processes of its own to start, and load around the fault: more than the default.
pytestmark = pytest.mark.timeout(300)

ATTEMPTS = 10_000
SLOTS = 50
IN_FLIGHT = 200


async def test_ten_thousand_attempts_on_fifty_slots(cluster, hubs) -> None:
    clinic = await make_clinic(cluster.dsn, dentists=2, patients=200)
    hubs.dsn = cluster.dsn
    urls = await hubs.start(3)
    slots = clinic.slots(SLOTS)
    statuses: collections.Counter[int | str] = collections.Counter()
    gate = asyncio.Semaphore(IN_FLIGHT)
    rng = random.Random(13)

    async def attempt(session: aiohttp.ClientSession, n: int) -> None:
        dentist, start = slots[rng.randrange(SLOTS)]
        _, token = clinic.patients[rng.randrange(len(clinic.patients))]
        async with gate:
            try:
                async with session.post(urls[n % len(urls)] + "/api/appointments", headers={
                        "Authorization": f"Bearer {token}"}, json={
                        "dentist_id": str(dentist), "appointment_date": start, "appointment_type": "checkup"},
                        timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                statuses[type(exc).__name__] += 1

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as session:
        await asyncio.gather(*(attempt(session, n) for n in range(ATTEMPTS)))
    took = time.monotonic() - started
    con = await asyncpg.connect(cluster.dsn)
    try:
        booked = await con.fetchval("SELECT count(*) FROM appointments WHERE status <> 'cancelled'")
    finally:
        await con.close()
    print(f"\n[faults] {ATTEMPTS} attempts on {SLOTS} slots over {len(urls)} processes in {took:.1f}s: "
          f"answers {dict(statuses)}; {booked} in the database")
    assert statuses[201] == SLOTS and booked == SLOTS
    assert statuses[500] == 0 and sum(statuses.values()) == ATTEMPTS
