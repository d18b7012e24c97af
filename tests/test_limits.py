"""Abuse limits: caps on a patient's own appointments (race-free, staff exempt)
and per-user / per-address rate limits on REST writes (429 with Retry-After)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from hub.config import Settings
from tests.conftest import assert_error, slot_at
from web.limits import Buckets


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, max_future_appointments_per_dentist=3, max_appointments_per_day=2)


async def book(api, who, dentist_id: str, when: str, **extra):
    return await api.post("/api/appointments", who, json={
        "dentist_id": dentist_id, "appointment_date": when, "appointment_type": "checkup", **extra})


async def test_caps_on_a_patients_own_appointments(api, clinic) -> None:
    d1, d2, patient = clinic.dentist_id, clinic.other_dentist_id, clinic.patient
    assert (await book(api, patient, d1, slot_at(3, 9)))[0] == 201
    assert (await book(api, patient, d2, slot_at(3, 10)))[0] == 201
    status, body = await book(api, patient, d2, slot_at(3, 11))  # a third on one day, at any dentist
    error = assert_error(status, body, 409, "CONFLICT")
    assert error["details"] == {"limit": 2, "rule": "max_appointments_per_day"}
    assert (await book(api, patient, d1, slot_at(4, 9)))[0] == 201
    status, last = await book(api, patient, d1, slot_at(5, 9))
    assert status == 201
    status, body = await book(api, patient, d1, slot_at(6, 9))  # a fourth upcoming with one dentist
    assert assert_error(status, body, 409, "CONFLICT")["details"]["rule"] == "max_future_appointments_per_dentist"
    # Staff booking on the patient's behalf is exempt; cancelling frees room under the cap.
    status, _ = await book(api, clinic.admin, d1, slot_at(6, 10), patient_id=str(patient.id))
    assert status == 201
    assert (await api.delete(f"/api/appointments/{last['id']}", patient))[0] == 200
    assert (await book(api, patient, d1, slot_at(7, 9)))[0] == 409  # the staff booking counts too
    # Moving an appointment into a full day is refused for the patient, allowed for staff.
    status, mine = await book(api, clinic.other_patient, d1, slot_at(8, 9))
    assert status == 201
    for hour in (9, 10):
        assert (await book(api, clinic.other_patient, d2, slot_at(9, hour)))[0] == 201
    status, body = await api.put(f"/api/appointments/{mine['id']}", clinic.other_patient,
                                 json={"appointment_date": slot_at(9, 11)})
    assert assert_error(status, body, 409, "CONFLICT")["details"]["rule"] == "max_appointments_per_day"
    status, _ = await api.put(f"/api/appointments/{mine['id']}", clinic.admin, json={"appointment_date": slot_at(9, 11)})
    assert status == 200


async def test_caps_hold_under_concurrent_bookings(api, clinic) -> None:
    """Twelve bookings at once, over two dentists and days: the caps are counted
    under locks, so exactly as many as they allow succeed."""
    patient = clinic.patient
    attempts = [book(api, patient, d, slot_at(day, 8 + i))
                for d in (clinic.dentist_id, clinic.other_dentist_id) for day in (10, 11) for i in range(3)]
    statuses = sorted(s for s, _ in await asyncio.gather(*attempts))
    # Per day at most 2 (over both dentists): 2 days x 2 = 4, and at most 3 per dentist.
    assert statuses.count(201) == 4 and statuses.count(409) == 8, statuses
    count = await api.pool.fetchval("SELECT count(*) FROM appointments WHERE patient_id = $1", patient.id)
    assert count == 4


def test_token_buckets_refill_and_stay_bounded() -> None:
    now = [0.0]
    buckets = Buckets(60, max_keys=3, clock=lambda: now[0])  # 1 a second, 10 at once
    assert [buckets.take("a") for _ in range(10)] == [0.0] * 10
    assert buckets.take("a") == pytest.approx(1.0)
    now[0] += 1.0
    assert buckets.take("a") == 0.0
    for key in "bcde":
        buckets.take(key)
    assert len(buckets) == 3  # the least recently used keys went first
    assert Buckets(0).take("x") == 0.0  # 0 turns it off


@pytest.mark.parametrize("limit", ["user", "ip"])
async def test_writes_past_the_rate_are_429_with_retry_after(aiohttp_client, settings, limit) -> None:
    from tests.conftest import Api
    from web import create_app

    per_minute = {"rate_limit_user_per_minute": 60} if limit == "user" else {"rate_limit_ip_per_minute": 60}
    api = Api(await aiohttp_client(create_app(dataclasses.replace(settings, **per_minute))))
    first, second = await api.user(), await api.user()
    writers = [first] * 12 if limit == "user" else [first, second] * 6
    statuses = []
    for who in writers:
        async with api.client.put("/api/profiles/me", json={"full_name": "N"}, headers=who.headers) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                body = await resp.json()
                assert body["error"]["code"] == "RATE_LIMITED"
                assert int(resp.headers["Retry-After"]) >= 1
    assert statuses[:10] == [200] * 10 and statuses[10:] == [429, 429], statuses
    for _ in range(3):  # reads are not limited
        assert (await api.get("/api/profiles/me", first))[0] == 200
    if limit == "user":  # another user is not held back by the first
        assert (await api.put("/api/profiles/me", second, json={"full_name": "M"}))[0] == 200
