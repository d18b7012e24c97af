"""The waitlist over real HTTP: freed slots are offered to the first in line,
declining or expiry passes them on, booking with the offer accepts, others
see the offered slot busy-tentative, and two hub processes never offer one
slot twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest

from hub.auth import issue_token
from hub.client import RealtimeClient
from services import users
from tests.conftest import SECRET, Api, assert_error, make_dentist, slot_at

DAYS = 3


def _day(days: int = DAYS) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).date().isoformat()


async def _join(api: Api, who, dentist_id: str, **extra: Any) -> dict:
    body = {"dentist_id": dentist_id, "appointment_type": "checkup", "earliest_date": _day(),
            "latest_date": _day(), **extra}
    status, entry = await api.post("/api/waitlist", who, json=body)
    assert status == 201, entry
    return entry


async def _book(api: Api, who, dentist_id: str, start: str, **extra: Any) -> dict:
    status, appt = await api.post("/api/appointments", who, json={
        "dentist_id": dentist_id, "appointment_date": start, "appointment_type": "checkup", **extra})
    assert status == 201, appt
    return appt


async def _offer(api: Api, who, *, deadline: float = 10.0) -> dict | None:
    """The caller's (single) entry's offer, polled until one is there."""
    until = asyncio.get_running_loop().time() + deadline
    while True:
        status, entries = await api.get("/api/waitlist", who)
        assert status == 200, entries
        if entries[0]["offer"] is not None or asyncio.get_running_loop().time() > until:
            return entries[0]["offer"]
        await asyncio.sleep(0.05)


async def _slot_status(api: Api, who, dentist_id: str, start: str) -> str:
    status, slots = await api.get(f"/api/availability/{dentist_id}/slots?date={start[:10]}", who)
    assert status == 200
    wanted = datetime.fromisoformat(start)
    return next(s["status"] for s in slots if datetime.fromisoformat(s["start"]) == wanted)


async def test_cancel_offers_to_first_then_decline_passes_it_on(api, clinic) -> None:
    start = slot_at(days=DAYS, hour=10)
    appt = await _book(api, clinic.other_patient, clinic.dentist_id, start)
    first, second = await api.user(), await api.user()
    e1 = await _join(api, first, clinic.dentist_id)
    e2 = await _join(api, second, clinic.dentist_id, time_ranges=["09:00-12:00"], weekdays=[
        datetime.fromisoformat(start).strftime("%A").lower()])
    await _join(api, await api.user(), clinic.dentist_id, time_ranges=["13:00-17:00"])  # never matches 10:00
    assert e1["offer"] is None and e1["status"] == "waiting"

    socket = RealtimeClient(str(api.client.make_url("")).rstrip("/"), first.token)
    await socket.connect()
    try:
        channels = [socket.channel(f"{kind}={first.id}") for kind in ("notifications:user_id",
                                                                       "appointments:patient_id")]
        for channel in channels:
            await channel.join()
        status, _ = await api.delete(f"/api/appointments/{appt['id']}", clinic.admin)
        assert status == 200
        offer = await _offer(api, first)  # the cancellation's own turn made the offer
        for channel in channels:  # the offer reaches the patient's channels as `waitlist_offer`
            while (msg := await channel.next(5)).event != "broadcast" or msg.payload["event"] != "waitlist_offer":
                pass
            assert msg.payload["payload"]["reservation_id"] == offer["reservation_id"]
            assert msg.payload["payload"]["waitlist_id"] == e1["id"]
    finally:
        await socket.close()
    assert offer is not None and datetime.fromisoformat(offer["slot_time"]) == datetime.fromisoformat(start)
    remaining = datetime.fromisoformat(offer["expires_at"]) - datetime.now(timezone.utc)
    assert timedelta(minutes=14) < remaining <= timedelta(minutes=15)
    assert (await api.get("/api/waitlist", second))[1][0]["offer"] is None  # one offer per slot
    status, notes = await api.get("/api/notifications", first)
    offered = [n for n in notes["data"] if n["kind"] == "waitlist_offer"]
    assert len(offered) == 1 and offered[0]["data"]["reservation_id"] == offer["reservation_id"]
    # Held for `first`: busy-tentative to everyone else, bookable by nobody else.
    assert await _slot_status(api, clinic.patient, clinic.dentist_id, start) == "busy-tentative"
    assert await _slot_status(api, first, clinic.dentist_id, start) == "free"
    status, body = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": start, "appointment_type": "checkup"})
    assert_error(status, body, 409, "SLOT_UNAVAILABLE")

    status, body = await api.post(f"/api/waitlist/{e1['id']}/decline", second)
    assert_error(status, body, 404, "NOT_FOUND")  # not theirs
    status, declined = await api.post(f"/api/waitlist/{e1['id']}/decline", first)
    assert status == 200 and declined["offer"] is None and declined["status"] == "waiting"
    offer2 = await _offer(api, second)
    assert offer2 is not None and offer2["slot_time"] == offer["slot_time"]
    assert offer2["reservation_id"] != offer["reservation_id"]
    assert (await api.get("/api/waitlist", first))[1][0]["offer"] is None  # never the same slot again
    status, body = await api.post(f"/api/waitlist/{e1['id']}/decline", first)
    assert_error(status, body, 409, "CONFLICT")

    # Booking with the offer's hold accepts it.
    booked = await _book(api, second, clinic.dentist_id, start, reservation_id=offer2["reservation_id"])
    status, entries = await api.get("/api/waitlist", second)
    assert entries[0]["status"] == "booked" and entries[0]["appointment_id"] == booked["id"]
    assert entries[0]["offer"] is None and e2["id"] == entries[0]["id"]
    rows = await api.pool.fetch("SELECT outcome FROM waitlist_offers WHERE entry_id = ANY($1::uuid[]) "
                                "ORDER BY created_at", [e1["id"], e2["id"]])
    assert [r["outcome"] for r in rows] == ["declined", "accepted"]


async def test_expiry_passes_the_offer_on(api, settings, aiohttp_client) -> None:
    import dataclasses

    from web import create_app

    fast = Api(await aiohttp_client(create_app(dataclasses.replace(settings, waitlist_offer_minutes=1))))
    admin = await fast.user("admin")
    dentist_id = await make_dentist(fast, admin)
    start = slot_at(days=DAYS, hour=15)
    holder = await fast.user()
    status, hold = await fast.post(f"/api/availability/{dentist_id}/reservations", holder, json={"slot_time": start})
    assert status == 201
    first, second = await fast.user(), await fast.user()
    await _join(fast, first, dentist_id)
    await _join(fast, second, dentist_id)
    status, _ = await fast.delete(f"/api/reservations/{hold['id']}", holder)  # a released hold frees it
    assert status == 204
    offer = await _offer(fast, first)
    assert offer is not None
    # Let the one-minute offer run out without waiting a minute: its clock moves into the past, and
    # the hold's change reaches the actor, whose expiry timer then frees it.
    await fast.pool.execute("UPDATE waitlist_offers SET expires_at = now() - interval '1 second' WHERE id = $1",
                            offer["reservation_id"])
    await fast.pool.execute("UPDATE slot_reservations SET expires_at = now() - interval '1 second' WHERE id = $1",
                            offer["reservation_id"])
    offer2 = await _offer(fast, second, deadline=15)
    assert offer2 is not None and offer2["slot_time"] == offer["slot_time"]
    outcome = await fast.pool.fetchval("SELECT outcome FROM waitlist_offers WHERE id = $1", offer["reservation_id"])
    assert outcome == "expired"
    # Leaving with a live offer frees the slot again (nobody else waits now).
    status, entries = await fast.get("/api/waitlist", second)
    status, _ = await fast.delete(f"/api/waitlist/{entries[0]['id']}", second)
    assert status == 204
    assert await _slot_status(fast, holder, dentist_id, start) == "free"


async def test_bad_input_is_refused(api, clinic) -> None:
    url = "/api/waitlist"
    base = {"appointment_type": "checkup", "earliest_date": _day(), "latest_date": _day()}
    for body, field in (({**base, "latest_date": _day(1)}, "latest_date"),
                        ({**base, "appointment_type": "surgery"}, "appointment_type"),
                        ({**base, "weekdays": ["funday"]}, "weekdays[0]"),
                        ({**base, "time_ranges": ["12:00-09:00"]}, "time_ranges[0]"),
                        ({**base, "time_ranges": ["9-12"]}, "time_ranges[0]"),
                        ({**base, "earliest_date": "2020-01-01", "latest_date": "2020-01-02"}, "latest_date"),
                        ({**base, "extra": 1}, "extra")):
        status, error = await api.post(url, clinic.patient, json=body)
        assert assert_error(status, error, 400, "VALIDATION_ERROR")["details"]["field"] == field, body
    status, error = await api.post(url, clinic.patient, json={**base, "dentist_id": str(uuid.uuid4())})
    assert_error(status, error, 404, "NOT_FOUND")
    status, error = await api.post(url, clinic.patient, json={**base, "patient_id": str(clinic.other_patient.id)})
    assert_error(status, error, 403, "FORBIDDEN")
    status, error = await api.post(url, json=base)
    assert_error(status, error, 401, "UNAUTHORIZED")
    service = api.service()
    status, error = await api.get(url, service)
    assert_error(status, error, 400, "VALIDATION_ERROR")
    status, entry = await api.post(url, service, json={**base, "patient_id": str(clinic.patient.id)})
    assert status == 201 and entry["patient_id"] == str(clinic.patient.id) and entry["dentist_id"] is None
    status, mine = await api.get(f"{url}?patient_id={clinic.patient.id}", service)
    assert status == 200 and [e["id"] for e in mine] == [entry["id"]]
    status, error = await api.delete(f"{url}/{entry['id']}", clinic.other_patient)
    assert_error(status, error, 404, "NOT_FOUND")
    status, error = await api.delete(f"{url}/not-a-uuid", clinic.patient)
    assert_error(status, error, 400, "VALIDATION_ERROR")
    assert (await api.delete(f"{url}/{entry['id']}", clinic.patient))[0] == 204
    assert (await api.get(url, clinic.patient))[1] == []


async def test_two_processes_never_offer_one_slot_twice(hubs, dsn) -> None:
    """Slots freed on two processes at once, with patients waiting for any dentist:
    each slot is offered once, each entry gets at most one offer."""
    import asyncpg

    urls = await hubs.start(2)
    con = await asyncpg.connect(dsn)
    try:
        admin = await users.create_user(con, email=f"{uuid.uuid4().hex[:8]}@t.example", full_name="A",
                                        roles=("admin",))
        people = [await users.create_user(con, email=f"{uuid.uuid4().hex[:8]}@t.example", full_name="P",
                                          roles=("patient",)) for _ in range(8)]
    finally:
        await con.close()
    auth = lambda uid: {"Authorization": f"Bearer {issue_token(SECRET, uid)}"}  # noqa: E731
    day = _day(DAYS + 1)
    async with aiohttp.ClientSession() as http:
        async def call(method: str, url: str, uid: uuid.UUID, **kw: Any) -> Any:
            async with http.request(method, url, headers=auth(uid), **kw) as resp:
                assert resp.status < 300, await resp.text()
                return await resp.json() if resp.status != 204 else None

        dentists = []
        for _ in range(2):
            body = {"name": "Dr Race", "timezone": "UTC",
                    "available_times": {d: "00:00-24:00" for d in ("monday", "tuesday", "wednesday", "thursday",
                                                                   "friday", "saturday", "sunday")}}
            dentists.append((await call("POST", urls[0] + "/api/dentists", admin, json=body))["id"])
        booker, waiters = people[0], people[1:]
        appts = []
        for i, dentist in enumerate(dentists):  # two slots each, booked, to be cancelled at once
            for hour in (9, 10):
                appts.append((urls[i], (await call("POST", urls[i] + "/api/appointments", booker, json={
                    "dentist_id": dentist, "appointment_type": "checkup",
                    "appointment_date": f"{day}T{hour:02d}:00:00+00:00"}))["id"]))
        entries = [(await call("POST", urls[j % 2] + "/api/waitlist", uid, json={
            "appointment_type": "checkup", "earliest_date": day, "latest_date": day}))["id"]
            for j, uid in enumerate(waiters)]
        await asyncio.gather(*(call("DELETE", f"{url}/api/appointments/{a}", admin) for url, a in appts))

        con = await asyncpg.connect(dsn)
        try:
            until = asyncio.get_running_loop().time() + 15
            while True:
                live = await con.fetch("SELECT o.entry_id, o.dentist_id, o.slot_time FROM waitlist_offers o "
                                       "JOIN waitlist_entries e ON e.id = o.entry_id WHERE o.outcome IS NULL "
                                       "AND e.patient_id = ANY($1::uuid[])", waiters)
                if len(live) == 4 or asyncio.get_running_loop().time() > until:
                    break
                await asyncio.sleep(0.1)
        finally:
            await con.close()
    assert len(live) == 4, live
    assert len({(r["dentist_id"], r["slot_time"]) for r in live}) == 4  # every slot to one patient
    assert {str(r["entry_id"]) for r in live} == set(entries[:4])       # the first four in line, one each
