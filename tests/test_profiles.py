"""Profiles, and setting a clinic up over the API (dentists, roles)."""

from __future__ import annotations

from tests.conftest import assert_error

HOURS = {"monday": "09:00-17:00", "wednesday": "08:00-12:00,13:00-17:00"}


async def test_me_get_and_put(api) -> None:
    me = await api.user()
    status, body = await api.get("/api/profiles/me", me)
    assert status == 200 and body["id"] == str(me.id) and body["roles"] == ["patient"]
    status, body = await api.put("/api/profiles/me", me, json={"full_name": "Ana Silva", "phone": "+351 900 000 000",
                                                              "date_of_birth": "1990-04-01"})
    assert status == 200, body
    assert (body["full_name"], body["phone"], body["date_of_birth"]) == ("Ana Silva", "+351 900 000 000", "1990-04-01")
    status, body = await api.put("/api/profiles/me", me, json={"phone": None})  # only what is sent changes
    assert body["full_name"] == "Ana Silva" and body["phone"] is None
    status, body = await api.put("/api/profiles/me", me, json={"email": "not an email"})
    assert_error(status, body, 400, "VALIDATION_ERROR")


async def test_service_role_has_no_profile(api) -> None:
    # The chatbot acts for patients; it is not one.
    for service in (api.service(), api.service(sub=None)):
        status, body = await api.get("/api/profiles/me", service)
        assert_error(status, body, 403, "FORBIDDEN")


async def test_admin_sets_up_a_dentist(api) -> None:
    admin = await api.user("admin")
    doctor = await api.user()
    status, body = await api.post("/api/dentists", admin, json={
        "name": "Dr. Who", "specialization": "Time", "timezone": "Europe/Lisbon",
        "available_times": HOURS, "slot_minutes": 20, "user_id": str(doctor.id)})
    assert status == 201, body
    dentist_id = body["id"]
    assert (body["timezone"], body["slot_minutes"], body["available_times"]) == ("Europe/Lisbon", 20, HOURS)
    assert body["user_id"] == str(doctor.id)
    status, me = await api.get("/api/profiles/me", doctor)
    assert me["roles"] == ["patient", "dentist"] or sorted(me["roles"]) == ["dentist", "patient"]

    status, listed = await api.get("/api/profiles/dentists", doctor)
    assert status == 200 and dentist_id in [d["id"] for d in listed]

    status, body = await api.put(f"/api/dentists/{dentist_id}", admin, json={"name": "Dr. Who II", "slot_minutes": 30})
    assert status == 200 and body["name"] == "Dr. Who II" and body["slot_minutes"] == 30
    assert body["specialization"] == "Time"  # untouched

    status, body = await api.post("/api/dentists", admin, json={"name": "Dup", "timezone": "UTC",
                                                                 "user_id": str(doctor.id)})
    assert_error(status, body, 409, "CONFLICT")
    status, body = await api.post("/api/dentists", admin, json={"name": "Nobody", "timezone": "UTC",
                                                                 "user_id": "00000000-0000-0000-0000-000000000000"})
    assert_error(status, body, 404, "NOT_FOUND")
    status, body = await api.put("/api/dentists/00000000-0000-0000-0000-000000000000", admin, json={"name": "x"})
    assert_error(status, body, 404, "NOT_FOUND")
    status, body = await api.put(f"/api/dentists/{dentist_id}", admin, json={"timezone": "Nowhere/Land"})
    assert assert_error(status, body, 400, "VALIDATION_ERROR")["details"]["field"] == "timezone"


async def test_only_admins_set_up_the_clinic(api) -> None:
    admin = await api.user("admin")
    status, body = await api.post("/api/dentists", admin, json={"name": "Dr A", "timezone": "UTC"})
    dentist_id = body["id"]
    for role in ("patient", "dentist"):
        who = await api.user(role)
        status, body = await api.post("/api/dentists", who, json={"name": "Dr B", "timezone": "UTC"})
        assert_error(status, body, 403, "FORBIDDEN")
        status, body = await api.put(f"/api/dentists/{dentist_id}", who, json={"name": "Mine"})
        assert_error(status, body, 403, "FORBIDDEN")
        status, body = await api.put(f"/api/users/{who.id}/roles", who, json={"roles": ["admin"]})
        assert_error(status, body, 403, "FORBIDDEN")
    status, body = await api.post("/api/dentists", api.service(), json={"name": "Dr C", "timezone": "UTC"})
    assert_error(status, body, 403, "FORBIDDEN")
    status, body = await api.post("/api/dentists", json={"name": "Dr D", "timezone": "UTC"})
    assert_error(status, body, 401, "UNAUTHORIZED")


async def test_roles(api) -> None:
    admin = await api.user("admin")
    user = await api.user()
    status, body = await api.put(f"/api/users/{user.id}/roles", admin, json={"roles": ["dentist", "admin"]})
    assert status == 200 and body["roles"] == ["admin", "dentist"]
    status, me = await api.get("/api/profiles/me", user)
    assert sorted(me["roles"]) == ["admin", "dentist"]
    status, body = await api.put(f"/api/users/{admin.id}/roles", admin, json={"roles": ["patient"]})
    assert_error(status, body, 409, "CONFLICT")
    status, body = await api.put("/api/users/00000000-0000-0000-0000-000000000000/roles", admin,
                                 json={"roles": ["patient"]})
    assert_error(status, body, 404, "NOT_FOUND")
