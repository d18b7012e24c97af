"""No sequence of concurrent requests, on one or several hub processes, ever
books one slot twice."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from datetime import datetime, timedelta

import aiohttp

from tests.conftest import eventually, metric, slot_at


async def _patients(api, n: int) -> list:
    return [await api.user() for _ in range(n)]


async def _book(session: aiohttp.ClientSession, url: str, who, dentist_id: str, start: str,
                key: str) -> tuple[int, dict]:
    """A booking as a careful client makes it. A 503 (the dentist's actor could
    not answer within its 5 s budget on a loaded machine, or the database was
    slow or away) is retried after Retry-After with the same Idempotency-Key,
    which answers the first attempt's outcome if that one was made after all."""
    deadline = time.monotonic() + 60
    while True:
        async with session.post(f"{url}/api/appointments", headers={**who.headers, "Idempotency-Key": key}, json={
                "dentist_id": dentist_id, "appointment_date": start, "appointment_type": "checkup"}) as resp:
            body = await resp.json()
            if resp.status != 503 or time.monotonic() > deadline:
                return resp.status, body
            await asyncio.sleep(float(resp.headers["Retry-After"]))


async def _race(session: aiohttp.ClientSession, urls: list[str], patients, dentist_id: str, start: str) -> collections.Counter:
    async def one(i: int, who) -> tuple[int, str]:
        status, body = await _book(session, urls[i % len(urls)], who, dentist_id, start, f"race-{i}")
        return status, body.get("error", {}).get("code", "")

    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(patients)))
    return collections.Counter(results)


async def test_hundred_patients_one_slot(api, clinic) -> None:
    patients = await _patients(api, 100)
    base = str(api.client.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        outcome = await _race(session, [base], patients, clinic.dentist_id, slot_at(days=20))
    assert outcome == {(201, ""): 1, (409, "SLOT_UNAVAILABLE"): 99}, outcome
    assert await api.pool.fetchval("SELECT count(*) FROM appointments WHERE dentist_id = $1", clinic.dentist_id) == 1


async def test_hundred_patients_one_slot_across_two_processes(api, clinic, hubs) -> None:
    urls = await hubs.start(2)
    patients = await _patients(api, 100)
    async with aiohttp.ClientSession() as session:
        # Warm both processes' actors first so each believes the slot is free.
        for url in urls:
            async with session.get(f"{url}/api/availability/{clinic.dentist_id}/slots?date={slot_at(days=21)[:10]}",
                                   headers=patients[0].headers) as resp:
                assert resp.status == 200
        outcome = await _race(session, urls, patients, clinic.dentist_id, slot_at(days=21))
    assert outcome == {(201, ""): 1, (409, "SLOT_UNAVAILABLE"): 99}, outcome


async def test_mixed_holds_and_bookings_never_overlap(api, clinic, hubs) -> None:
    """Random 30/60/90-minute holds and bookings on overlapping times, through
    two processes: the database ends with no two active appointments overlapping."""
    urls = await hubs.start(2)
    base = str(api.client.make_url("")).rstrip("/")
    urls.append(base)
    patients = await _patients(api, 40)
    rng = random.Random(7)
    day = datetime.fromisoformat(slot_at(days=22, hour=8))

    async def act(session: aiohttp.ClientSession, i: int, who) -> int:
        start = (day + timedelta(minutes=30 * rng.randrange(0, 12))).isoformat()
        kind = rng.choice(["checkup", "filling", "root_canal"])
        url = urls[i % len(urls)]
        if rng.random() < 0.4:
            async with session.post(f"{url}/api/availability/{clinic.dentist_id}/reservations", headers=who.headers,
                                    json={"slot_time": start, "appointment_type": kind}) as resp:
                return resp.status
        async with session.post(f"{url}/api/appointments", headers=who.headers, json={
                "dentist_id": clinic.dentist_id, "appointment_date": start, "appointment_type": kind}) as resp:
            return resp.status

    async with aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(*(act(session, i, p) for i, p in enumerate(patients * 2)))
    assert set(statuses) <= {201, 409}, statuses
    assert 201 in statuses
    overlaps = await api.pool.fetchval(
        "SELECT count(*) FROM appointments a JOIN appointments b ON a.id < b.id AND a.dentist_id = b.dentist_id "
        "AND a.status <> 'cancelled' AND b.status <> 'cancelled' "
        "AND tstzrange(a.appointment_date, a.ends_at) && tstzrange(b.appointment_date, b.ends_at) "
        "WHERE a.dentist_id = $1", clinic.dentist_id)
    assert overlaps == 0
    held_over_booked = await api.pool.fetchval(
        "SELECT count(*) FROM slot_reservations h JOIN appointments a ON a.dentist_id = h.dentist_id "
        "AND a.status <> 'cancelled' AND tstzrange(h.slot_time, add_minutes(h.slot_time, h.duration_minutes)) "
        "&& tstzrange(a.appointment_date, a.ends_at) WHERE h.dentist_id = $1 AND h.patient_id <> a.patient_id",
        clinic.dentist_id)
    assert held_over_booked == 0


async def test_change_in_another_process_reaches_this_one(api, clinic, hubs) -> None:
    [other] = await hubs.start(1)
    start = slot_at(days=23)
    slots_url = f"/api/availability/{clinic.dentist_id}/slots?date={start[:10]}"
    status, _ = await api.get(slots_url, clinic.patient)  # activate this process's actor
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{other}/api/appointments", headers=clinic.other_patient.headers, json={
                "dentist_id": clinic.dentist_id, "appointment_date": start, "appointment_type": "checkup"}) as resp:
            assert resp.status == 201

    async def available() -> bool:
        status, slots = await api.get(slots_url, clinic.patient)
        return next(s for s in slots if datetime.fromisoformat(s["start"]) == datetime.fromisoformat(start))["available"]

    async def taken() -> bool:
        return not await available()

    # Through LISTEN/NOTIFY, typically within milliseconds.
    await eventually(taken, what="the booking made in another process reaching this one")
    # SQL typed by hand reaches the actor the same way.
    await api.pool.execute("UPDATE appointments SET status = 'cancelled' WHERE dentist_id = $1", clinic.dentist_id)
    await eventually(available, what="a cancellation made with SQL reaching the actor")


async def test_three_processes_every_subscriber_gets_every_event_once(api, clinic, hubs) -> None:
    from hub.client import RealtimeClient

    urls = await hubs.start(3)
    subscribers = []
    for url in urls:
        client = RealtimeClient(url, clinic.admin.token)
        await client.connect()
        channel = client.channel(f"appointments:dentist_id={clinic.dentist_id}")
        await channel.join()
        subscribers.append((client, channel))
    patients = await _patients(api, 60)
    async with aiohttp.ClientSession() as session:
        async def attempt(i: int, who) -> int:
            status, _ = await _book(session, urls[i % 3], who, clinic.dentist_id, slot_at(days=24, hour=2 + i % 20),
                                    f"three-{i}")
            return status
        statuses = await asyncio.gather(*(attempt(i, p) for i, p in enumerate(patients)))
    assert collections.Counter(statuses) == {201: 20, 409: 40}  # three patients per slot, one wins each
    stored = sorted(str(r["id"]) for r in await api.pool.fetch(
        "SELECT id FROM appointments WHERE dentist_id = $1", clinic.dentist_id))
    assert len(stored) == 20
    for client, channel in subscribers:
        received = []
        while len(received) < 20:
            msg = await channel.next(timeout=5)
            if msg.event == "broadcast" and msg.payload["event"] == "INSERT":
                received.append(msg.payload["payload"]["new"]["id"])
        try:
            extra = await channel.next(timeout=0.3)
            assert not (extra.event == "broadcast" and extra.payload["event"] == "INSERT"), "duplicate delivery"
        except asyncio.TimeoutError:
            pass
        assert sorted(received) == stored
        await client.close()
    # Each process serves its own /metrics; scraped together they count every booking once.
    created = 0.0
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            created += metric(text, "hub_booking_appointments_total", change="created")
    assert created == 20
