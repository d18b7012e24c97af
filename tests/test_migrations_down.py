"""Every `.down.sql` undoes its `.up.sql`: for each migration in order, on a
database holding data, up, down (the schema is exactly as before the up:
tables, columns, constraints, indexes, functions, triggers, policies, grants),
and up again (exactly as after the first up). Written over all of `sql/`, so a
new migration is covered by adding its files."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pprint import pformat

import asyncpg
import pytest

from hub import db, migrate
from hub.config import ROOT

# The objects of this database's own schemas, without those an extension owns
# (btree_gist's, in public): one sorted list of rows per kind.
_OWN = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
_NOT_EXTENSION = ("NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass "
                  "AND d.objid = {oid} AND d.deptype = 'e')")


def _acl(column: str, kind: str, owner: str) -> str:
    """A privilege list in a canonical form: absent means the default; order does not count."""
    return (f"(SELECT array_agg(a::text ORDER BY a::text) "
            f"FROM unnest(coalesce({column}, acldefault('{kind}', {owner}))) a)::text")


CATALOG = {
    "schemas": f"SELECT n.nspname, {_acl('n.nspacl', 'n', 'n.nspowner')} FROM pg_namespace n WHERE {_OWN}",
    "relations": f"""
        SELECT n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
               {_acl('c.relacl', 'r', 'c.relowner')}
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_OWN} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND {_NOT_EXTENSION.format(catalog='pg_class', oid='c.oid')}""",
    "columns": f"""
        SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(a.attacl) x)::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE {_OWN} AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
          AND {_NOT_EXTENSION.format(catalog='pg_class', oid='c.oid')}""",
    "constraints": f"""
        SELECT n.nspname, c.conrelid::regclass::text, c.contypid::regtype::text, c.conname,
               pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE {_OWN}""",
    "indexes": f"""
        SELECT n.nspname, i.indexname, i.indexdef
        FROM pg_indexes i JOIN pg_namespace n ON n.nspname = i.schemaname WHERE {_OWN}""",
    "functions": f"""
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind,
               md5(CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) ELSE '' END), {_acl('p.proacl', 'f', 'p.proowner')}
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_OWN} AND {_NOT_EXTENSION.format(catalog='pg_proc', oid='p.oid')}""",
    "triggers": f"""
        SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_OWN} AND NOT t.tgisinternal""",
    "policies": """
        SELECT schemaname, tablename, policyname, permissive, roles::text, cmd, qual, with_check FROM pg_policies""",
    "types": f"""
        SELECT n.nspname, t.typname, t.typtype,
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)::text
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE {_OWN} AND t.typtype IN ('e', 'd', 'c') AND NOT EXISTS (
          SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
          AND {_NOT_EXTENSION.format(catalog='pg_type', oid='t.oid')}""",
}


async def snapshot(con: asyncpg.Connection) -> dict[str, list[tuple]]:
    return {kind: sorted((tuple(r) for r in await con.fetch(query)), key=repr) for kind, query in CATALOG.items()}


def differences(before: dict[str, list[tuple]], after: dict[str, list[tuple]]) -> dict[str, dict[str, list]]:
    """Per kind: the rows only before (`missing`) and only after (`extra`)."""
    out = {}
    for kind in CATALOG:
        missing = [r for r in before[kind] if r not in after[kind]]
        extra = [r for r in after[kind] if r not in before[kind]]
        if missing or extra:
            out[kind] = {"missing": missing, "extra": extra}
    return out


async def add_data(con: asyncpg.Connection) -> None:
    """A patient, a dentist, an appointment, a hold and a notification, as the
    schema of 0001 has them (the events and profiles come from its triggers)."""
    patient = await con.fetchval("INSERT INTO auth.users (email) VALUES ($1) RETURNING id",
                                 f"{uuid.uuid4().hex[:8]}@down.test")
    dentist = await con.fetchval("INSERT INTO public.dentists (name) VALUES ('Dr Down') RETURNING id")
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
    await con.execute("INSERT INTO public.appointments (patient_id, dentist_id, appointment_date, appointment_type) "
                      "VALUES ($1, $2, $3, 'checkup')", patient, dentist, start)
    await con.execute("INSERT INTO public.slot_reservations (dentist_id, patient_id, slot_time, expires_at) "
                      "VALUES ($1, $2, $3, now() + interval '5 minutes')", dentist, patient, start + timedelta(hours=1))
    await con.execute("INSERT INTO public.notifications (user_id, kind, title) VALUES ($1, 'test', 'Hello')", patient)


@pytest.fixture
def empty_dsn(databases):
    dsn = databases.create(migrated=False)
    yield dsn
    databases.drop(dsn)


async def test_every_down_migration_restores_the_previous_schema(empty_dsn: str) -> None:
    files = migrate.load(ROOT / "sql")
    downs = {m.version: ROOT / "sql" / f"{m.version:04d}_{m.name}.down.sql" for m in files}
    assert all(path.exists() for path in downs.values()), [p.name for p in downs.values() if not p.exists()]
    con = await db.connect(empty_dsn)
    try:
        await con.execute(migrate._TABLE)  # the bookkeeping table only, as before 0001
        previous = await snapshot(con)
        for i, migration in enumerate(files):
            name = f"{migration.version:04d}_{migration.name}"
            assert await migrate.migrate(con, files[:i + 1]) == [migration]
            applied = await snapshot(con)
            if migration.version == files[0].version:
                await add_data(con)
            async with con.transaction():
                await con.execute(downs[migration.version].read_text())
                await con.execute("DELETE FROM public.schema_migrations WHERE version = $1", migration.version)
            changed = differences(previous, await snapshot(con))
            assert not changed, f"{name}.down.sql did not restore the schema before it:\n{pformat(changed)}"
            assert await migrate.migrate(con, files[:i + 1]) == [migration], f"{name} did not apply again"
            changed = differences(applied, await snapshot(con))
            assert not changed, f"{name} applied again differs from its first time:\n{pformat(changed)}"
            if migration.version == files[0].version:
                await add_data(con)  # its down dropped the tables, and their rows
            previous = applied
        assert await con.fetchval("SELECT count(*) FROM public.appointments") == 1
    finally:
        await con.close()
