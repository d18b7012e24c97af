"""REST reads run under the caller's claims (role `authenticated`,
`request.jwt.claims`), so the database's policies bound what the hub returns
even when the application code is wrong, and the clinic's own policies apply
to what the hub serves."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
import pytest

from hub import db
from hub.auth import Claims, Principal, issue_token
from services import users
from tests.conftest import ALL_DAY, SECRET, Api


@dataclasses.dataclass
class World:
    api: Api
    dsn: str
    alice: uuid.UUID
    bob: uuid.UUID
    admin: uuid.UUID
    dentist: uuid.UUID
    alice_appt: uuid.UUID
    bob_appt: uuid.UUID

    def headers(self, user: uuid.UUID, **claims: Any) -> dict[str, str]:
        if not claims:
            return {"Authorization": f"Bearer {issue_token(SECRET, user)}"}
        body = {"sub": str(user), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 600,
                **claims}
        return {"Authorization": f"Bearer {jwt.encode(body, SECRET)}"}


@pytest.fixture
async def world(scratch_dsn: str, aiohttp_client: Any, settings) -> World:
    """A database of the test's own (tests here add policies to it)."""
    from web import create_app

    dsn = scratch_dsn
    con = await db.connect(dsn)
    try:
        alice = await users.create_user(con, email="alice@rlsreq.test", full_name="Alice")
        bob = await users.create_user(con, email="bob@rlsreq.test", full_name="Bob")
        admin = await users.create_user(con, email="admin@rlsreq.test", full_name="Admin", roles=("admin",))
        dentist = await con.fetchval("INSERT INTO dentists (name, timezone, available_times) "
                                     "VALUES ('Dr RLS', 'UTC', $1) RETURNING id", ALL_DAY)
        start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
        appts = [await con.fetchval("INSERT INTO appointments (patient_id, dentist_id, appointment_date, "
                                    "appointment_type) VALUES ($1, $2, $3, 'checkup') RETURNING id",
                                    who, dentist, start + timedelta(hours=i)) for i, who in enumerate((alice, bob))]
    finally:
        await con.close()
    api = Api(await aiohttp_client(create_app(dataclasses.replace(settings, database_url=dsn))))
    return World(api, dsn, alice, bob, admin, dentist, *appts)


async def test_an_authorization_bug_in_the_app_leaks_nothing(world: World, monkeypatch) -> None:
    """Make the application believe every caller is an admin: its own filters
    are gone, and the database still gives a patient only their rows."""
    w = world
    monkeypatch.setattr(Principal, "is_admin", property(lambda self: True))
    status, body = await w.api.get("/api/appointments", headers=w.headers(w.alice))
    assert status == 200, body
    assert [a["id"] for a in body["data"]] == [str(w.alice_appt)]
    assert body["pagination"]["total"] == 1
    status, body = await w.api.get(f"/api/appointments/{w.bob_appt}", headers=w.headers(w.alice))
    assert status == 404, body
    status, body = await w.api.get(f"/api/appointments/{w.alice_appt}", headers=w.headers(w.alice))
    assert status == 200 and body["id"] == str(w.alice_appt), body
    # A real admin still sees everyone's (the policy lets them), and so does the service role (bypass).
    status, body = await w.api.get("/api/appointments", headers=w.headers(w.admin))
    assert {a["id"] for a in body["data"]} == {str(w.alice_appt), str(w.bob_appt)}
    service = {"Authorization": f"Bearer {issue_token(SECRET, None, role='service_role')}"}
    status, body = await w.api.get(f"/api/appointments?patient_id={w.bob}", headers=service)
    assert status == 200 and [a["id"] for a in body["data"]] == [str(w.bob_appt)], body


async def test_as_caller_runs_with_the_callers_role_and_claims(world: World) -> None:
    w = world
    pool = w.api.pool
    alice = Principal(Claims(role="authenticated", sub=w.alice, exp=0, raw={
        "sub": str(w.alice), "role": "authenticated", "aal": "aal2", "session_id": "s-1"}))
    async with db.as_caller(pool, alice) as con:
        row = await con.fetchrow("SELECT current_user AS who, auth.uid() AS uid, auth.jwt() ->> 'aal' AS aal")
        assert (row["who"], row["uid"], row["aal"]) == ("authenticated", w.alice, "aal2")
        assert await con.fetchrow("SELECT * FROM appointments WHERE id = $1", w.bob_appt) is None
        assert await con.fetchval("SELECT count(*) FROM appointments") == 1
    service = Principal(Claims(role="service_role", sub=None, exp=0))
    async with db.as_caller(pool, service) as con:
        assert await con.fetchval("SELECT count(*) FROM appointments WHERE id = ANY($1)",
                                  [w.alice_appt, w.bob_appt]) == 2
    async with pool.acquire() as con:  # nothing outlives the transaction on a pooled connection
        assert await con.fetchval("SELECT current_setting('request.jwt.claims', true)") in (None, "")
        assert await con.fetchval("SELECT current_user") != "authenticated"


async def test_the_clinics_own_policies_bound_what_the_hub_serves(world: World) -> None:
    """A clinic that requires MFA (aal2) to read appointments, as its own
    restrictive policy: the hub's REST reads obey it."""
    w = world
    con = await db.connect(w.dsn)
    try:
        await con.execute("CREATE POLICY clinic_requires_mfa ON public.appointments AS RESTRICTIVE FOR SELECT "
                          "TO authenticated USING (auth.jwt() ->> 'aal' = 'aal2')")
    finally:
        await con.close()
    status, body = await w.api.get("/api/appointments", headers=w.headers(w.alice, aal="aal1"))
    assert status == 200 and body["data"] == [], body
    status, body = await w.api.get(f"/api/appointments/{w.alice_appt}", headers=w.headers(w.alice, aal="aal1"))
    assert status == 404, body
    status, body = await w.api.get("/api/appointments", headers=w.headers(w.alice, aal="aal2"))
    assert [a["id"] for a in body["data"]] == [str(w.alice_appt)], body


async def test_profile_and_notifications_read_under_claims(world: World) -> None:
    w = world
    status, body = await w.api.get("/api/profiles/me", headers=w.headers(w.alice))
    assert status == 200 and body["id"] == str(w.alice) and body["roles"] == ["patient"], body
    status, body = await w.api.get("/api/notifications", headers=w.headers(w.alice))
    assert status == 200 and body["data"] == [], body


async def test_a_booking_bug_cannot_book_for_another_patient(world: World, monkeypatch) -> None:
    """Let the application accept a patient naming someone else as the patient:
    the insert runs under the caller's claims, and the policy refuses it."""
    from services import booking

    w = world
    monkeypatch.setattr(booking, "acting_patient", lambda who, patient_id: patient_id or who.user_id)
    when = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=5)
    body = {"dentist_id": str(w.dentist), "appointment_date": when.isoformat(), "appointment_type": "checkup",
            "patient_id": str(w.bob)}
    status, refused = await w.api.post("/api/appointments", headers=w.headers(w.alice), json=body)
    assert status == 403 and refused["error"]["code"] == "FORBIDDEN", refused
    async with w.api.pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM appointments WHERE patient_id = $1", w.bob) == 1
    # Booking for oneself, an admin and the service role booking for a patient still work.
    for who, patient, hour in ((w.headers(w.alice), w.alice, 1), (w.headers(w.admin), w.bob, 2),
                               ({"Authorization": f"Bearer {issue_token(SECRET, None, role='service_role')}"},
                                w.bob, 3)):
        slot = {**body, "patient_id": str(patient), "appointment_date": (when + timedelta(hours=hour)).isoformat()}
        status, made = await w.api.post("/api/appointments", headers=who, json=slot)
        assert status == 201 and made["patient_id"] == str(patient), made
