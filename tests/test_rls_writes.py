"""Writes made for a user run under that user's claims (migration 0013): each
test tricks the application into allowing what it should refuse, and shows
the database's policies refuse it anyway, answered 403 FORBIDDEN with nothing
changed; the callers the policies allow (the patient, the dentist, an admin,
the service role) still succeed."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import date, timedelta
from typing import Any

import aiohttp
import jwt
import pytest

from hub.auth import Principal
from hub.client import RealtimeClient
from services import booking as booking_module
from services.booking import Booking
from tests.conftest import SECRET, Api, Clinic, slot_at
from tests.test_adopt import clinic_db  # noqa: F401 (a fixture)
from web.app import REALTIME


def refused(status: int, body: Any) -> bool:
    return status == 403 and body["error"]["code"] == "FORBIDDEN"


async def hold(api: Api, who, clinic: Clinic, days: int, **extra: Any) -> dict[str, Any]:
    status, body = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", who,
                                  json={"slot_time": slot_at(days=days), "appointment_type": "checkup", **extra})
    assert status == 201, body
    return body


async def book(api: Api, who, clinic: Clinic, days: int) -> dict[str, Any]:
    status, body = await api.post("/api/appointments", who, json={
        "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=days), "appointment_type": "checkup"})
    assert status == 201, body
    return body


def everyone_is_staff(monkeypatch) -> None:
    """The application's own checks let anyone manage anything."""
    async def staff(self, who, dentist_id):
        return True

    monkeypatch.setattr(Booking, "is_staff_for", staff)


async def test_holds_for_someone_else_and_on_their_holds_are_refused(api: Api, clinic: Clinic, monkeypatch) -> None:
    alice, bob = clinic.patient, clinic.other_patient
    monkeypatch.setattr(booking_module, "acting_patient", lambda who, patient_id: patient_id or who.user_id)
    status, body = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", alice,
                                  json={"slot_time": slot_at(days=20), "patient_id": str(bob.id)})
    assert refused(status, body), body
    assert await api.pool.fetchval("SELECT count(*) FROM slot_reservations WHERE patient_id = $1", bob.id) == 0

    bobs = await hold(api, bob, clinic, days=21)

    async def any_hold(self, who, hold_id):  # the app forgets whose hold it is
        return uuid.UUID(clinic.dentist_id), None

    monkeypatch.setattr(Booking, "_hold_target", any_hold)
    before = await api.pool.fetchval("SELECT expires_at FROM slot_reservations WHERE id = $1", uuid.UUID(bobs["id"]))
    status, body = await api.post(f"/api/reservations/{bobs['id']}/extend", alice)
    assert refused(status, body), body
    status, body = await api.delete(f"/api/reservations/{bobs['id']}", alice)
    assert refused(status, body), body
    assert await api.pool.fetchval("SELECT expires_at FROM slot_reservations WHERE id = $1",
                                   uuid.UUID(bobs["id"])) == before
    # The actor's memory is intact: the hold still blocks Alice, and Bob still owns it.
    status, body = await api.post("/api/appointments", alice, json={
        "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=21), "appointment_type": "checkup"})
    assert status == 409, body
    status, body = await api.post(f"/api/reservations/{bobs['id']}/extend", bob)
    assert status == 200, body


async def test_the_dentist_and_admins_may_extend_and_release_a_patients_hold(api: Api, clinic: Clinic) -> None:
    first = await hold(api, clinic.patient, clinic, days=22)
    status, body = await api.post(f"/api/reservations/{first['id']}/extend", clinic.dentist)
    assert status == 200, body
    status, body = await api.delete(f"/api/reservations/{first['id']}", clinic.dentist)
    assert status == 204, body
    second = await hold(api, clinic.admin, clinic, days=23, patient_id=str(clinic.patient.id))
    status, body = await api.delete(f"/api/reservations/{second['id']}", clinic.admin)
    assert status == 204, body
    # Another dentist is not staff for this schedule: the app says so first (404 hides the hold).
    third = await hold(api, clinic.patient, clinic, days=24)
    status, body = await api.delete(f"/api/reservations/{third['id']}", clinic.other_dentist)
    assert status == 404, body


async def test_changing_someone_elses_appointment_is_refused(api: Api, clinic: Clinic, monkeypatch) -> None:
    alice, bob = clinic.patient, clinic.other_patient
    bobs = await book(api, bob, clinic, days=25)

    async def as_staff(self, who, appointment_id):  # the app shows anyone any appointment, as staff
        row = await self.pool.fetchrow("SELECT * FROM appointments WHERE id = $1", appointment_id)
        return dict(row), True

    monkeypatch.setattr(Booking, "appointment", as_staff)
    for method, body in (("put", {"status": "confirmed"}), ("put", {"appointment_date": slot_at(days=26)}),
                         ("put", {"notes": "hacked"}), ("delete", None)):
        status, answer = await getattr(api, method)(f"/api/appointments/{bobs['id']}", alice,
                                                    **({"json": body} if body else {}))
        assert refused(status, answer), (method, body, answer)
    row = await api.pool.fetchrow("SELECT status, appointment_date, notes FROM appointments WHERE id = $1",
                                  uuid.UUID(bobs["id"]))
    assert (row["status"], row["appointment_date"].isoformat(), row["notes"]) == ("pending", slot_at(days=25), None)
    # The dentist of the appointment confirms it: the policy allows staff.
    status, body = await api.put(f"/api/appointments/{bobs['id']}", clinic.dentist, json={"status": "confirmed"})
    assert status == 200 and body["status"] == "confirmed", body


async def test_schedule_changes_by_others_are_refused(api: Api, clinic: Clinic, monkeypatch) -> None:
    everyone_is_staff(monkeypatch)
    before = await api.pool.fetchval("SELECT available_times FROM dentists WHERE id = $1", uuid.UUID(clinic.dentist_id))
    for who in (clinic.patient, clinic.other_dentist):
        status, body = await api.put(f"/api/availability/{clinic.dentist_id}", who, json={"monday": "09:00-10:00"})
        assert refused(status, body), body
    assert await api.pool.fetchval("SELECT available_times FROM dentists WHERE id = $1",
                                   uuid.UUID(clinic.dentist_id)) == before
    status, body = await api.put(f"/api/availability/{clinic.other_dentist_id}", clinic.other_dentist,
                                 json={"monday": "09:00-10:00"})
    assert status == 200 and body["monday"] == "09:00-10:00", body


async def test_admin_writes_by_non_admins_are_refused(api: Api, clinic: Clinic, monkeypatch) -> None:
    alice, bob = clinic.patient, clinic.other_patient
    day = (date.today() + timedelta(days=3000)).isoformat()  # beyond every horizon: no other test notices it
    status, body = await api.put(f"/api/clinic/closures/{day}", clinic.admin, json={"reason": "real"})
    assert status == 200, body
    monkeypatch.setattr(Principal, "has_role", lambda self, role: True)
    monkeypatch.setattr(Principal, "is_admin", property(lambda self: True))
    attempts = [
        ("put", f"/api/clinic/closures/{day}", {"reason": "hacked"}),
        ("put", f"/api/clinic/closures/{(date.today() + timedelta(days=3001)).isoformat()}", {"reason": "x"}),
        ("delete", f"/api/clinic/closures/{day}", None),
        ("put", "/api/appointment-types/checkup", {"duration_minutes": 240}),
        ("post", "/api/dentists", {"name": "Dr Fake", "timezone": "UTC"}),
        ("put", f"/api/dentists/{clinic.dentist_id}", {"name": "Dr Hacked"}),
        ("put", f"/api/users/{bob.id}/roles", {"roles": ["patient", "admin"]}),
        ("put", f"/api/users/{clinic.dentist.id}/roles", {"roles": ["patient"]}),
    ]
    for method, path, body in attempts:
        status, answer = await getattr(api, method)(path, alice, **({"json": body} if body else {}))
        assert refused(status, answer), (method, path, answer)
    pool = api.pool
    assert await pool.fetchval("SELECT reason FROM clinic_closures WHERE day = $1", date.fromisoformat(day)) == "real"
    assert await pool.fetchval("SELECT count(*) FROM clinic_closures WHERE day = $1",
                               date.fromisoformat(day) + timedelta(days=1)) == 0
    assert await pool.fetchval("SELECT duration_minutes FROM appointment_types WHERE name = 'checkup'") == 30
    assert await pool.fetchval("SELECT count(*) FROM dentists WHERE name = 'Dr Fake'") == 0
    assert await pool.fetchval("SELECT name FROM dentists WHERE id = $1", uuid.UUID(clinic.dentist_id)) == "Dr One"
    assert await pool.fetchval("SELECT array_agg(role::text ORDER BY role) FROM user_roles WHERE user_id = $1",
                               bob.id) == ["patient"]
    assert "dentist" in await pool.fetchval("SELECT array_agg(role::text) FROM user_roles WHERE user_id = $1",
                                            clinic.dentist.id)
    monkeypatch.undo()
    status, body = await api.delete(f"/api/clinic/closures/{day}", clinic.admin)  # a real admin may
    assert status == 204, body


async def test_a_document_on_someone_elses_appointment_is_refused(api: Api, clinic: Clinic, monkeypatch,
                                                                  settings) -> None:
    bobs = await book(api, clinic.other_patient, clinic, days=27)

    async def shown(self, who, appointment_id):
        row = await self.pool.fetchrow("SELECT * FROM appointments WHERE id = $1", appointment_id)
        return dict(row), False

    monkeypatch.setattr(Booking, "appointment", shown)
    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.4 x", filename="x.pdf", content_type="application/pdf")
    status, body = await api.post(f"/api/appointments/{bobs['id']}/documents", clinic.patient, data=form)
    assert refused(status, body), body
    assert await api.pool.fetchval("SELECT count(*) FROM appointment_documents WHERE appointment_id = $1",
                                   uuid.UUID(bobs["id"])) == 0
    folder = settings.upload_dir / bobs["id"]
    assert not folder.exists() or not any(folder.iterdir())  # nothing half-written survives
    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.4 y", filename="y.pdf", content_type="application/pdf")
    status, body = await api.post(f"/api/appointments/{bobs['id']}/documents", clinic.other_patient, data=form)
    assert status == 201 and body["uploaded_by"] == str(clinic.other_patient.id), body


async def test_the_socket_reads_a_notification_as_its_subscriber(api: Api, clinic: Clinic, monkeypatch) -> None:
    """Let anyone follow anyone's notifications, and the app's own filter take
    everyone for their owner: the row is read under each subscriber's token
    claims, so only its owner's socket receives it."""
    from web import channels

    alice, bob = clinic.patient, clinic.other_patient
    monkeypatch.setattr(channels, "denied", lambda topic, viewer: None)
    monkeypatch.setattr(Principal, "user_id", property(lambda self: alice.id))  # every caller passes for Alice
    url = str(api.client.make_url("")).rstrip("/")
    topic = f"notifications:user_id={alice.id}"
    mine, spy = RealtimeClient(url, alice.token), RealtimeClient(url, bob.token)
    await mine.connect()
    await spy.connect()
    try:
        own, spied = mine.channel(topic), spy.channel(topic)
        await own.join()
        await spied.join()
        notification = await api.pool.fetchval(
            "INSERT INTO notifications (user_id, kind, title) VALUES ($1, 'test', 'Hello') RETURNING id", alice.id)
        await api.client.app[REALTIME].on_notification(notification, alice.id)  # (the listener calls it too)
        while (msg := await own.next()).event != "broadcast":
            pass
        assert msg.payload["payload"]["new"]["id"] == str(notification)
        await spy._request("phoenix", "heartbeat", {}, 5.0, None)  # everything sent to the spy before this is in
        leaked = []
        while not spied._queue.empty():
            leaked.append(spied._queue.get_nowait())
        assert [m for m in leaked if m.event == "broadcast"] == [], leaked
    finally:
        await mine.close()
        await spy.close()


@pytest.fixture
async def own_api(scratch_dsn: str, aiohttp_client: Any, settings) -> Api:
    """A hub on a database of the test's own (the test adds a policy to it)."""
    from web import create_app

    return Api(await aiohttp_client(create_app(dataclasses.replace(settings, database_url=scratch_dsn))))


async def test_the_clinics_own_policies_bound_writes(own_api: Api) -> None:
    """A clinic that requires MFA (aal2) to change an appointment, as its own
    restrictive policy: the hub's cancellations obey it."""
    api = own_api
    admin, alice = await api.user("admin"), await api.user()
    status, made = await api.post("/api/dentists", admin, json={"name": "Dr Own", "timezone": "UTC",
                                                                "available_times": {"monday": "00:00-24:00"}})
    assert status == 201, made
    await api.pool.execute("CREATE POLICY clinic_changes_need_mfa ON public.appointments AS RESTRICTIVE FOR UPDATE "
                           "TO authenticated USING (auth.jwt() ->> 'aal' = 'aal2')")
    start = date.today() + timedelta(days=10)
    start += timedelta(days=(0 - start.weekday()) % 7)  # a Monday
    status, appt = await api.post("/api/appointments", alice, json={
        "dentist_id": made["id"], "appointment_date": f"{start.isoformat()}T10:00:00+00:00",
        "appointment_type": "checkup"})
    assert status == 201, appt

    def token(aal: str) -> dict[str, str]:
        body = {"sub": str(alice.id), "role": "authenticated", "aud": "authenticated", "aal": aal,
                "exp": int(time.time()) + 600}
        return {"Authorization": f"Bearer {jwt.encode(body, SECRET)}"}

    status, body = await api.delete(f"/api/appointments/{appt['id']}", headers=token("aal1"))
    assert refused(status, body), body
    status, body = await api.delete(f"/api/appointments/{appt['id']}", headers=token("aal2"))
    assert status == 200 and body["status"] == "cancelled", body


async def test_on_an_adopted_database_the_clinics_policies_decide(clinic_db, aiohttp_client, tmp_path) -> None:
    """Migration 0013 adds its write policies only where the policies are the
    hub's (holds, closures); the clinic's tables keep exactly their own, which
    then decide: its admins may manage dentists, and nobody may update
    appointments (the clinic has no such policy), so a cancellation is refused."""
    from hub.auth import issue_token
    from hub.config import Settings
    from tests.conftest import User
    from tests.test_adopt import A1, ALICE, DR_DAN, run_migrate, snapshot
    from web import create_app

    dsn = await clinic_db()
    before = {tuple(p) for p in (await snapshot(dsn))["pol"]}
    await run_migrate(dsn)
    after = {tuple(p) for p in (await snapshot(dsn))["pol"]}
    clinic_tables = {p[0] for p in before}
    assert {p for p in after if p[0] in clinic_tables} == before
    assert {p[1] for p in after if p[0] in ("slot_reservations", "clinic_closures")} >= {
        "slot_reservations_insert", "slot_reservations_staff_delete", "clinic_closures_admin"}

    settings = Settings(env="test", database_url=dsn, jwt_secret=SECRET, var_dir=tmp_path,
                        upload_dir=tmp_path / "uploads", db_pool_min=1, db_pool_max=4)
    api = Api(await aiohttp_client(create_app(settings)))
    admin = User(uuid.UUID("ad000000-0000-4000-8000-000000000003"),
                 issue_token(SECRET, uuid.UUID("ad000000-0000-4000-8000-000000000003")))
    alice = User(ALICE, issue_token(SECRET, ALICE))
    status, body = await api.put(f"/api/dentists/{DR_DAN}", admin, json={"specialization": "Endodontics"})
    assert status == 200 and body["specialization"] == "Endodontics", body  # "Admins manage dentists"
    day = (date.today() + timedelta(days=400)).isoformat()
    status, body = await api.put(f"/api/clinic/closures/{day}", admin, json={"reason": "audit"})
    assert status == 200, body  # the hub's own table, the hub's policy
    status, held = await api.post(f"/api/availability/{DR_DAN}/reservations", alice,
                                  json={"slot_time": slot_at(days=15), "appointment_type": "checkup"})
    assert status == 201, held
    status, body = await api.delete(f"/api/appointments/{A1}", admin)
    assert refused(status, body), body
    assert await api.pool.fetchval("SELECT status::text FROM appointments WHERE id = $1", uuid.UUID(A1)) == "confirmed"
