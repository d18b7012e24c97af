"""A hub process SIGKILLed under booking load, the client retrying with the
same Idempotency-Key on the other process: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
import uuid

import aiohttp
import pytest

from tests.conftest import eventually
from tests.faults.conftest import Load, make_clinic, verify_bookings

# A cluster and hub processes of its own to start, and load around the fault: more than the default.
pytestmark = pytest.mark.timeout(300)

WORKERS = 8


async def test_worker_killed_under_load(cluster, hubs) -> None:
    clinic = await make_clinic(cluster.dsn, patients=40)
    hubs.dsn = cluster.dsn
    urls = await hubs.start(2)
    load = Load(urls)
    slots = iter(clinic.slots(3000))
    counter = itertools.count()
    intended: dict[str, tuple[uuid.UUID, str]] = {}
    stop = asyncio.Event()

    async def booker(session: aiohttp.ClientSession, worker: int) -> None:
        while not stop.is_set():
            i = next(counter)
            key = f"kill-{i}"
            dentist, start = intended[key] = next(slots)
            _, token = clinic.patients[i % len(clinic.patients)]
            await load.book(session, key, token, dentist, start, deadline=time.monotonic() + 30, prefer=worker)
            await asyncio.sleep(0.02)

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(booker(session, w)) for w in range(WORKERS)]
        await eventually(lambda: len(load.acked) >= 20, timeout=30, what="bookings before the fault")
        before = len(load.acked)
        victim = hubs.procs[0]
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        victim.wait(10)
        await eventually(lambda: len(load.acked) >= before + 20, timeout=30, what="bookings on the survivor")
        stop.set()
        await asyncio.gather(*tasks)

    figures = await verify_bookings(cluster.dsn, load, intended)
    gap = load.first_ack_after(killed)
    print(f"\n[faults] worker SIGKILLed after {before} bookings: next booking {gap:.2f}s later; answers "
          f"{dict(load.statuses)}; {figures}")
    assert load.statuses[500] == 0 and not load.refused and "gave_up" not in load.statuses, (load.statuses,
                                                                                             load.refused)
    assert figures["in_database"] == figures["acknowledged"] == len(intended)
