"""Adopting a database that already holds a clinic's schema, such as a Supabase project.

When sql/0001_init.up.sql is not yet recorded but objects it creates already
exist, this runs in its place (a baseline, as Flyway calls it). It reads 0001
statement by statement: what is missing is created with 0001's own text; what
exists is kept and extended (missing columns with their defaults, backfilled
NULLs, constraints); Supabase's `auth` schema is never altered. Every
constraint is checked against the existing rows first: a row that would break
one is reported by table, key and reason, and nothing changes. On success 0001
is recorded as applied and the later migrations run as usual.

This module plans 0001's statements other than CREATE TABLE and runs the
plan; hub/adopt_tables.py holds the plan's parts and extends existing tables.
Runs in two steps because PostgreSQL cannot use an enum value in the
transaction that added it: first a rehearsal in a transaction that is always
rolled back (it finds every problem, and is all `--dry-run` does), then the
missing enum values are committed, then everything else in one transaction.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import asyncpg

from hub import adopt_tables, ddl
from hub.adopt_tables import Action, Plan, Refused, short

if TYPE_CHECKING:
    from hub.migrate import Migration

_UNSAFE_ENUM = "55P04"  # a value added to an enum in this transaction
_LIMIT = 20             # problem rows reported per check

_LOG = """
CREATE TABLE public.schema_adoption (
  step   integer PRIMARY KEY,
  action text NOT NULL,
  undo   text
);
ALTER TABLE public.schema_adoption ENABLE ROW LEVEL SECURITY"""


class Adoption(Plan):
    def __init__(self, con: asyncpg.Connection, init: Migration) -> None:
        super().__init__(con)
        self.init = init

    # -- planning ---------------------------------------------------------

    async def plan(self) -> None:
        con = self.con
        self.supabase_auth = await con.fetchval("SELECT to_regclass('auth.users') IS NOT NULL")
        self.policied = {r[0] for r in await con.fetch(
            "SELECT DISTINCT polrelid::regclass::text FROM pg_policy")}
        for statement in ddl.statements(self.init.sql):
            await self._statement(statement)

    async def _statement(self, s: str) -> None:
        words = s.split()
        head = " ".join(words[:2]).upper()
        if head == "CREATE EXTENSION":
            name = words[-1]
            if await self.exists("SELECT 1 FROM pg_extension WHERE extname = $1", name):
                self.do(f"skip extension {name} (installed)")
            else:
                self.do(f"create extension {name}", s, undo=f"DROP EXTENSION IF EXISTS {name}")
        elif head == "DO $$" and "CREATE ROLE" in s:
            roles = re.findall(r"'(\w+)'", re.search(r"ARRAY\[(.*?)\]", s).group(1))
            missing = [r for r in roles if not await self.exists("SELECT 1 FROM pg_roles WHERE rolname = $1", r)]
            if missing:
                self.do(f"create roles {', '.join(missing)}", s)
            else:
                self.do(f"skip roles {', '.join(roles)} (exist)")
        elif head == "CREATE SCHEMA":
            name = words[-1]
            if await self.exists("SELECT 1 FROM pg_namespace WHERE nspname = $1", name):
                self.do(f"skip schema {name} (exists)")
            else:
                self.do(f"create schema {name}", s, undo=f"DROP SCHEMA IF EXISTS {name}")
        elif head == "CREATE TABLE":
            await adopt_tables.table(self, s)
        elif head == "CREATE INDEX":
            name, table = words[2], words[4]
            schema = table.split(".")[0]
            if table == "auth.users" and self.supabase_auth:
                self.do(f"skip index {name} on auth.users (Supabase's table)")
            elif await self.exists("SELECT to_regclass($1) IS NOT NULL", f"{schema}.{name}"):
                self.do(f"skip index {name} (exists)")
            else:
                self.do(f"create index {name} on {short(table)}", s, undo=f"DROP INDEX IF EXISTS {schema}.{name}")
        elif head == "CREATE FUNCTION":
            await self._function(s)
        elif head == "CREATE TRIGGER":
            await self._trigger(s)
        elif head == "CREATE TYPE":
            await self._type(s)
        elif head == "CREATE POLICY":
            await self._policy(s)
        elif head == "ALTER TABLE" and s.endswith("ENABLE ROW LEVEL SECURITY"):
            table = words[2]
            if await self.exists("SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass($1)", table):
                self.do(f"skip row level security on {short(table)} (enabled)")
            else:
                self.do(f"enable row level security on {short(table)}", s,
                         undo=f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        elif words[0] == "GRANT":
            self._grant(s)
        else:
            raise Refused([f"adoption cannot read this statement of {self.init.name}: {s[:60]}"])

    def _grant(self, s: str) -> None:
        if re.search(r"\bON (SCHEMA|FUNCTION) auth\b", s) and self.supabase_auth:
            self.do("skip grants on auth (Supabase's own)")
            return
        # 0001 on an empty database grants its own tables; here, only those, not the clinic's others.
        tables = ", ".join(t.name for t in self.tables if t.name.startswith("public."))
        s = s.replace("ON ALL TABLES IN SCHEMA public", f"ON {tables}")
        self.do(s.split(" TO ")[0].lower().replace("public.", "") + " to " + s.split(" TO ")[1], s)

    @property
    def tables(self) -> list[ddl.Table]:
        return [ddl.table(s) for s in ddl.statements(self.init.sql) if s.startswith("CREATE TABLE")]

    async def _type(self, s: str) -> None:
        name = s.split()[2]
        labels = ddl.enum_labels(s)
        self.enums[name] = labels
        oid = await self.con.fetchval("SELECT to_regtype($1)::oid", name)
        if oid is None:
            self.do(f"create type {short(name)}", s, undo=f"DROP TYPE IF EXISTS {name}")
            return
        have = [r[0] for r in await self.con.fetch(
            "SELECT enumlabel FROM pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder", oid)]
        if not have:
            self.problems.append(f"type {short(name)} exists but is not an enum; the hub needs ENUM ({', '.join(labels)})")
        for label in labels:
            if label not in have:
                self.do(f"add value '{label}' to type {short(name)}",
                         f"ALTER TYPE {name} ADD VALUE IF NOT EXISTS '{label}'", enum=True)
        if set(labels) <= set(have):
            self.do(f"skip type {short(name)} (exists)")

    async def _function(self, s: str) -> None:
        name, args = ddl.function_identity(s)
        line = f"function {short(name)}({args})"
        if name == "auth.handle_new_user" and self.supabase_auth:
            self.do(f"skip {line}: auth.users is Supabase's; the hub signs users up on first sight")
            return
        types_known = all([await self.con.fetchval("SELECT to_regtype($1) IS NOT NULL", t)
                           for t in ddl.split(args)])
        src = types_known and await self.con.fetchval(
            "SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure($1)", f"{name}({args})")
        if src is None or src is False:
            self.do(f"create {line}", s, undo=f"DROP FUNCTION IF EXISTS {name}({args})")
        elif src == ddl.function_body(s):
            self.do(f"skip {line} (exists)")
        elif name.startswith("auth.") or name == "public.has_role":
            self.do(f"keep {line} (the existing one)")
        else:
            self.problems.append(f"{line} already exists with another body; the hub needs its own "
                                 "(rename or drop the existing one)")

    async def _trigger(self, s: str) -> None:
        m = re.match(r"CREATE TRIGGER (\w+)\s.*?\bON ([\w.]+).*EXECUTE FUNCTION ([\w.]+)\(", s, re.S)
        name, table, function = m.groups()
        if table == "auth.users" and self.supabase_auth:
            self.do(f"skip trigger {name} on auth.users (Supabase's table; existing sign-up triggers are kept)")
            return
        have = await self.con.fetchval(
            "SELECT tgfoid::regproc::text FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2",
            table, name)
        if have is None:
            self.do(f"create trigger {name} on {short(table)}", s, undo=f"DROP TRIGGER IF EXISTS {name} ON {table}")
        elif have in (function, short(function)):
            self.do(f"skip trigger {name} on {short(table)} (exists)")
        else:
            self.problems.append(f"trigger {name} on {short(table)} already exists and runs {have}; "
                                 f"the hub needs its own (rename the existing one)")

    async def _policy(self, s: str) -> None:
        name, table = s.split()[2], s.split()[4]
        if short(table) in self.policied or table in self.policied:
            # Permissive policies OR together: adding the hub's would widen what the clinic allows.
            self.do(f"keep the existing policies on {short(table)} (the hub's {name} is not added)")
        else:
            self.do(f"create policy {name} on {short(table)}", s, undo=f"DROP POLICY IF EXISTS {name} ON {table}")

    # -- running ------------------------------------------------------------

    async def _failed_check(self, action: Action) -> list[str]:
        rows = await self.con.fetch(f"{action.check} LIMIT {_LIMIT + 1}")
        lines = [f"{action.table} {r[0]}: {r[1]}" for r in rows[:_LIMIT]]
        if len(rows) > _LIMIT:
            lines.append(f"{action.table}: more rows like these")
        return lines

    async def rehearse(self, later: list[Migration], setup: str) -> list[str]:
        """Every problem, found by running the plan, `setup` and the later migrations
        in a transaction that is always rolled back."""
        problems = list(self.problems)
        if problems:
            return problems
        con = self.con
        tx = con.transaction()
        await tx.start()
        try:
            await con.execute("SET LOCAL lock_timeout = '10s'")
            if any(a.enum for a in self.actions):
                await con.execute("SET LOCAL check_function_bodies = off")
            for action in self.actions:
                try:
                    async with con.transaction():
                        found = await self._failed_check(action) if action.check else []
                        problems += found
                        if action.sql and not found:
                            await con.execute(action.sql)
                except asyncpg.PostgresError as exc:
                    if exc.sqlstate != _UNSAFE_ENUM:
                        problems.append(f"{action.line}: {exc}")
            if not problems:
                await con.execute(setup)
            for migration in [] if problems else later:
                try:
                    async with con.transaction():
                        await con.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    if exc.sqlstate != _UNSAFE_ENUM:
                        problems.append(f"{migration.version:04d}_{migration.name} would fail after adoption: {exc}")
        finally:
            await tx.rollback()
        return problems

    async def apply(self, bookkeeping: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Commit the missing enum values, then everything else in one transaction.
        Raises `Refused` if a check fails now (the data changed since the rehearsal)."""
        con = self.con
        for action in self.actions:
            if action.enum:
                await con.execute(action.sql)
        async with con.transaction():
            await con.execute("SET LOCAL lock_timeout = '10s'")
            for action in self.actions:
                if action.check and (found := await self._failed_check(action)):
                    raise Refused(found)
                if action.sql and not action.enum:
                    await con.execute(action.sql)
            await con.execute(_LOG)
            await con.executemany("INSERT INTO public.schema_adoption (step, action, undo) VALUES ($1, $2, $3)",
                                  [(i, a.line, a.undo) for i, a in enumerate(self.actions, 1) if a.sql])
            for sql, args in bookkeeping:
                await con.execute(sql, *args)


async def needed(con: asyncpg.Connection) -> bool:
    """Whether objects 0001 creates already exist (a database the hub did not make)."""
    return bool(await con.fetchval("""
        SELECT to_regclass('auth.users') IS NOT NULL OR to_regtype('public.app_role') IS NOT NULL
            OR EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename IN
                       ('profiles', 'user_roles', 'dentists', 'appointments', 'appointment_documents'))"""))
