"""The booking engine over real HTTP on real PostgreSQL: slots, holds,
bookings, changes, availability, notifications, idempotency."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from services.sweeper import sweep_once
from tests.conftest import assert_error, eventually, metric, slot_at
from web import create_app
from tests.conftest import Api


def _slot(slots: list[dict], start: str) -> dict:
    wanted = datetime.fromisoformat(start)
    return next(s for s in slots if datetime.fromisoformat(s["start"]) == wanted)


async def _slots(api, who, dentist_id, start: str) -> list[dict]:
    status, body = await api.get(f"/api/availability/{dentist_id}/slots?date={start[:10]}", who)
    assert status == 200, body
    return body


async def test_hold_then_book_seen_by_everyone(api, clinic) -> None:
    start = slot_at()
    slots = await _slots(api, clinic.patient, clinic.dentist_id, start)
    assert len(slots) == 48 and all(set(s) >= {"start", "end", "available", "dentist_id"} for s in slots)
    assert _slot(slots, start)["available"] is True

    status, hold = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.patient,
                                  json={"slot_time": start})
    assert status == 201, hold
    assert hold["patient_id"] == str(clinic.patient.id) and hold["dentist_id"] == clinic.dentist_id
    expires = datetime.fromisoformat(hold["expires_at"]) - datetime.fromisoformat(hold["created_at"])
    assert timedelta(seconds=290) < expires <= timedelta(seconds=301)

    # Unavailable to everyone but its holder, who sees it as theirs to book.
    assert _slot(await _slots(api, clinic.other_patient, clinic.dentist_id, start), start)["status"] == "busy-tentative"
    assert _slot(await _slots(api, clinic.patient, clinic.dentist_id, start), start)["available"] is True
    status, body = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.other_patient,
                                  json={"slot_time": start})
    error = assert_error(status, body, 409, "SLOT_UNAVAILABLE")
    assert 0 < error["details"]["retry_after_seconds"] <= 300
    status, body = await api.post("/api/appointments", clinic.other_patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": start, "appointment_type": "checkup"})
    assert_error(status, body, 409, "SLOT_UNAVAILABLE")

    status, appt = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": start, "appointment_type": "checkup",
        "patient_notes": "sensitive tooth", "reservation_id": hold["id"]})
    assert status == 201, appt
    assert (appt["status"], appt["duration_minutes"], appt["patient_id"]) == ("pending", 30, str(clinic.patient.id))
    assert await api.pool.fetchval("SELECT count(*) FROM slot_reservations WHERE id = $1", hold["id"]) == 0
    for who in (clinic.patient, clinic.other_patient):
        assert _slot(await _slots(api, who, clinic.dentist_id, start), start)["status"] == "busy"


async def test_hold_rules(api, clinic) -> None:
    url = f"/api/availability/{clinic.dentist_id}/reservations"
    status, first = await api.post(url, clinic.patient, json={"slot_time": slot_at(hour=9)})
    assert status == 201
    status, again = await api.post(url, clinic.patient, json={"slot_time": slot_at(hour=9)})
    assert status == 201 and again["id"] == first["id"]  # holding it again refreshes it
    status, body = await api.post(f"/api/reservations/{first['id']}/extend", clinic.patient)
    assert status == 200 and body["expires_at"] >= first["expires_at"]
    status, body = await api.post(f"/api/reservations/{first['id']}/extend", clinic.other_patient)
    assert_error(status, body, 404, "NOT_FOUND")
    for hour in (11, 12):
        assert (await api.post(url, clinic.patient, json={"slot_time": slot_at(hour=hour)}))[0] == 201
    status, body = await api.post(f"/api/availability/{clinic.other_dentist_id}/reservations", clinic.patient,
                                  json={"slot_time": slot_at(hour=13)})
    assert_error(status, body, 409, "CONFLICT")  # at most 3 at once, across dentists
    status, body = await api.delete(f"/api/reservations/{first['id']}", clinic.other_patient)
    assert_error(status, body, 404, "NOT_FOUND")
    status, _ = await api.delete(f"/api/reservations/{first['id']}", clinic.patient)
    assert status == 204
    status, body = await api.delete(f"/api/reservations/{first['id']}", clinic.patient)
    assert_error(status, body, 404, "NOT_FOUND")
    assert (await api.post(f"/api/availability/{clinic.other_dentist_id}/reservations", clinic.patient,
                           json={"slot_time": slot_at(hour=13)}))[0] == 201


@pytest.mark.parametrize("when, reason", [
    (lambda: slot_at(minute=15), "grid"),
    (lambda: slot_at(days=-1), "past"),
    (lambda: (datetime.now(timezone.utc) + timedelta(minutes=30)).replace(second=0, microsecond=0).isoformat(),
     "notice"),
    (lambda: slot_at(days=120), "horizon"),
])
async def test_unbookable_times(api, clinic, when, reason) -> None:
    status, body = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": when(), "appointment_type": "checkup"})
    error = assert_error(status, body, 400, "VALIDATION_ERROR")
    assert reason in error["message"] and error["details"]["field"] == "appointment_date"


async def test_outside_hours_and_types(api, clinic) -> None:
    status, _ = await api.put(f"/api/availability/{clinic.dentist_id}", clinic.admin,
                              json={d: "09:00-12:00,13:00-17:00" for d in
                                    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")})
    assert status == 200
    book = {"dentist_id": clinic.dentist_id, "appointment_type": "filling"}
    status, body = await api.post("/api/appointments", clinic.patient, json={**book, "appointment_date": slot_at(hour=18)})
    assert "outside working hours" in assert_error(status, body, 400, "VALIDATION_ERROR")["message"]
    # A 60-minute filling cannot straddle the lunch break ...
    status, body = await api.post("/api/appointments", clinic.patient,
                                  json={**book, "appointment_date": slot_at(hour=11, minute=30)})
    assert_error(status, body, 400, "VALIDATION_ERROR")
    # ... and takes two 30-minute slots when it fits.
    status, appt = await api.post("/api/appointments", clinic.patient, json={**book, "appointment_date": slot_at(hour=10)})
    assert status == 201 and appt["duration_minutes"] == 60
    slots = await _slots(api, clinic.other_patient, clinic.dentist_id, slot_at(hour=10))
    assert [_slot(slots, slot_at(hour=10, minute=m))["available"] for m in (0, 30)] == [False, False]
    assert _slot(slots, slot_at(hour=11))["available"] is True
    status, body = await api.post("/api/appointments", clinic.patient, json={**book, "appointment_type": "whitening",
                                                                             "appointment_date": slot_at(hour=14)})
    error = assert_error(status, body, 400, "VALIDATION_ERROR")
    assert "root_canal" in error["message"] and error["details"]["field"] == "appointment_type"
    status, body = await api.get(f"/api/availability/{clinic.dentist_id}/slots?date={slot_at()[:10]}"
                                 "&appointment_type=root_canal", clinic.patient)
    assert status == 200 and all(datetime.fromisoformat(s["end"]) - datetime.fromisoformat(s["start"])
                                 == timedelta(minutes=90) for s in body)


async def test_slot_queries_validate(api, clinic) -> None:
    base = f"/api/availability/{clinic.dentist_id}/slots"
    for q in ("", "?date=2026-13-01", "?from=2030-01-01&to=2030-03-01", "?from=2030-01-05&to=2030-01-01",
              "?date=2030-01-01&from=2030-01-01", "?date=2030-01-01&colour=red"):
        status, body = await api.get(base + q, clinic.patient)
        assert_error(status, body, 400, "VALIDATION_ERROR")
    status, body = await api.get(base + "?from=2030-01-01&to=2030-01-03", clinic.patient)
    assert status == 200 and len(body) == 3 * 48
    status, body = await api.get("/api/availability/00000000-0000-0000-0000-000000000000/slots?date=2030-01-01",
                                 clinic.patient)
    assert_error(status, body, 404, "NOT_FOUND")


async def test_list_scoping_filters_and_pagination(api, clinic) -> None:
    made = []
    for i, who in enumerate([clinic.patient] * 3 + [clinic.other_patient]):
        status, appt = await api.post("/api/appointments", who, json={
            "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=4, hour=8 + i),
            "appointment_type": "checkup"})
        assert status == 201
        made.append(appt["id"])
    status, page = await api.get("/api/appointments?limit=2", clinic.patient)
    assert status == 200 and [a["id"] for a in page["data"]] == made[:2]
    assert page["pagination"] == {"total": 3, "limit": 2, "offset": 0, "hasMore": True}
    status, page = await api.get("/api/appointments?limit=2&offset=2", clinic.patient)
    assert [a["id"] for a in page["data"]] == made[2:3] and page["pagination"]["hasMore"] is False
    status, page = await api.get("/api/appointments", clinic.other_patient)
    assert [a["id"] for a in page["data"]] == made[3:]
    status, page = await api.get(f"/api/appointments?patient_id={clinic.patient.id}", clinic.other_patient)
    assert page["data"] == []  # a patient filter never widens a patient's view
    status, page = await api.get("/api/appointments", clinic.dentist)
    assert [a["id"] for a in page["data"]] == made
    status, page = await api.get("/api/appointments", clinic.other_dentist)
    assert page["data"] == []
    status, page = await api.get(f"/api/appointments?dentist_id={clinic.dentist_id}&status=pending,confirmed", clinic.admin)
    assert [a["id"] for a in page["data"]] == made
    status, page = await api.get(f"/api/appointments?dentist_id={clinic.dentist_id}&status=cancelled", clinic.admin)
    assert page["data"] == []
    day = slot_at(days=4)[:10]
    status, page = await api.get(f"/api/appointments?date_from={day}&date_to={day}&dentist_id={clinic.dentist_id}",
                                 clinic.admin)
    assert page["pagination"]["total"] == 4
    for q in ("limit=101", "status=lost", "offset=-1", "date_from=yesterday"):
        status, body = await api.get(f"/api/appointments?{q}", clinic.admin)
        assert_error(status, body, 400, "VALIDATION_ERROR")
    status, body = await api.get("/api/appointments", api.service())
    assert_error(status, body, 400, "VALIDATION_ERROR")
    status, page = await api.get(f"/api/appointments?patient_id={clinic.patient.id}", api.service())
    assert page["pagination"]["total"] == 3


async def _book(api, clinic, who=None, **over) -> dict:
    body = {"dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=5), "appointment_type": "checkup", **over}
    status, appt = await api.post("/api/appointments", who or clinic.patient, json=body)
    assert status == 201, appt
    return appt


async def test_status_transitions(api, clinic) -> None:
    appt = await _book(api, clinic)
    url = f"/api/appointments/{appt['id']}"
    status, body = await api.put(url, clinic.patient, json={"status": "confirmed"})
    assert_error(status, body, 403, "FORBIDDEN")
    status, body = await api.put(url, clinic.other_dentist, json={"status": "confirmed"})
    assert_error(status, body, 404, "NOT_FOUND")
    status, body = await api.put(url, clinic.dentist, json={"status": "completed"})
    assert_error(status, body, 409, "CONFLICT")
    status, body = await api.put(url, clinic.dentist, json={"status": "confirmed", "notes": "bring x-rays"})
    assert status == 200 and body["status"] == "confirmed" and body["notes"] == "bring x-rays"
    status, body = await api.put(url, clinic.admin, json={"status": "no_show"})
    assert status == 200 and body["status"] == "no_show"
    status, body = await api.put(url, clinic.admin, json={"status": "confirmed"})
    assert_error(status, body, 409, "CONFLICT")
    status, body = await api.put(url, clinic.admin, json={"status": "lost"})
    assert_error(status, body, 400, "VALIDATION_ERROR")


async def test_reschedule_is_atomic(api, clinic) -> None:
    appt = await _book(api, clinic, appointment_date=slot_at(days=5, hour=9))
    blocker = await _book(api, clinic, clinic.other_patient, appointment_date=slot_at(days=5, hour=11))
    url = f"/api/appointments/{appt['id']}"
    status, body = await api.put(url, clinic.patient, json={"appointment_date": slot_at(days=5, hour=11)})
    assert_error(status, body, 409, "SLOT_UNAVAILABLE")
    status, body = await api.get(url, clinic.patient)
    assert body["appointment_date"] == appt["appointment_date"]  # nothing changed
    status, body = await api.put(url, clinic.patient, json={"appointment_date": slot_at(days=5, hour=12)})
    assert status == 200 and datetime.fromisoformat(body["appointment_date"]) == datetime.fromisoformat(slot_at(days=5, hour=12))
    slots = await _slots(api, clinic.other_patient, clinic.dentist_id, slot_at(days=5))
    assert _slot(slots, slot_at(days=5, hour=9))["available"] is True     # the old slot is free
    assert _slot(slots, slot_at(days=5, hour=12))["available"] is False
    # Growing into a longer type checks the new range too.
    status, body = await api.put(f"/api/appointments/{blocker['id']}", clinic.other_patient,
                                 json={"appointment_date": slot_at(days=5, hour=11, minute=30),
                                       "appointment_type": "filling"})
    assert_error(status, body, 409, "SLOT_UNAVAILABLE")
    status, body = await api.put(url, clinic.other_patient, json={"appointment_date": slot_at(days=5, hour=14)})
    assert_error(status, body, 404, "NOT_FOUND")


async def test_cancel_window_and_staff(api, clinic) -> None:
    soon = (datetime.now(timezone.utc) + timedelta(hours=5)).replace(minute=0, second=0, microsecond=0).isoformat()
    appt = await _book(api, clinic, appointment_date=soon)
    status, body = await api.delete(f"/api/appointments/{appt['id']}", clinic.patient)
    assert_error(status, body, 409, "CANCELLATION_WINDOW_EXPIRED")
    status, body = await api.delete(f"/api/appointments/{appt['id']}", clinic.dentist, json={"reason": "ill"})
    assert status == 200 and body["status"] == "cancelled" and body["cancellation_reason"] == "ill"
    assert body["cancelled_by"] == str(clinic.dentist.id)
    later = await _book(api, clinic)
    status, body = await api.delete(f"/api/appointments/{later['id']}", clinic.patient)
    assert status == 200 and body["status"] == "cancelled"
    status, body = await api.delete(f"/api/appointments/{later['id']}", clinic.patient)
    assert_error(status, body, 409, "CONFLICT")
    rebook = await _book(api, clinic, clinic.other_patient)  # the slot is free again
    assert rebook["appointment_date"] == later["appointment_date"]


async def test_availability_get_put_conflicts(api, clinic) -> None:
    url = f"/api/availability/{clinic.dentist_id}"
    status, body = await api.get(url, clinic.patient)
    assert status == 200 and body["monday"] == "00:00-24:00" and body["timezone"] == "UTC"
    for who in (clinic.patient, clinic.other_dentist, api.service()):
        status, body = await api.put(url, who, json={"monday": "09:00-17:00"})
        assert_error(status, body, 403, "FORBIDDEN")
    appt = await _book(api, clinic, appointment_date=slot_at(days=6, hour=20))
    hours = {"monday": "09:00-17:00", "tuesday": "09:00-17:00", "wednesday": "09:00-17:00",
             "thursday": "09:00-17:00", "friday": "09:00-17:00", "saturday": "09:00-17:00", "sunday": "09:00-17:00"}
    status, body = await api.put(url, clinic.dentist, json=hours)
    error = assert_error(status, body, 409, "CONFLICT")
    assert [a["id"] for a in error["details"]["appointments"]] == [appt["id"]]
    status, body = await api.get(url, clinic.patient)
    assert body["monday"] == "00:00-24:00"  # refused: nothing changed
    status, body = await api.put(url + "?force=true", clinic.dentist, json={**hours, "timezone": "UTC",
                                                                          "overrides": {slot_at(days=7)[:10]: ""}})
    assert status == 200 and [a["id"] for a in body["conflicts"]] == [appt["id"]]
    assert body["monday"] == "09:00-17:00" and body["overrides"] == {slot_at(days=7)[:10]: ""}
    slots = await _slots(api, clinic.patient, clinic.dentist_id, slot_at(days=6))
    assert len(slots) == 16
    assert await _slots(api, clinic.patient, clinic.dentist_id, slot_at(days=7)) == []
    for bad, field in (({"monday": "9-5"}, "monday"), ({"funday": "09:00-10:00"}, "funday"),
                       ({"timezone": "Mars/Base"}, "timezone"), ({"overrides": {"2030-02-30": ""}}, "overrides")):
        status, body = await api.put(url, clinic.admin, json=bad)
        assert field in assert_error(status, body, 400, "VALIDATION_ERROR")["details"]["field"]


async def test_clinic_closures_apply_to_everyone(api, clinic) -> None:
    day = slot_at(days=8)[:10]
    assert len(await _slots(api, clinic.patient, clinic.dentist_id, slot_at(days=8))) == 48
    status, _ = await api.put(f"/api/clinic/closures/{day}", clinic.patient, json={"reason": "holiday"})
    assert status == 403
    status, body = await api.put(f"/api/clinic/closures/{day}", clinic.admin, json={"reason": "holiday"})
    assert status == 200 and body == {"day": day, "reason": "holiday"}
    for dentist in (clinic.dentist_id, clinic.other_dentist_id):
        assert await _slots(api, clinic.patient, dentist, slot_at(days=8)) == []
    status, _ = await api.delete(f"/api/clinic/closures/{day}", clinic.admin)
    assert status == 204
    assert len(await _slots(api, clinic.patient, clinic.dentist_id, slot_at(days=8))) == 48


async def test_service_role_books_for_a_patient_who_is_notified(api, clinic) -> None:
    bot = api.service()
    status, body = await api.post("/api/appointments", bot, json={
        "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=9), "appointment_type": "cleaning"})
    assert_error(status, body, 400, "VALIDATION_ERROR")  # on whose behalf?
    appt = await _book(api, clinic, bot, appointment_date=slot_at(days=9), patient_id=str(clinic.patient.id))
    assert appt["patient_id"] == str(clinic.patient.id)
    status, page = await api.get("/api/notifications", clinic.patient)
    assert status == 200 and page["data"][0]["kind"] == "appointment_booked"
    assert page["data"][0]["data"]["appointment_id"] == appt["id"]
    status, body = await api.post(f"/api/notifications/{page['data'][0]['id']}/read", clinic.other_patient)
    assert_error(status, body, 404, "NOT_FOUND")
    status, body = await api.post(f"/api/notifications/{page['data'][0]['id']}/read", clinic.patient)
    assert status == 200 and body["read_at"]
    status, page = await api.get("/api/notifications?unread=true", clinic.patient)
    assert page["data"] == []
    status, page = await api.get("/api/notifications", clinic.other_patient)
    assert page["data"] == []
    # A patient acting for someone else is refused.
    status, body = await api.post("/api/appointments", clinic.other_patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=9, hour=12), "appointment_type": "checkup",
        "patient_id": str(clinic.patient.id)})
    assert_error(status, body, 403, "FORBIDDEN")


async def test_idempotency_key(api, clinic) -> None:
    body = {"dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=10), "appointment_type": "checkup"}
    headers = {"Idempotency-Key": "chat-42-book"}
    first = await api.post("/api/appointments", clinic.patient, json=body, headers=headers)
    second = await api.post("/api/appointments", clinic.patient, json=body, headers=headers)
    assert first[0] == second[0] == 201 and first[1]["id"] == second[1]["id"]
    assert await api.pool.fetchval("SELECT count(*) FROM appointments WHERE patient_id = $1 AND appointment_date = $2",
                                   clinic.patient.id, datetime.fromisoformat(body["appointment_date"])) == 1
    status, err = await api.post("/api/appointments", clinic.patient,
                                 json={**body, "appointment_date": slot_at(days=10, hour=11)}, headers=headers)
    assert_error(status, err, 409, "CONFLICT")
    # Keys belong to their caller: another patient's same key is a new request.
    status, other = await api.post("/api/appointments", clinic.other_patient,
                                   json={**body, "appointment_date": slot_at(days=10, hour=12)}, headers=headers)
    assert status == 201 and other["id"] != first[1]["id"]


async def test_documents(api, clinic) -> None:
    import aiohttp

    appt = await _book(api, clinic, appointment_date=slot_at(days=11))
    url = f"/api/appointments/{appt['id']}/documents"

    def form(data: bytes, content_type: str) -> aiohttp.FormData:
        f = aiohttp.FormData()
        f.add_field("file", data, filename="xray.pdf", content_type=content_type)
        return f

    status, doc = await api.post(url, clinic.patient, data=form(b"%PDF-1.4 test", "application/pdf"))
    assert status == 201 and doc["file_size"] == 13 and doc["file_type"] == "application/pdf"
    status, body = await api.post(url, clinic.patient, data=form(b"MZ", "application/x-msdownload"))
    assert_error(status, body, 400, "VALIDATION_ERROR")
    status, body = await api.post(url, clinic.patient, data=form(b"x" * (10 * 1024 * 1024 + 1), "image/png"))
    assert_error(status, body, 413, "PAYLOAD_TOO_LARGE")
    status, body = await api.post(url, clinic.other_patient, data=form(b"%PDF", "application/pdf"))
    assert_error(status, body, 404, "NOT_FOUND")
    status, full = await api.get(f"/api/appointments/{appt['id']}", clinic.dentist)
    assert [d["id"] for d in full["documents"]] == [doc["id"]]
    status, content = await api.get(f"{url}/{doc['id']}", clinic.patient)
    assert status == 200 and content == "%PDF-1.4 test"
    status, body = await api.get(f"{url}/{doc['id']}", clinic.other_patient)
    assert_error(status, body, 404, "NOT_FOUND")
    assert await api.pool.fetchval("SELECT count(*) FROM appointment_documents WHERE appointment_id = $1",
                                   appt["id"]) == 1


async def test_holds_expire_within_a_second(aiohttp_client, settings, clinic, api) -> None:
    fast = await aiohttp_client(create_app(dataclasses.replace(settings, hold_ttl_seconds=1)))
    short = Api(fast)
    start = slot_at(days=12)
    status, before = await short.get("/metrics")
    status, hold = await short.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.patient,
                                    json={"slot_time": start})
    assert status == 201
    expires = datetime.fromisoformat(hold["expires_at"])

    async def gone() -> bool:
        return not await short.pool.fetchval("SELECT count(*) FROM slot_reservations WHERE id = $1", hold["id"])

    await eventually(gone, timeout=(expires - datetime.now(timezone.utc)).total_seconds() + 1.0,
                     what="the hold's release within a second of its expiry")
    assert _slot(await _slots(short, clinic.other_patient, clinic.dentist_id, start), start)["available"] is True
    status, page = await short.get("/api/notifications", clinic.patient)
    assert page["data"][0]["kind"] == "hold_expired"
    status, after = await short.get("/metrics")
    assert metric(after, "hub_booking_holds_total", change="expired") == \
        metric(before, "hub_booking_holds_total", change="expired") + 1


async def test_sweeper_releases_orphaned_holds(api, clinic) -> None:
    start = datetime.fromisoformat(slot_at(days=13))
    hold = await api.pool.fetchval(
        "INSERT INTO slot_reservations (dentist_id, patient_id, slot_time, expires_at) "
        "VALUES ($1, $2, $3, now() - interval '1 minute') RETURNING id", clinic.dentist_id, clinic.patient.id, start)
    assert await sweep_once(api.pool) >= 1
    assert await api.pool.fetchval("SELECT count(*) FROM slot_reservations WHERE id = $1", hold) == 0
    kinds = [r["event_type"] for r in await api.pool.fetch(
        "SELECT event_type FROM realtime_events WHERE record_id = $1 ORDER BY version", hold)]
    assert kinds == ["INSERT", "DELETE"]


async def test_naive_datetimes_and_wrong_types_are_refused(api, clinic) -> None:
    naive = slot_at()[:19]  # no offset
    status, body = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": naive, "appointment_type": "checkup"})
    error = assert_error(status, body, 400, "VALIDATION_ERROR")
    assert error["details"]["field"] == "appointment_date" and "timezone" in error["message"]
    status, body = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.patient,
                                  json={"slot_time": naive})
    assert assert_error(status, body, 400, "VALIDATION_ERROR")["details"]["field"] == "slot_time"
    status, body = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": 42, "appointment_date": slot_at(), "appointment_type": "checkup"})
    assert assert_error(status, body, 400, "VALIDATION_ERROR")["details"]["field"] == "dentist_id"


async def test_idempotent_holds(api, clinic) -> None:
    url = f"/api/availability/{clinic.dentist_id}/reservations"
    headers = {"Idempotency-Key": "hold-1"}
    first = await api.post(url, clinic.patient, json={"slot_time": slot_at(days=14)}, headers=headers)
    again = await api.post(url, clinic.patient, json={"slot_time": slot_at(days=14)}, headers=headers)
    assert first[0] == again[0] == 201 and first[1]["id"] == again[1]["id"]
    status, body = await api.post(url, clinic.patient, json={"slot_time": slot_at(days=14, hour=11)}, headers=headers)
    assert_error(status, body, 409, "CONFLICT")


async def test_notice_and_horizon_are_per_dentist(api, clinic) -> None:
    status, body = await api.put(f"/api/dentists/{clinic.dentist_id}", clinic.admin,
                                 json={"min_notice_minutes": 0, "horizon_days": 10})
    assert status == 200 and (body["min_notice_minutes"], body["horizon_days"]) == (0, 10)
    soon = (datetime.now(timezone.utc) + timedelta(minutes=45)).replace(second=0, microsecond=0)
    soon = soon.replace(minute=0 if soon.minute < 30 else 30) + timedelta(minutes=30)
    status, body = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": soon.isoformat(), "appointment_type": "checkup"})
    assert status == 201, body
    status, body = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=12), "appointment_type": "checkup"})
    assert "horizon of 10 days" in assert_error(status, body, 400, "VALIDATION_ERROR")["message"]


async def test_the_longest_type_can_be_held_and_booked(api, clinic) -> None:
    """A hold covers the type's duration plus its buffer: 480 + 120 minutes at most (schemathesis found a 500)."""
    status, kind = await api.put("/api/appointment-types/full_day_surgery", clinic.admin,
                                 json={"duration_minutes": 480, "buffer_minutes": 120})
    assert status == 200, kind
    when = slot_at(days=6, hour=6)
    status, hold = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.patient,
                                  json={"slot_time": when, "appointment_type": "full_day_surgery"})
    assert status == 201, hold
    assert hold["duration_minutes"] == 600
    status, appt = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": when, "appointment_type": "full_day_surgery",
        "reservation_id": hold["id"]})
    assert status == 201, appt
    assert (appt["duration_minutes"], appt["buffer_minutes"]) == (480, 120)
