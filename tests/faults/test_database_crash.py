"""PostgreSQL killed (SIGKILL of the postmaster and its processes) for 5 s
under booking load, with subscribers on two hub processes."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
import uuid

import aiohttp
import asyncpg
import pytest

from hub.auth import issue_token
from hub.client import RealtimeClient
from tests.conftest import SECRET, eventually
from tests.faults.conftest import Load, health_of, make_clinic, verify_bookings

# A cluster and hub processes of its own to start, and load around the fault: more than the default.
pytestmark = pytest.mark.timeout(300)

OUTAGE = 5.0
WORKERS = 6


async def test_database_killed_under_load(cluster, hubs) -> None:
    clinic = await make_clinic(cluster.dsn, patients=40)
    hubs.dsn = cluster.dsn
    urls = await hubs.start(2)
    # Subscribers: an admin on each process, on every dentist's appointments channel.
    subscribers = [RealtimeClient(url, issue_token(SECRET, clinic.admin)) for url in urls]
    seen: dict[tuple[int, str], list[int]] = collections.defaultdict(list)
    for n, client in enumerate(subscribers):
        await client.connect()
        for dentist in clinic.dentists:
            def record(msg, n=n) -> None:
                inner = msg.payload.get("payload") or {}
                if inner.get("dentist_id") and "version" in inner:
                    seen[(n, str(inner["dentist_id"]))].append(int(inner["version"]))
            await client.channel(f"appointments:dentist_id={dentist}").on("*", record).join()

    load = Load(urls)
    slots = iter(clinic.slots(3000))
    counter = itertools.count()
    intended: dict[str, tuple[uuid.UUID, str]] = {}
    health: list[tuple[float, int, int, str]] = []  # (when, process, status, reason)
    stop = asyncio.Event()

    async def booker(session: aiohttp.ClientSession, worker: int) -> None:
        while not stop.is_set():
            i = next(counter)
            key = f"crash-{i}"
            dentist, start = intended[key] = next(slots)
            _, token = clinic.patients[i % len(clinic.patients)]
            await load.book(session, key, token, dentist, start, deadline=time.monotonic() + 60, prefer=worker)
            await asyncio.sleep(0.05)

    async def watch(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            for n, url in enumerate(urls):
                status, body = await health_of(session, url)
                health.append((time.monotonic(), n, status, body.get("reason", "")))
            await asyncio.sleep(0.25)

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(booker(session, w)) for w in range(WORKERS)]
        watcher = asyncio.create_task(watch(session))
        await eventually(lambda: len(load.acked) >= 20, timeout=30, what="bookings before the fault")
        killed = time.monotonic()
        cluster.kill()
        await asyncio.sleep(OUTAGE)  # the outage itself
        loop = asyncio.get_running_loop()
        starting = loop.run_in_executor(None, cluster.start)
        ready = await cluster.wait_ready()
        await starting
        await asyncio.sleep(4.0)  # load after the fault
        stop.set()
        await asyncio.gather(*tasks, watcher)

    try:
        recovery = load.first_ack_after(ready)
        figures = await verify_bookings(cluster.dsn, load, intended)
        print(f"\n[faults] database killed for {ready - killed:.1f}s: first booking {recovery:.2f}s after "
              f"PostgreSQL accepted connections; answers {dict(load.statuses)}; {figures}")
        assert load.statuses[500] == 0, load.statuses
        assert not load.refused, load.refused
        assert recovery is not None and recovery <= 2.0, recovery
        assert "gave_up" not in load.statuses

        # /health: 503 (with the reason) while the database is away, 200 again once it is back.
        during = [(s, r) for at, _, s, r in health if killed + 1.0 <= at <= ready - 0.2]
        assert during and all(s == 503 and "database" in r for s, r in during), during
        healthy_again = [at - ready for at, _, s, _ in health if at > ready and s == 200]
        assert healthy_again and healthy_again[0] <= 5.0, health[-10:]
        print(f"[faults] /health 503 throughout the outage ({len(during)} polls), 200 again "
              f"{healthy_again[0]:.2f}s after")

        # Every subscriber: every appointment event once, in version order (live or replayed).
        con = await asyncpg.connect(cluster.dsn)
        try:
            log = collections.defaultdict(list)
            for r in await con.fetch("SELECT dentist_id::text AS d, version FROM realtime_events "
                                     "WHERE table_name = 'appointments' ORDER BY dentist_id, version"):
                log[r["d"]].append(r["version"])
        finally:
            await con.close()
        deadline = time.monotonic() + 20
        while any(seen[(n, d)] != log[d] for n in range(len(subscribers)) for d in log):
            for n in range(len(subscribers)):
                for d in log:
                    got = seen[(n, d)]
                    assert got == sorted(set(got)), f"subscriber {n}, dentist {d}: out of order or twice"
            assert time.monotonic() < deadline, {(n, d): (len(seen[(n, d)]), len(log[d]))
                                                 for n in range(len(subscribers)) for d in log}
            await asyncio.sleep(0.1)
        print(f"[faults] {len(subscribers)} subscribers received all {sum(map(len, log.values()))} events "
              f"once, in order")
    finally:
        for client in subscribers:
            await client.close()
