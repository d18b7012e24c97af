"""Availability under hostile input and failures (issue 13.2, 13.3, 13.7):
no caller's input can pause a dentist, /health says when one is paused, and
what the slot list says is what a hold gets."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import msgspec
import pytest

from actors.dentist import DentistActor
from tests.conftest import Api, Clinic, assert_error, slot_at
from web.app import DIRECTORY


async def book(api: Api, clinic: Clinic, start: str, **headers: str) -> tuple[int, dict]:
    return await api.post("/api/appointments", clinic.patient, headers=headers, json={
        "dentist_id": clinic.dentist_id, "appointment_date": start, "appointment_type": "checkup"})


async def assert_still_serving(api: Api, clinic: Clinic, days: int) -> None:
    status, body = await book(api, clinic, slot_at(days=days))
    assert status == 201, body
    assert api.client.app[DIRECTORY].crash_looping() == []
    status, body = await api.get("/health")
    assert status == 200, body


@pytest.mark.parametrize("query", ["date=9999-12-31", "date=0001-01-01", "from=9999-12-01&to=9999-12-31",
                                   "from=2026-01-01&to=9999-12-31"])
async def test_far_dates_are_validation_errors_and_pause_nobody(api: Api, clinic: Clinic, query: str) -> None:
    for _ in range(5):  # three used to pause the dentist for a minute
        status, body = await api.get(f"/api/availability/{clinic.dentist_id}/slots?{query}", clinic.patient)
        assert_error(status, body, 400, "VALIDATION_ERROR")
    await assert_still_serving(api, clinic, days=11)


async def test_far_appointment_dates_are_validation_errors(api: Api, clinic: Clinic) -> None:
    for start in ("9999-12-31T23:30:00-05:00", "9999-12-31T23:30:00+00:00", "0001-01-01T00:00:00+05:00"):
        status, body = await book(api, clinic, start)
        assert_error(status, body, 400, "VALIDATION_ERROR")
        assert body["error"]["details"]["field"] == "appointment_date"
        status, body = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.patient,
                                      json={"slot_time": start})
        assert_error(status, body, 400, "VALIDATION_ERROR")
    await assert_still_serving(api, clinic, days=12)


async def raw_post(api: Api, path: str, headers: bytes, body: bytes) -> tuple[int, dict]:
    """A request written byte by byte, with header bytes no client library would send."""
    reader, writer = await asyncio.open_connection(api.client.server.host, api.client.server.port)
    try:
        writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
                     + headers + b"\r\n" + body)
        head, _, rest = (await reader.read()).partition(b"\r\n\r\n")
        return int(head.split()[1]), msgspec.json.decode(rest)
    finally:
        writer.close()


@pytest.mark.parametrize("key", [b"\xff", b"\xc3\xa9", b"tab\there", b"x" * 201])
async def test_bad_idempotency_keys_are_validation_errors(api: Api, clinic: Clinic, key: bytes) -> None:
    body = msgspec.json.encode({"dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=13),
                                "appointment_type": "checkup"})
    headers = f"Authorization: Bearer {clinic.patient.token}\r\n".encode() + b"Idempotency-Key: " + key + b"\r\n"
    for _ in range(4):  # three used to pause the dentist for a minute
        status, answer = await raw_post(api, "/api/appointments", headers, body)
        error = assert_error(status, answer, 400, "VALIDATION_ERROR")
        assert error["details"]["field"] == "Idempotency-Key"
    await assert_still_serving(api, clinic, days=14)


async def test_a_crashing_message_fails_itself_only(api: Api, clinic: Clinic, monkeypatch) -> None:
    """A bug hit by one request, again and again: a 500 each time, never a paused dentist."""
    def broken(self, msg):
        self.booked = None  # a half-changed memory, as a real bug would leave
        raise OverflowError("bug in a handler")

    original = DentistActor._slots
    monkeypatch.setattr(DentistActor, "_slots", broken)
    url = f"/api/availability/{clinic.dentist_id}/slots?date={slot_at(days=15)[:10]}"
    for _ in range(5):
        status, body = await api.get(url, clinic.patient)
        assert_error(status, body, 500, "INTERNAL_ERROR")
    monkeypatch.setattr(DentistActor, "_slots", original)
    await assert_still_serving(api, clinic, days=15)  # reloaded in place: memory is sound again
    status, slots = await api.get(url, clinic.patient)
    assert status == 200 and any(s["status"] == "busy" for s in slots)


async def test_a_dentist_that_cannot_load_is_paused_and_health_says_so(api: Api, clinic: Clinic,
                                                                       monkeypatch) -> None:
    async def broken(self, con):
        raise RuntimeError("cannot load")

    monkeypatch.setattr(DentistActor, "_load", broken)
    directory = api.client.app[DIRECTORY]
    live = directory.peek(clinic.dentist_id)
    if live is not None:  # a fresh activation must load
        live.stop()
    for _ in range(3):
        status, body = await book(api, clinic, slot_at(days=16))
        assert status in (500, 503), body
    async with api.client.post("/api/appointments", headers=clinic.patient.headers, json={
            "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=16),
            "appointment_type": "checkup"}) as resp:
        error = assert_error(resp.status, await resp.json(), 503, "SERVICE_UNAVAILABLE")
        assert error["details"]["reason"] == "actor_paused"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    status, body = await api.get("/health")
    assert status == 503, body
    assert body["checks"]["actors"]["status"] == "error"
    assert clinic.dentist_id in body["reason"] and "paused" in body["reason"]
    # others are unaffected
    status, body = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.other_dentist_id, "appointment_date": slot_at(days=16), "appointment_type": "checkup"})
    assert status in (201, 503)  # the other dentist loads through the same broken _load: only its own fence matters
    directory._crashes.clear()  # the shared app must not stay paused for later tests


async def test_an_expired_hold_left_behind_does_not_block_the_slot(api: Api, clinic: Clinic) -> None:
    """A hold whose process died: the slot list says free, so holding it succeeds
    (the row used to block new holds at the exclusion constraint until the sweeper ran)."""
    start = slot_at(days=17)
    directory = api.client.app[DIRECTORY]
    live = directory.peek(clinic.dentist_id)
    if live is not None:
        live.stop()
    await api.pool.execute(
        "INSERT INTO public.slot_reservations (dentist_id, patient_id, slot_time, duration_minutes, expires_at) "
        "VALUES ($1, $2, $3, 30, now() - interval '1 second')",
        uuid.UUID(clinic.dentist_id), clinic.other_patient.id, datetime.fromisoformat(start))
    status, slots = await api.get(f"/api/availability/{clinic.dentist_id}/slots?date={start[:10]}", clinic.patient)
    assert status == 200
    slot = next(s for s in slots if datetime.fromisoformat(s["start"]) == datetime.fromisoformat(start))
    assert slot["status"] == "free", slot
    status, hold = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.patient,
                                  json={"slot_time": start})
    assert status == 201, hold
    left = await api.pool.fetchval("SELECT count(*) FROM public.slot_reservations WHERE dentist_id = $1 "
                                   "AND slot_time = $2", uuid.UUID(clinic.dentist_id),
                                   datetime.fromisoformat(start))
    assert left == 1  # the expired one is gone, its patient told
    told = await api.pool.fetchval("SELECT count(*) FROM public.notifications WHERE user_id = $1 "
                                   "AND kind = 'hold_expired'", clinic.other_patient.id)
    assert told == 1
    # and a hold overlapping it partly (a 60-minute type) frees it the same way
    later = datetime.fromisoformat(start) + timedelta(hours=2)
    await api.pool.execute(
        "INSERT INTO public.slot_reservations (dentist_id, patient_id, slot_time, duration_minutes, expires_at) "
        "VALUES ($1, $2, $3, 30, now() - interval '1 second')",
        uuid.UUID(clinic.dentist_id), clinic.other_patient.id, later + timedelta(minutes=30))
    status, hold = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.other_patient,
                                  json={"slot_time": later.isoformat(), "appointment_type": "filling"})
    assert status == 201, hold
