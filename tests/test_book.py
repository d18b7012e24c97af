"""The console's reads over real HTTP: the appointment book and patients by name (staff only)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from hub.config import Settings
from tests.conftest import Api, assert_error, make_dentist, slot_at
from web import create_app


@pytest.fixture
def settings(settings: Settings, scratch_dsn: str) -> Settings:
    """A database of the test's own, so the book shows exactly the clinic the test made."""
    return dataclasses.replace(settings, database_url=scratch_dsn, clinic_timezone="UTC")


async def name(api: Api, user: Any, full_name: str, phone: str | None = None, email: str | None = None) -> None:
    async with api.pool.acquire() as con:
        await con.execute("UPDATE public.profiles SET full_name = $2, phone = $3, email = coalesce($4, email) "
                          "WHERE id = $1", user.id, full_name, phone, email)


async def test_the_book_shows_each_dentists_day(api, clinic) -> None:
    when, held = slot_at(days=3, hour=10), slot_at(days=3, hour=11)
    await name(api, clinic.patient, "Pat Ient")
    status, appt = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": when, "appointment_type": "filling"})
    assert status == 201
    status, hold = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.other_patient,
                                  json={"slot_time": held})
    assert status == 201
    status, book = await api.get(f"/api/admin/book?date={when[:10]}", clinic.admin)
    assert status == 200, book
    assert book["timezone"] == "UTC" and book["view"] == "day" and len(book["days"]) == 1
    columns = {c["dentist_id"]: c for c in book["dentists"]}
    assert set(columns) == {clinic.dentist_id, clinic.other_dentist_id}
    mine = columns[clinic.dentist_id]
    [a] = mine["appointments"]
    assert (a["id"], a["patient_name"], a["appointment_type"]) == (appt["id"], "Pat Ient", "filling")
    assert datetime.fromisoformat(a["end"]) - datetime.fromisoformat(a["start"]) == timedelta(minutes=60)
    [h] = mine["holds"]
    assert h["id"] == hold["id"] and h["expires_at"] == hold["expires_at"]
    free = {datetime.fromisoformat(t) for t in mine["free"]}
    for taken in (when, slot_at(days=3, hour=10, minute=30), held):
        assert datetime.fromisoformat(taken) not in free
    assert datetime.fromisoformat(slot_at(days=3, hour=12)) in free
    assert mine["working"] == [{"start": book["days"][0]["start"], "end": book["days"][0]["end"]}]  # open all day


async def test_week_view_closures_and_overrides(api, clinic) -> None:
    day = (datetime.now(timezone.utc) + timedelta(days=10)).date()
    status, _ = await api.put(f"/api/clinic/closures/{day}", clinic.admin, json={"reason": "inventory"})
    assert status == 200
    status, book = await api.get(f"/api/admin/book?view=week&dentist_id={clinic.dentist_id}&date={day}",
                                 clinic.admin)
    assert status == 200, book
    assert len(book["days"]) == 7 and datetime.fromisoformat(book["days"][0]["start"]).weekday() == 0
    [column] = book["dentists"]
    assert {"date": str(day), "kind": "closure", "text": "Clinic closed: inventory"} in column["notes"]
    closed = next(d for d in book["days"] if d["date"] == str(day))
    assert not [w for w in column["working"] if w["start"] < closed["end"] and w["end"] > closed["start"]]


async def test_daylight_saving_days(aiohttp_client, settings) -> None:
    api = Api(await aiohttp_client(create_app(dataclasses.replace(settings, clinic_timezone="Europe/London"))))
    admin = await api.user("admin")
    await make_dentist(api, admin, timezone="Europe/London", available_times={"sunday": "09:00-17:00"})
    for day, hours in (("2026-10-25", 25), ("2027-03-28", 23)):
        status, book = await api.get(f"/api/admin/book?date={day}", admin)
        assert status == 200, book
        [d] = book["days"]
        assert datetime.fromisoformat(d["end"]) - datetime.fromisoformat(d["start"]) == timedelta(hours=hours)
        [work] = book["dentists"][0]["working"]
        assert datetime.fromisoformat(work["end"]) - datetime.fromisoformat(work["start"]) == timedelta(hours=8)


async def test_who_may_read_the_book(api, clinic) -> None:
    status, body = await api.get("/api/admin/book", clinic.patient)
    assert_error(status, body, 403, "FORBIDDEN")
    status, book = await api.get("/api/admin/book", clinic.dentist)
    assert status == 200 and [c["dentist_id"] for c in book["dentists"]] == [clinic.dentist_id]
    status, body = await api.get(f"/api/admin/book?dentist_id={clinic.other_dentist_id}", clinic.dentist)
    assert_error(status, body, 404, "NOT_FOUND")  # another dentist's column is not theirs to see
    for bad in ("date=2026-13-01", "date=9999-12-31", "view=month", "dentist_id=nope", "extra=1"):
        status, body = await api.get(f"/api/admin/book?{bad}", clinic.admin)
        assert_error(status, body, 400, "VALIDATION_ERROR")
    status, body = await api.get("/api/admin/book")
    assert_error(status, body, 401, "UNAUTHORIZED")


async def test_patients_by_name_email_or_phone(api, clinic) -> None:
    await name(api, clinic.patient, "Maria Gonzalez", "+44 (0)20 7946 0958", "maria.g@example.com")
    await name(api, clinic.other_patient, "Mario 100% Bros", "020 7000 0000")
    for q, expected in (("gonz", {clinic.patient.id}), ("MARIA.G@", {clinic.patient.id}), ("7946 0958", {clinic.patient.id}),
                        ("mari", {clinic.patient.id, clinic.other_patient.id}), ("100%", {clinic.other_patient.id}),
                        ("%", {clinic.other_patient.id}), ("_", set())):
        status, page = await api.get("/api/patients", clinic.admin, params={"q": q})
        assert status == 200, page
        assert {uuid.UUID(p["id"]) for p in page["data"]} == expected, q
    status, page = await api.get("/api/patients", clinic.admin, params={"q": "mari", "limit": "1"})
    assert page["pagination"] == {"total": 2, "limit": 1, "offset": 0, "hasMore": True}
    assert page["data"][0]["full_name"] == "Maria Gonzalez"  # by name
    status, page = await api.get("/api/patients", clinic.dentist, params={"q": "gonz"})
    assert status == 200 and len(page["data"]) == 1  # a dentist finds patients to book
    status, body = await api.get("/api/patients", clinic.patient, params={"q": "mari"})
    assert_error(status, body, 403, "FORBIDDEN")
    for bad in ({"limit": "0"}, {"limit": "51"}, {"q": "x" * 101}, {"offset": "-1"}):
        status, body = await api.get("/api/patients", clinic.admin, params=bad)
        assert_error(status, body, 400, "VALIDATION_ERROR")


async def test_a_desk_registers_and_books_a_patient(api, clinic) -> None:
    status, created = await api.post("/api/patients", clinic.admin, json={
        "full_name": " New Walk-in ", "phone": "+44 7700 900999", "email": "walkin@example.com",
        "date_of_birth": "1990-02-03"})
    assert status == 201, created
    assert (created["full_name"], created["phone"], created["roles"]) == ("New Walk-in", "+44 7700 900999", ["patient"])
    status, body = await api.post("/api/patients", clinic.admin, json={"full_name": "Twin", "email": "WALKIN@example.com"})
    assert_error(status, body, 409, "CONFLICT")
    for bad in ({"full_name": ""}, {"full_name": "x", "email": "not-an-email"}, {"full_name": "x", "phone": "call me"},
                {"full_name": "x", "role": "admin"}):
        status, body = await api.post("/api/patients", clinic.admin, json=bad)
        assert_error(status, body, 400, "VALIDATION_ERROR")
    status, body = await api.post("/api/patients", clinic.patient, json={"full_name": "Sneaky"})
    assert_error(status, body, 403, "FORBIDDEN")
    when, past = slot_at(days=2, hour=9), slot_at(days=2, hour=15)
    status, appt = await api.post("/api/appointments", clinic.admin, json={
        "dentist_id": clinic.dentist_id, "appointment_date": when, "appointment_type": "checkup",
        "patient_id": created["id"]})
    assert status == 201, appt
    status, other = await api.post("/api/appointments", clinic.admin, json={
        "dentist_id": clinic.other_dentist_id, "appointment_date": past, "appointment_type": "checkup",
        "patient_id": created["id"]})
    assert status == 201
    await api.delete(f"/api/appointments/{other['id']}", clinic.admin, json={"reason": "moved away"})
    status, panel = await api.get(f"/api/patients/{created['id']}", clinic.admin)
    assert status == 200, panel
    assert [v["id"] for v in panel["upcoming"]] == [appt["id"]]
    assert [(v["id"], v["cancellation_reason"]) for v in panel["past"]] == [(other["id"], "moved away")]
    status, panel = await api.get(f"/api/patients/{created['id']}", clinic.dentist)
    assert [v["id"] for v in panel["upcoming"] + panel["past"]] == [appt["id"]]  # only their own visits
    status, body = await api.get(f"/api/patients/{created['id']}", clinic.patient)
    assert_error(status, body, 403, "FORBIDDEN")
    status, body = await api.get(f"/api/patients/{uuid.uuid4()}", clinic.admin)
    assert_error(status, body, 404, "NOT_FOUND")
