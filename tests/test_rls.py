"""Row-level security really enforces: hand-written SQL as the `authenticated`
role with a patient's claims sees only that patient's rows."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import msgspec
import pytest

from hub import db
from services import users


async def _as(con: asyncpg.Connection, user_id: uuid.UUID | None, query: str, *args):
    """Run `query` as the non-owner `authenticated` role with the user's JWT claims."""
    async with con.transaction():
        await con.execute("SET LOCAL ROLE authenticated")
        claims = {"sub": str(user_id), "role": "authenticated"} if user_id else {}
        await con.execute("SELECT set_config('request.jwt.claims', $1, true)", msgspec.json.encode(claims).decode())
        return await con.fetch(query, *args)


@pytest.fixture
async def clinic(dsn: str):
    con = await db.connect(dsn)
    alice = await users.create_user(con, email="alice@rls.test", full_name="Alice")
    bob = await users.create_user(con, email="bob@rls.test", full_name="Bob")
    admin = await users.create_user(con, email="admin@rls.test", full_name="Admin", roles=("admin",))
    doc_user = await users.create_user(con, email="doc@rls.test", full_name="Doc", roles=("dentist",))
    impostor = await users.create_user(con, email="imp@rls.test", full_name="Imp", roles=("patient",))
    dentist = await con.fetchval("INSERT INTO dentists (name, user_id) VALUES ('Dr RLS', $1) RETURNING id", doc_user)
    # A second dentist row whose login lacks the dentist role: the seed's policy let it through.
    other_dentist = await con.fetchval("INSERT INTO dentists (name, user_id) VALUES ('Dr Imp', $1) RETURNING id",
                                       impostor)
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=3)
    ids = {}
    for who, offset, dent in ((alice, 0, dentist), (bob, 1, dentist), (bob, 2, other_dentist)):
        ids[(who, offset)] = await con.fetchval(
            "INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
            "VALUES ($1, $2, $3, 'checkup') RETURNING id", who, dent, start + timedelta(hours=offset))
    yield con, dict(alice=alice, bob=bob, admin=admin, doc=doc_user, impostor=impostor, ids=ids)
    await con.close()


async def test_patient_sees_only_own_appointments(clinic) -> None:
    con, u = clinic
    rows = await _as(con, u["alice"], "SELECT patient_id FROM appointments")
    assert [r["patient_id"] for r in rows] == [u["alice"]]
    rows = await _as(con, u["alice"], "SELECT * FROM appointments WHERE patient_id = $1", u["bob"])
    assert rows == []


async def test_dentist_sees_assigned_admin_sees_all(clinic) -> None:
    con, u = clinic
    rows = await _as(con, u["doc"], "SELECT patient_id FROM appointments ORDER BY appointment_date")
    assert [r["patient_id"] for r in rows] == [u["alice"], u["bob"]]
    rows = await _as(con, u["admin"], "SELECT count(*) AS n FROM appointments WHERE patient_id = ANY($1)",
                     [u["alice"], u["bob"]])
    assert rows[0]["n"] == 3


async def test_dentist_row_without_dentist_role_grants_nothing(clinic) -> None:
    con, u = clinic
    rows = await _as(con, u["impostor"], "SELECT * FROM appointments")
    assert rows == []


async def test_no_claims_see_nothing_and_cannot_write_others(clinic) -> None:
    con, u = clinic
    assert await _as(con, None, "SELECT * FROM appointments") == []
    assert await _as(con, None, "SELECT * FROM profiles") == []
    updated = await _as(con, u["alice"], "UPDATE appointments SET notes = 'hacked' WHERE patient_id = $1 RETURNING id",
                        u["bob"])
    assert updated == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _as(con, u["alice"], "DELETE FROM appointments")


async def test_profiles_and_roles_are_private(clinic) -> None:
    con, u = clinic
    rows = await _as(con, u["alice"], "SELECT id FROM profiles WHERE id = ANY($1)", [u["alice"], u["bob"]])
    assert [r["id"] for r in rows] == [u["alice"]]
    rows = await _as(con, u["alice"], "SELECT user_id FROM user_roles")
    assert {r["user_id"] for r in rows} == {u["alice"]}
    assert await _as(con, u["alice"], "SELECT * FROM realtime_events") == []
