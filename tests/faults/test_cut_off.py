"""One hub process cut off from PostgreSQL (a proxy between them, stopped)
while another keeps serving: it refuses writes within seconds and says why,
its clients go elsewhere and resume, and nothing doubles when it comes back."""

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
from tests.faults.conftest import Load, Proxy, health_of, make_clinic, verify_bookings

# A cluster and hub processes of its own to start, and load around the fault: more than the default.
pytestmark = pytest.mark.timeout(300)

WORKERS = 6


async def test_a_process_cut_off_from_the_database(cluster, hubs) -> None:
    clinic = await make_clinic(cluster.dsn, patients=40)
    proxy = Proxy(cluster.port)
    await proxy.mend()
    hubs.dsn = cluster.dsn
    [healthy] = await hubs.start(1)
    [cut] = await hubs.start(1, DATABASE_URL=proxy.dsn())
    # A subscriber on the process about to be cut off, which knows the other one too.
    subscriber = RealtimeClient([cut, healthy], issue_token(SECRET, clinic.admin))
    versions: dict[str, list[int]] = collections.defaultdict(list)

    def record(msg) -> None:
        inner = msg.payload.get("payload") or {}
        if inner.get("dentist_id") and "version" in inner:
            versions[str(inner["dentist_id"])].append(int(inner["version"]))

    await subscriber.connect()
    for dentist in clinic.dentists:
        await subscriber.channel(f"appointments:dentist_id={dentist}").on("*", record).join()

    load = Load([cut, healthy])
    slots = iter(clinic.slots(3000))
    counter = itertools.count()
    intended: dict[str, tuple[uuid.UUID, str]] = {}
    stop = asyncio.Event()

    async def booker(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            i = next(counter)
            key = f"cut-{i}"
            dentist, start = intended[key] = next(slots)
            _, token = clinic.patients[i % len(clinic.patients)]
            await load.book(session, key, token, dentist, start, deadline=time.monotonic() + 30)  # the cut one first
            await asyncio.sleep(0.05)

    try:
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(booker(session)) for _ in range(WORKERS)]
            await eventually(lambda: len(load.acked) >= 20, timeout=30, what="bookings before the cut")
            await proxy.cut()
            cut_at = time.monotonic()
            # It says why within seconds, while the other stays healthy.
            while True:
                status, body = await health_of(session, cut)
                if status == 503:
                    break
                assert time.monotonic() - cut_at < 5, body
                await asyncio.sleep(0.1)
            said_why = time.monotonic() - cut_at
            assert "database" in body["reason"], body
            assert (await health_of(session, healthy))[0] == 200
            async with session.post(cut + "/api/appointments", headers={
                    "Authorization": f"Bearer {clinic.patients[0][1]}"}, json={
                    "dentist_id": str(clinic.dentists[0]), "appointment_date": clinic.slots(1, days_from=80)[0][1],
                    "appointment_type": "checkup"}) as resp:
                refused = await resp.json()
                assert resp.status == 503 and resp.headers["Retry-After"], refused
                assert refused["error"]["code"] == "SERVICE_UNAVAILABLE"
            await asyncio.sleep(4.0)  # bookings go to the healthy process meanwhile
            await proxy.mend()
            mended = time.monotonic()
            while (await health_of(session, cut))[0] != 200:
                assert time.monotonic() - mended < 10, "the cut-off process did not recover"
                await asyncio.sleep(0.1)
            back = time.monotonic() - mended
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)

        figures = await verify_bookings(cluster.dsn, load, intended)
        print(f"\n[faults] process cut off: /health 503 after {said_why:.2f}s, 200 again {back:.2f}s after the "
              f"link came back; answers {dict(load.statuses)}; {figures}")
        assert load.statuses[500] == 0 and not load.refused and "gave_up" not in load.statuses, load.statuses
        assert figures["in_database"] == figures["acknowledged"] == len(intended)

        # The subscriber was sent elsewhere, resumed by version, and missed nothing.
        con = await asyncpg.connect(cluster.dsn)
        try:
            log = collections.defaultdict(list)
            for r in await con.fetch("SELECT dentist_id::text AS d, version FROM realtime_events "
                                     "WHERE table_name = 'appointments' ORDER BY dentist_id, version"):
                log[r["d"]].append(r["version"])
        finally:
            await con.close()
        assert subscriber.url.startswith(healthy.replace("http://", "ws://")), subscriber.url  # sent elsewhere
        deadline = time.monotonic() + 15
        while any(versions[d] != log[d] for d in log):
            assert all(v == sorted(set(v)) for v in versions.values()), "an event twice or out of order"
            assert time.monotonic() < deadline, {d: (len(versions[d]), len(log[d])) for d in log}
            await asyncio.sleep(0.1)
    finally:
        await subscriber.close()
        if proxy._server is not None:
            await proxy.cut()
