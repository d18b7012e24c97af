"""Adopting a Supabase-shaped database that already holds a clinic (tests/supabase/init.sql):
everything it had survives and is served; what cannot be adopted is reported and changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest

from hub import db, migrate
from hub.auth import issue_token
from hub.config import ROOT, Settings
from tests.conftest import SECRET, Api
from web import create_app

INIT = (Path(__file__).parent / "supabase" / "init.sql").read_text()
ALICE = uuid.UUID("a11ce000-0000-4000-8000-000000000001")
BOB = uuid.UUID("b0b00000-0000-4000-8000-000000000002")
DR_DAN = "de000000-0000-4000-8000-000000000001"
A1, A2, A3, A4 = (f"a0000000-0000-4000-8000-00000000000{i}" for i in range(1, 5))
TABLES = ("profiles", "user_roles", "dentists", "appointments", "appointment_documents")

SNAPSHOT = """
SELECT 'rel', jsonb_agg(jsonb_build_array(c.oid::regclass::text, c.relkind, c.relrowsecurity))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'auth')
UNION ALL
SELECT 'col', jsonb_agg(jsonb_build_array(a.attrelid::regclass::text, a.attname, format_type(a.atttypid, a.atttypmod),
                         a.attnotnull, pg_get_expr(d.adbin, d.adrelid)))
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE n.nspname IN ('public', 'auth') AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'con', jsonb_agg(jsonb_build_array(conrelid::regclass::text, conname, pg_get_constraintdef(oid)))
  FROM pg_constraint WHERE connamespace IN ('public'::regnamespace, 'auth'::regnamespace)
UNION ALL
SELECT 'pol', jsonb_agg(jsonb_build_array(polrelid::regclass::text, polname, pg_get_expr(polqual, polrelid)))
  FROM pg_policy
UNION ALL
SELECT 'trg', jsonb_agg(jsonb_build_array(tgrelid::regclass::text, tgname, tgfoid::regproc::text))
  FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'fn', jsonb_agg(jsonb_build_array(oid::regprocedure::text, prosrc))
  FROM pg_proc WHERE pronamespace IN ('public'::regnamespace, 'auth'::regnamespace)
UNION ALL
SELECT 'enum', jsonb_agg(jsonb_build_array(enumtypid::regtype::text, enumlabel)) FROM pg_enum
UNION ALL
SELECT 'ext', jsonb_agg(extname) FROM pg_extension
UNION ALL
SELECT 'acl', jsonb_agg(jsonb_build_array(oid::regclass::text, relacl::text))
  FROM pg_class WHERE relnamespace = 'public'::regnamespace
"""


async def snapshot(dsn: str) -> dict[str, Any]:
    con = await db.connect(dsn)
    try:
        shot = {r[0]: sorted(r[1], key=json.dumps) for r in await con.fetch(SNAPSHOT)}
        for table in TABLES:
            shot[table] = await con.fetchval(f"SELECT jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text) FROM {table} t")
        return shot
    finally:
        await con.close()


@pytest.fixture
def clinic_db(databases):
    """A raw database holding the Supabase-shaped clinic; `prepare` changes it before adoption."""
    made = []

    async def make(*prepare: str, init: str = INIT) -> str:
        # Databases.create runs its own event loop: outside this test's.
        dsn = await asyncio.to_thread(databases.create, migrated=False)
        made.append(dsn)
        con = await db.connect(dsn)
        try:
            await con.execute(init)
            for sql in prepare:
                await con.execute(sql)
        finally:
            await con.close()
        return dsn

    yield make
    for dsn in made:
        databases.drop(dsn)


async def run_migrate(dsn: str, sql_dir: Path = ROOT / "sql") -> list[migrate.Migration]:
    con = await db.connect(dsn)
    try:
        return await migrate.migrate(con, migrate.load(sql_dir))
    finally:
        await con.close()


def cli(dsn: str, *args: str, sql_dir: Path = ROOT / "sql") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn, "JWT_SECRET": SECRET, "HUB_ENV": "test", "LOG_LEVEL": "WARNING",
           "HUB_SQL_DIR": str(sql_dir)}
    return subprocess.run([sys.executable, "-m", "hub", "migrate", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def user(sub: uuid.UUID):
    from tests.conftest import User

    return User(sub, issue_token(SECRET, sub))


async def test_adoption_keeps_everything_and_the_hub_serves_it(clinic_db, aiohttp_client, tmp_path) -> None:
    dsn = await clinic_db()
    before = await snapshot(dsn)
    done = await run_migrate(dsn)
    assert [m.version for m in done] == [m.version for m in migrate.load(ROOT / "sql")]
    after = await snapshot(dsn)

    # Every row survives, with its values (NULLs may be backfilled); columns were only added.
    for table in TABLES:
        assert len(after[table]) == len(before[table]), table
        for old, new in zip(before[table], after[table]):
            assert {k: new[k] for k, v in old.items() if v is not None} == {k: v for k, v in old.items() if v is not None}
    dentists = {d["name"]: d for d in after["dentists"]}
    assert dentists["Dr Eve"]["available_times"] == {}  # NULL backfilled with the default
    assert {a["id"]: a["duration_minutes"] for a in after["appointments"]} == dict.fromkeys((A1, A2, A3, A4), 30)
    # Policies, triggers (the sign-up trigger on auth.users too), functions and grants are kept.
    for kind in ("pol", "trg", "con"):
        # The status CHECK alone goes: the enum appointment_status replaces it.
        kept = {tuple(x) for x in before[kind] if x[1] != "appointments_status_check"}
        assert kept <= set(map(tuple, after[kind])), kind
    assert set(map(tuple, before["acl"])) <= set(map(tuple, after["acl"]))
    auth_before = [f for f in before["fn"] if f[0].startswith("auth.")]
    assert [f for f in after["fn"] if f[0].startswith("auth.")] == auth_before  # Supabase's own, untouched
    assert [c for c in after["col"] if c[0] == "auth.users"] == [c for c in before["col"] if c[0] == "auth.users"]

    con = await db.connect(dsn)
    try:
        await migrate.check(con, migrate.load(ROOT / "sql"))
        assert await migrate.migrate(con, migrate.load(ROOT / "sql")) == []
        # The clinic's own policies still decide for its supabase-js app (RLS as `authenticated`).
        async with con.transaction():
            await con.execute("SET LOCAL ROLE authenticated")
            await con.execute("SELECT set_config('request.jwt.claims', $1, true)",
                              msgspec.json.encode({"sub": str(ALICE), "role": "authenticated"}).decode())
            assert sorted(r[0] for r in await con.fetch("SELECT id::text FROM appointments")) == [A1, A3]
        # PostgREST's roles cannot call the hub's write functions (Supabase granted them EXECUTE).
        for role in ("anon", "authenticated"):
            for function in ("log_realtime_event(uuid, text, text, uuid, jsonb)", "hub_write_many(jsonb)"):
                assert not await con.fetchval("SELECT has_function_privilege($1, $2, 'EXECUTE')",
                                              role, f"public.{function}"), (role, function)
        # A user signing up through Supabase Auth: the clinic's trigger makes profile and role.
        carol = uuid.uuid4()
        await con.execute("INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data) VALUES "
                          "($1, 'authenticated', 'authenticated', 'carol@clinic.test', '{\"full_name\": \"Carol\"}')",
                          carol)
    finally:
        await con.close()

    settings = Settings(env="test", database_url=dsn, jwt_secret=SECRET, var_dir=tmp_path,
                        upload_dir=tmp_path / "uploads", db_pool_min=1, db_pool_max=4)
    api = Api(await aiohttp_client(create_app(settings)))
    alice = user(ALICE)
    status, body = await api.get("/api/appointments", alice)
    assert status == 200, body
    listed = body["data"] if isinstance(body, dict) else body
    assert sorted(a["id"] for a in listed) == [A1, A3]
    mine = next(a for a in listed if a["id"] == A1)
    assert (mine["status"], mine["patient_notes"], mine["dentist_id"]) == ("confirmed", "left molar", DR_DAN)
    status, body = await api.get(f"/api/appointments/{A2}", alice)
    assert status in (403, 404), body

    # A booking beside the existing ones (Dr Dan's A1 is 10 days ahead; A4 is cancelled there).
    start = (datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=12)).isoformat()
    status, booked = await api.post("/api/appointments", alice, json={
        "dentist_id": DR_DAN, "appointment_date": start, "appointment_type": "checkup"})
    assert status == 201, booked
    status, body = await api.post("/api/appointments", user(BOB), json={
        "dentist_id": DR_DAN, "appointment_date": start, "appointment_type": "checkup"})
    assert status == 409, body

    # The trigger's user and a user the hub sees first (no auth.users row yet) are both patients.
    for sub in (carol, uuid.uuid4()):
        status, me = await api.get("/api/profiles/me", user(sub))
        assert status == 200, me
        assert me["roles"] == ["patient"], me
    assert await api.pool.fetchval("SELECT full_name FROM profiles WHERE id = $1", carol) == "Carol"
    assert await api.pool.fetchval("SELECT count(*) FROM user_roles WHERE user_id = $1", carol) == 1


async def test_dry_run_prints_the_plan_and_changes_nothing(clinic_db) -> None:
    dsn = await clinic_db()
    before = await snapshot(dsn)
    result = await asyncio.to_thread(cli, dsn, "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected in ("  add column appointments.duration_minutes integer default 30",
                     "  create table slot_reservations",
                     "  skip auth.users (exists)",
                     "  convert appointments.status from text to appointment_status (default 'pending')",
                     "  backfill 1 rows of dentists.available_times with '{}'",
                     "  keep the existing policies on appointments (the hub's appointments_select is not added)"):
        assert expected in lines, result.stdout
    # Then every later file, each with its statements.
    files = migrate.load(ROOT / "sql")
    assert [line for line in lines if line.startswith("apply ")] == [f"apply {m.version:04d}_{m.name}:" for m in files[1:]]
    assert "  CREATE TABLE public.appointment_types ( name text PRIMARY KEY" in result.stdout
    assert await snapshot(dsn) == before


def _refused(dsn: str) -> str:
    result = cli(dsn)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "nothing was changed" in result.stderr
    return result.stderr


async def test_an_existing_overlap_is_reported_and_nothing_changes(clinic_db) -> None:
    dsn = await clinic_db(f"UPDATE appointments SET appointment_date = "
                    f"(SELECT appointment_date + interval '15 minutes' FROM appointments WHERE id = '{A1}') "
                    f"WHERE id = '{A2}'")
    before = await snapshot(dsn)
    message = await asyncio.to_thread(_refused, dsn)
    assert f"appointments {A1}: overlaps {A2} (appointments_no_overlap)" in message, message
    assert A4 not in message  # cancelled: it may overlap
    assert await snapshot(dsn) == before


async def test_bad_values_are_reported_and_nothing_changes(clinic_db) -> None:
    dsn = await clinic_db("ALTER TABLE appointments DROP CONSTRAINT appointments_status_check",
                    f"UPDATE appointments SET status = 'rescheduled' WHERE id = '{A2}'",
                    "ALTER TABLE appointments ADD COLUMN duration_minutes integer DEFAULT 30",
                    f"UPDATE appointments SET duration_minutes = -15 WHERE id = '{A3}'")
    before = await snapshot(dsn)
    message = await asyncio.to_thread(_refused, dsn)
    assert f"appointments {A2}: status 'rescheduled' is not one the hub knows" in message, message
    assert f"appointments {A3}: duration_minutes = -15 is not allowed" in message, message
    dry = await asyncio.to_thread(cli, dsn, "--dry-run")
    assert dry.returncode == 1 and "rescheduled" in dry.stderr
    assert await snapshot(dsn) == before


async def test_enums_lacking_values_are_extended(clinic_db) -> None:
    init = (INIT.replace("CREATE TYPE public.app_role AS ENUM ('admin', 'dentist', 'patient');",
                         "CREATE TYPE public.app_role AS ENUM ('admin', 'patient');\n"
                         "CREATE TYPE public.appointment_status AS ENUM ('pending', 'confirmed', 'completed', 'cancelled');")
                .replace("status           text NOT NULL DEFAULT 'pending' CHECK "
                         "(status IN ('pending', 'confirmed', 'completed', 'cancelled')),",
                         "status           public.appointment_status NOT NULL DEFAULT 'pending',")
                .replace(", ('d0c00000-0000-4000-8000-000000000004', 'dentist');", ";"))
    assert init != INIT
    dsn = await clinic_db(init=init)
    await run_migrate(dsn)
    con = await db.connect(dsn)
    try:
        labels = {r[0]: r[1] for r in await con.fetch(
            "SELECT enumtypid::regtype::text, array_agg(enumlabel::text ORDER BY enumsortorder) FROM pg_enum "
            "WHERE enumtypid IN ('app_role'::regtype, 'appointment_status'::regtype) GROUP BY 1")}
        assert labels == {"app_role": ["admin", "patient", "dentist"],
                          "appointment_status": ["pending", "confirmed", "completed", "cancelled", "no_show"]}
        await con.execute(f"UPDATE appointments SET status = 'no_show' WHERE id = '{A3}'")
        await con.execute("INSERT INTO user_roles (user_id, role) VALUES ($1, 'dentist')", BOB)
    finally:
        await con.close()


async def test_rolling_back_as_docs_say_restores_the_schema(clinic_db) -> None:
    """docs/SUPABASE.md: the later migrations' down files, then schema_adoption's undo, newest first."""
    dsn = await clinic_db()
    before = await snapshot(dsn)
    files = migrate.load(ROOT / "sql")
    await run_migrate(dsn)
    con = await db.connect(dsn)
    try:
        for m in reversed(files[1:]):
            await con.execute((ROOT / "sql" / f"{m.version:04d}_{m.name}.down.sql").read_text())
        undo = await con.fetchval("SELECT string_agg(undo, E';\\n' ORDER BY step DESC) FROM schema_adoption")
        async with con.transaction():
            await con.execute(undo)
        await con.execute("DROP TABLE schema_adoption, schema_migrations")
    finally:
        await con.close()
    after = await snapshot(dsn)
    for kind in ("rel", "col", "con", "pol", "trg", "fn", "enum", "acl"):
        assert after[kind] == before[kind], kind


# sql/README.md's rules as queries, one row per breach. $1: functions that may stay callable.
BREACHES = """
SELECT format('function %s: %s may call it', p.oid::regprocedure, r)
  FROM pg_proc p, unnest(ARRAY['anon', 'authenticated']) r
  WHERE p.pronamespace = 'public'::regnamespace AND p.prorettype <> 'trigger'::regtype
    AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = p.oid AND e.deptype = 'e')
    AND p.oid::regprocedure::text <> ALL($1::text[]) AND has_function_privilege(r, p.oid, 'EXECUTE')
UNION ALL
SELECT format('table %s: row level security is off', c.oid::regclass)
  FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
UNION ALL
SELECT format('view %s: runs as its owner, and %s may read it', c.oid::regclass, r)
  FROM pg_class c, unnest(ARRAY['anon', 'authenticated']) r
  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('v', 'm')
    AND NOT (c.relkind = 'v' AND EXISTS (SELECT 1 FROM unnest(c.reloptions) o WHERE o ~* '^security_invoker=(true|on|1)$'))
    AND has_table_privilege(r, c.oid, 'SELECT')
"""
# Functions a policy, constraint, default, generated column or index calls: the API roles need them.
CALLED_BY_SCHEMA = """
SELECT DISTINCT refobjid::regprocedure::text FROM pg_depend
WHERE refclassid = 'pg_proc'::regclass
  AND classid IN ('pg_policy'::regclass, 'pg_constraint'::regclass, 'pg_attrdef'::regclass, 'pg_class'::regclass)
"""


async def test_migrations_keep_the_rules(clinic_db, dsn) -> None:
    """Every file in sql/ (those merged later too) keeps sql/README.md's rules,
    on a fresh database (`dsn`) and on an adopted Supabase project."""
    adopted = await clinic_db()
    before = await snapshot(adopted)
    await run_migrate(adopted)
    after = await snapshot(adopted)
    for table in TABLES:  # the clinic's tables keep exactly the clinic's policies
        assert [p for p in after["pol"] if p[0] == table] == [p for p in before["pol"] if p[0] == table], table
    cons = [await db.connect(dsn), await db.connect(adopted)]
    try:
        callable_ = {f for f, _ in before["fn"]}  # the clinic's own functions are the clinic's business
        for con in cons:
            callable_ |= {r[0] for r in await con.fetch(CALLED_BY_SCHEMA)}
        assert {"has_role(uuid,app_role)", "is_dentist_user(uuid,uuid)"} <= callable_
        breaches = [f"{kind}: {r[0]}" for con, kind in zip(cons, ("fresh", "adopted"))
                    for r in await con.fetch(BREACHES, sorted(callable_))]
        assert breaches == [], "see sql/README.md:\n" + "\n".join(breaches)
    finally:
        for con in cons:
            await con.close()


# A later migration that changes one of the hub's policies on a clinic table, as sql/README.md says to.
GUARDED = """
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = 'public.appointments'::regclass
             AND polname = 'appointments_select') THEN
    DROP POLICY appointments_select ON public.appointments;
    CREATE POLICY appointments_select ON public.appointments FOR SELECT USING (patient_id = auth.uid());
  END IF;
END $$;
"""


def later_migration(tmp_path: Path, name: str, sql: str) -> Path:
    """sql/ plus one more file after the last."""
    sql_dir = tmp_path / name
    shutil.copytree(ROOT / "sql", sql_dir)
    version = migrate.load(sql_dir)[-1].version + 1
    (sql_dir / f"{version:04d}_{name}.up.sql").write_text(sql)
    return sql_dir


async def test_a_later_migration_that_breaks_adoption_is_refused_before_anything_changes(
        clinic_db, databases, tmp_path) -> None:
    naive = later_migration(tmp_path, "naive", "DROP POLICY appointments_select ON public.appointments;")
    dsn = await clinic_db()
    before = await snapshot(dsn)
    result = await asyncio.to_thread(cli, dsn, sql_dir=naive)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "_naive would fail after adoption" in result.stderr and "appointments_select" in result.stderr, result.stderr
    assert await snapshot(dsn) == before

    # Written to the rules, the same change applies on both and leaves the clinic's policies alone.
    guarded = later_migration(tmp_path, "guarded", GUARDED)
    await run_migrate(dsn, guarded)
    assert [p for p in (await snapshot(dsn))["pol"] if p[0] == "appointments"] == \
        [p for p in before["pol"] if p[0] == "appointments"]
    fresh = await asyncio.to_thread(databases.create, migrated=False)
    try:
        await run_migrate(fresh, guarded)
        con = await db.connect(fresh)
        try:
            assert await con.fetchval("SELECT pg_get_expr(polqual, polrelid) FROM pg_policy "
                                      "WHERE polname = 'appointments_select'") == "(patient_id = auth.uid())"
        finally:
            await con.close()
    finally:
        await asyncio.to_thread(databases.drop, fresh)


async def test_two_processes_adopting_at_once_both_succeed(clinic_db) -> None:
    """A `release:` step racing a worker: one adopts, the other finds it done."""
    dsn = await clinic_db()
    done = await asyncio.gather(run_migrate(dsn), run_migrate(dsn))
    files = [m.version for m in migrate.load(ROOT / "sql")]
    assert sorted(m.version for d in done for m in d) == files, done  # each file applied once, by one of them
