"""Adopting a database that already holds a clinic's schema, such as a Supabase project.

When sql/0001_init.up.sql is not yet recorded but objects it creates already
exist, this runs in its place (a baseline, as Flyway calls it). It reads 0001
statement by statement: what is missing is created with 0001's own text; what
exists is kept and extended (missing columns with their defaults, backfilled
NULLs, constraints); Supabase's `auth` schema is never altered. Every
constraint is checked against the existing rows first: a row that would break
one is reported by table, key and reason, and nothing changes. On success 0001
is recorded as applied and the later migrations run as usual.

Runs in two steps because PostgreSQL cannot use an enum value in the
transaction that added it: first a rehearsal in a transaction that is always
rolled back (it finds every problem, and is all `--dry-run` does), then the
missing enum values are committed, then everything else in one transaction.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

import asyncpg

from hub import ddl

if TYPE_CHECKING:
    from hub.migrate import Migration

_TEXT = {"text", "character varying"}
_UNSAFE_ENUM = "55P04"  # a value added to an enum in this transaction
_LIMIT = 20             # problem rows reported per check

_LOG = """
CREATE TABLE public.schema_adoption (
  step   integer PRIMARY KEY,
  action text NOT NULL,
  undo   text
);
ALTER TABLE public.schema_adoption ENABLE ROW LEVEL SECURITY"""


@dataclasses.dataclass
class Action:
    line: str                 # what --dry-run prints
    sql: str | None = None    # None: a line that only says what is kept
    check: str | None = None  # rows (key, reason) of existing data that forbid this action
    table: str = ""
    undo: str | None = None
    enum: bool = False        # ALTER TYPE ... ADD VALUE: committed before the rest


def _short(name: str) -> str:
    return name.removeprefix("public.")


class Adoption:
    def __init__(self, con: asyncpg.Connection, init: Migration) -> None:
        self.con, self.init = con, init
        self.actions: list[Action] = []
        self.problems: list[str] = []
        self.enums: dict[str, list[str]] = {}

    # -- planning ---------------------------------------------------------

    async def plan(self) -> None:
        con = self.con
        self.supabase_auth = await con.fetchval("SELECT to_regclass('auth.users') IS NOT NULL")
        self.policied = {r[0] for r in await con.fetch(
            "SELECT DISTINCT polrelid::regclass::text FROM pg_policy")}
        for statement in ddl.statements(self.init.sql):
            await self._statement(statement)

    def _do(self, line: str, sql: str | None = None, **kw: Any) -> None:
        self.actions.append(Action(line, sql, **kw))

    async def _exists(self, query: str, *args: Any) -> bool:
        return bool(await self.con.fetchval(query, *args))

    async def _statement(self, s: str) -> None:
        words = s.split()
        head = " ".join(words[:2]).upper()
        if head == "CREATE EXTENSION":
            name = words[-1]
            if await self._exists("SELECT 1 FROM pg_extension WHERE extname = $1", name):
                self._do(f"skip extension {name} (installed)")
            else:
                self._do(f"create extension {name}", s, undo=f"DROP EXTENSION IF EXISTS {name}")
        elif head == "DO $$" and "CREATE ROLE" in s:
            roles = re.findall(r"'(\w+)'", re.search(r"ARRAY\[(.*?)\]", s).group(1))
            missing = [r for r in roles if not await self._exists("SELECT 1 FROM pg_roles WHERE rolname = $1", r)]
            if missing:
                self._do(f"create roles {', '.join(missing)}", s)
            else:
                self._do(f"skip roles {', '.join(roles)} (exist)")
        elif head == "CREATE SCHEMA":
            name = words[-1]
            if await self._exists("SELECT 1 FROM pg_namespace WHERE nspname = $1", name):
                self._do(f"skip schema {name} (exists)")
            else:
                self._do(f"create schema {name}", s, undo=f"DROP SCHEMA IF EXISTS {name}")
        elif head == "CREATE TABLE":
            await self._table(s)
        elif head == "CREATE INDEX":
            name, table = words[2], words[4]
            schema = table.split(".")[0]
            if table == "auth.users" and self.supabase_auth:
                self._do(f"skip index {name} on auth.users (Supabase's table)")
            elif await self._exists("SELECT to_regclass($1) IS NOT NULL", f"{schema}.{name}"):
                self._do(f"skip index {name} (exists)")
            else:
                self._do(f"create index {name} on {_short(table)}", s, undo=f"DROP INDEX IF EXISTS {schema}.{name}")
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
            if await self._exists("SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass($1)", table):
                self._do(f"skip row level security on {_short(table)} (enabled)")
            else:
                self._do(f"enable row level security on {_short(table)}", s,
                         undo=f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        elif words[0] == "GRANT":
            self._grant(s)
        else:
            raise Refused([f"adoption cannot read this statement of {self.init.name}: {s[:60]}"])

    def _grant(self, s: str) -> None:
        if re.search(r"\bON (SCHEMA|FUNCTION) auth\b", s) and self.supabase_auth:
            self._do("skip grants on auth (Supabase's own)")
            return
        # 0001 on an empty database grants its own tables; here, only those, not the clinic's others.
        tables = ", ".join(t.name for t in self.tables if t.name.startswith("public."))
        s = s.replace("ON ALL TABLES IN SCHEMA public", f"ON {tables}")
        self._do(s.split(" TO ")[0].lower().replace("public.", "") + " to " + s.split(" TO ")[1], s)

    @property
    def tables(self) -> list[ddl.Table]:
        return [ddl.table(s) for s in ddl.statements(self.init.sql) if s.startswith("CREATE TABLE")]

    async def _type(self, s: str) -> None:
        name = s.split()[2]
        labels = ddl.enum_labels(s)
        self.enums[name] = labels
        oid = await self.con.fetchval("SELECT to_regtype($1)::oid", name)
        if oid is None:
            self._do(f"create type {_short(name)}", s, undo=f"DROP TYPE IF EXISTS {name}")
            return
        have = [r[0] for r in await self.con.fetch(
            "SELECT enumlabel FROM pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder", oid)]
        if not have:
            self.problems.append(f"type {_short(name)} exists but is not an enum; the hub needs ENUM ({', '.join(labels)})")
        for label in labels:
            if label not in have:
                self._do(f"add value '{label}' to type {_short(name)}",
                         f"ALTER TYPE {name} ADD VALUE IF NOT EXISTS '{label}'", enum=True)
        if set(labels) <= set(have):
            self._do(f"skip type {_short(name)} (exists)")

    async def _function(self, s: str) -> None:
        name, args = ddl.function_identity(s)
        line = f"function {_short(name)}({args})"
        if name == "auth.handle_new_user" and self.supabase_auth:
            self._do(f"skip {line}: auth.users is Supabase's; the hub signs users up on first sight")
            return
        types_known = all([await self.con.fetchval("SELECT to_regtype($1) IS NOT NULL", t)
                           for t in ddl.split(args)])
        src = types_known and await self.con.fetchval(
            "SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure($1)", f"{name}({args})")
        if src is None or src is False:
            self._do(f"create {line}", s, undo=f"DROP FUNCTION IF EXISTS {name}({args})")
        elif src == ddl.function_body(s):
            self._do(f"skip {line} (exists)")
        elif name.startswith("auth.") or name == "public.has_role":
            self._do(f"keep {line} (the existing one)")
        else:
            self.problems.append(f"{line} already exists with another body; the hub needs its own "
                                 "(rename or drop the existing one)")

    async def _trigger(self, s: str) -> None:
        m = re.match(r"CREATE TRIGGER (\w+)\s.*?\bON ([\w.]+).*EXECUTE FUNCTION ([\w.]+)\(", s, re.S)
        name, table, function = m.groups()
        if table == "auth.users" and self.supabase_auth:
            self._do(f"skip trigger {name} on auth.users (Supabase's table; existing sign-up triggers are kept)")
            return
        have = await self.con.fetchval(
            "SELECT tgfoid::regproc::text FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2",
            table, name)
        if have is None:
            self._do(f"create trigger {name} on {_short(table)}", s, undo=f"DROP TRIGGER IF EXISTS {name} ON {table}")
        elif have in (function, _short(function)):
            self._do(f"skip trigger {name} on {_short(table)} (exists)")
        else:
            self.problems.append(f"trigger {name} on {_short(table)} already exists and runs {have}; "
                                 f"the hub needs its own (rename the existing one)")

    async def _policy(self, s: str) -> None:
        name, table = s.split()[2], s.split()[4]
        if _short(table) in self.policied or table in self.policied:
            # Permissive policies OR together: adding the hub's would widen what the clinic allows.
            self._do(f"keep the existing policies on {_short(table)} (the hub's {name} is not added)")
        else:
            self._do(f"create policy {name} on {_short(table)}", s, undo=f"DROP POLICY IF EXISTS {name} ON {table}")

    # -- tables -------------------------------------------------------------

    async def _table(self, s: str) -> None:
        t = ddl.table(s)
        short = _short(t.name)
        if not await self._exists("SELECT to_regclass($1) IS NOT NULL", t.name):
            self._do(f"create table {short}", s, undo=f"DROP TABLE IF EXISTS {t.name} CASCADE")
            return
        live = {r["name"]: r for r in await self.con.fetch("""
            SELECT a.attname AS name, format_type(a.atttypid, NULL) AS type, a.atttypid AS oid,
                   a.attnotnull AS not_null, a.attgenerated <> '' OR a.attidentity <> '' AS generated,
                   pg_get_expr(d.adbin, d.adrelid) AS "default"
            FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped""", t.name)}
        if t.name == "auth.users":
            await self._supabase_users(live)
            return
        key = "id::text" if "id" in live else " || '/' || ".join(f"{c}::text" for c in t.primary_key if c in live)
        rows = await self.con.fetchval(f"SELECT count(*) FROM {t.name}")
        self._do(f"keep table {short} ({rows} rows)")
        for col in t.columns:
            if col.name in live:
                await self._adapt(t, col, live[col.name], key)
            elif col.not_null and col.default is None and rows:
                self.problems.append(f"{short}: new column {col.name} is NOT NULL without a default, "
                                     f"and {rows} existing rows have no value for it")
            else:
                default = f" default {col.default}" if col.default else " generated" if col.generated else ""
                self._do(f"add column {short}.{col.name} {col.type}{default}",
                         f"ALTER TABLE {t.name} ADD COLUMN {col.text}", undo=f"ALTER TABLE {t.name} DROP COLUMN {col.name}")
        declared = {c.name for c in t.columns}
        for name, c in live.items():
            if name not in declared and c["not_null"] and c["default"] is None and not c["generated"]:
                self.problems.append(f"{short}.{name} is NOT NULL without a default, and the hub does not fill it "
                                     "in: give it a default or allow NULL")
        for constraint in t.constraints:
            await self._table_constraint(t, constraint, key)

    async def _supabase_users(self, live: dict[str, Any]) -> None:
        if live.get("id") is None or live["id"]["type"] != "uuid" or "email" not in live:
            self.problems.append("auth.users exists but has no id uuid and email columns")
        for name, c in live.items():
            if name != "id" and c["not_null"] and c["default"] is None and not c["generated"]:
                self.problems.append(f"auth.users.{name} is NOT NULL without a default: the hub cannot sign users up")
        self._do("skip auth.users (exists)")

    async def _adapt(self, t: ddl.Table, col: ddl.Column, live: Any, key: str) -> None:
        short, name = _short(t.name), col.name
        where = f"{short}.{name}"
        if col.type in self.enums:
            live = await self._to_enum(t, col, live, key)
            if live is None:
                return
        else:
            want = "bigint" if col.type == "bigserial" else await self.con.fetchval(
                "SELECT format_type(to_regtype($1), NULL)", col.type)
            if live["type"] != want and not {live["type"], want} <= _TEXT:
                hint = (f" (convert it, e.g. ALTER TABLE {t.name} ALTER COLUMN {name} TYPE timestamptz "
                        f"USING {name} AT TIME ZONE '<the clinic''s time zone>')"
                        if live["type"].startswith("timestamp without") else "")
                self.problems.append(f"{where} is {live['type']}; the hub needs {want}{hint}")
                return
        if col.generated and not live["generated"]:
            self.problems.append(f"{where} exists but is not a generated column; the hub computes it")
        if col.default and live["default"] is None and not col.generated:
            self._do(f"set default {where} {col.default}",
                     f"ALTER TABLE {t.name} ALTER COLUMN {name} SET DEFAULT {col.default}",
                     undo=f"ALTER TABLE {t.name} ALTER COLUMN {name} DROP DEFAULT")
        if col.not_null and not live["not_null"]:
            nulls = await self.con.fetchval(f"SELECT count(*) FROM {t.name} WHERE {name} IS NULL")
            if nulls and col.default:
                self._do(f"backfill {nulls} rows of {where} with {col.default}",
                         f"UPDATE {t.name} SET {name} = DEFAULT WHERE {name} IS NULL")
            self._do(f"set not null {where}", f"ALTER TABLE {t.name} ALTER COLUMN {name} SET NOT NULL",
                     check=f"SELECT {key}, '{name} is empty (NULL)' FROM {t.name} WHERE {name} IS NULL",
                     table=short, undo=f"ALTER TABLE {t.name} ALTER COLUMN {name} DROP NOT NULL")
        for expr in col.checks:
            await self._check(t, f"{t.name.split('.')[1]}_{name}_check", expr, key,
                              f"format('{name} = %s is not allowed (CHECK {expr.replace(chr(39), chr(39) * 2)})', {name})")
        if col.references:
            await self._foreign_key(t, name, col.references, key)
        if col.primary_key:
            await self._unique(t, [name], key, primary=True)
        elif col.unique:
            await self._unique(t, [name], key)

    async def _to_enum(self, t: ddl.Table, col: ddl.Column, live: Any, key: str) -> Any:
        """A status kept as text, or as another enum, becomes the hub's enum if every
        row's value is one of its. Returns the column as it will be, None if it cannot."""
        labels = self.enums[col.type]
        short, name, kind = _short(t.name), col.name, _short(col.type)
        quoted = ", ".join(f"'{label}'" for label in labels)
        check = (f"SELECT {key}, format('{name} %L is not one the hub knows ({', '.join(labels)})', {name}) "
                 f"FROM {t.name} WHERE {name}::text NOT IN ({quoted})")
        if live["type"] == kind or live["type"] == col.type:
            self._do(f"keep {short}.{name} ({kind})", check=check, table=short)
            return live
        if live["type"] not in _TEXT and not await self._exists("SELECT 1 FROM pg_enum WHERE enumtypid = $1", live["oid"]):
            self.problems.append(f"{short}.{name} is {live['type']}; the hub needs text values it can turn into {kind}")
            return None
        users = [r[0] for r in await self.con.fetch("""
            SELECT coalesce((SELECT 'policy ' || polname FROM pg_policy WHERE oid = d.objid),
                            (SELECT 'view ' || ev_class::regclass::text FROM pg_rewrite WHERE oid = d.objid))
            FROM pg_depend d
            WHERE d.refobjid = $1::regclass AND d.refobjsubid = (SELECT attnum FROM pg_attribute
                  WHERE attrelid = $1::regclass AND attname = $2)
              AND d.classid IN ('pg_policy'::regclass, 'pg_rewrite'::regclass)""", t.name, name)]
        if users:
            self.problems.append(f"{short}.{name} is {live['type']} and used by {', '.join(users)}: the hub needs it as "
                                 f"{kind}; drop those, adopt, and recreate them")
            return None
        for conname, definition in await self.con.fetch("""
                SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
                WHERE conrelid = $1::regclass AND contype = 'c'
                  AND conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2)]""",
                t.name, name):
            self._do(f"drop constraint {short}.{conname} (the type {kind} replaces it)",
                     f"ALTER TABLE {t.name} DROP CONSTRAINT {conname}",
                     undo=f"ALTER TABLE {t.name} ADD CONSTRAINT {conname} {definition}")
        old = re.match(r"'([^']*)'", live["default"] or "")
        default = f"'{old.group(1)}'" if old and old.group(1) in labels else col.default
        steps = [f"ALTER TABLE {t.name} ALTER COLUMN {name} DROP DEFAULT",
                 f"ALTER TABLE {t.name} ALTER COLUMN {name} TYPE {col.type} USING {name}::text::{col.type}"]
        if default:
            steps.append(f"ALTER TABLE {t.name} ALTER COLUMN {name} SET DEFAULT {default}")
        self._do(f"convert {short}.{name} from {live['type']} to {kind}" + (f" (default {default})" if default else ""),
                 ";\n".join(steps), check=check, table=short,
                 undo=f"ALTER TABLE {t.name} ALTER COLUMN {name} DROP DEFAULT;\n"
                      f"ALTER TABLE {t.name} ALTER COLUMN {name} TYPE {live['type']} USING {name}::text"
                      + (f";\nALTER TABLE {t.name} ALTER COLUMN {name} SET DEFAULT {live['default']}" if live["default"] else ""))
        return dict(live, default=default)

    async def _constraint_exists(self, table: str, name: str) -> bool:
        return await self._exists("SELECT 1 FROM pg_constraint WHERE conrelid = $1::regclass AND conname = $2",
                                  table, name)

    async def _check(self, t: ddl.Table, conname: str, expr: str, key: str, reason: str) -> None:
        short = _short(t.name)
        if await self._constraint_exists(t.name, conname):
            self._do(f"keep constraint {short}.{conname} (exists)")
            return
        self._do(f"add check {short}: {expr}", f"ALTER TABLE {t.name} ADD CONSTRAINT {conname} CHECK ({expr})",
                 check=f"SELECT {key}, {reason} FROM {t.name} WHERE NOT ({expr})", table=short,
                 undo=f"ALTER TABLE {t.name} DROP CONSTRAINT IF EXISTS {conname}")

    async def _foreign_key(self, t: ddl.Table, name: str, references: str, key: str) -> None:
        short = _short(t.name)
        if await self._exists("""SELECT 1 FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'f'
                AND conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2)]""",
                t.name, name):
            return
        target, column = re.match(r"([\w.]+)\((\w+)\)", references).groups()
        conname = f"{t.name.split('.')[1]}_{name}_fkey"
        self._do(f"add foreign key {short}.{name} references {_short(target)}",
                 f"ALTER TABLE {t.name} ADD CONSTRAINT {conname} FOREIGN KEY ({name}) REFERENCES {references}",
                 check=f"SELECT {key}, format('{name} %s is not in {_short(target)}', {name}) FROM {t.name} x "
                       f"WHERE {name} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {target} r WHERE r.{column} = x.{name})",
                 table=short, undo=f"ALTER TABLE {t.name} DROP CONSTRAINT IF EXISTS {conname}")

    async def _unique(self, t: ddl.Table, cols: list[str], key: str, primary: bool = False) -> None:
        short = _short(t.name)
        indexes = await self.con.fetch("""
            SELECT i.indisprimary AS primary,
                   array(SELECT attname FROM pg_attribute WHERE attrelid = i.indrelid AND attnum = ANY(i.indkey)
                         ORDER BY attname) AS cols
            FROM pg_index i WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indpred IS NULL
              AND i.indexprs IS NULL AND i.indnkeyatts = $2""", t.name, len(cols))
        if any(list(r["cols"]) == sorted(cols) for r in indexes):
            return
        has_primary = await self._exists(
            "SELECT 1 FROM pg_index WHERE indrelid = $1::regclass AND indisprimary", t.name)
        kind = "PRIMARY KEY" if primary and not has_primary else "UNIQUE"
        listed = ", ".join(cols)
        self._do(f"add {kind.lower()} {short} ({listed})", f"ALTER TABLE {t.name} ADD {kind} ({listed})",
                 check=f"SELECT min({key}), format('({listed}) = (%s) appears %s times', concat_ws(', ', {listed}), "
                       f"count(*)) FROM {t.name} WHERE ({listed}) IS NOT NULL GROUP BY {listed} HAVING count(*) > 1",
                 table=short)

    async def _table_constraint(self, t: ddl.Table, text: str, key: str) -> None:
        upper = text.upper()
        if upper.startswith("PRIMARY KEY") or upper.startswith("UNIQUE"):
            await self._unique(t, [c.strip() for c in ddl.group(text)[0].split(",")], key,
                               primary=upper.startswith("PRIMARY"))
            return
        m = re.match(r"CONSTRAINT (\w+) EXCLUDE USING \w+", text)
        if m is None:
            raise Refused([f"adoption cannot read this constraint of {t.name}: {text[:60]}"])
        name, short = m.group(1), _short(t.name)
        if await self._constraint_exists(t.name, name):
            self._do(f"keep constraint {short}.{name} (exists)")
            return
        elements, end = ddl.group(text, m.end())
        pred = text[end:].strip().removeprefix("WHERE").strip() or "true"
        pairs = [e.rsplit(" WITH ", 1) for e in ddl.split(elements)]
        keys = ", ".join(f"({e}) AS k{i}" for i, (e, _) in enumerate(pairs))
        on = " AND ".join(f"a.k{i} {op} b.k{i}" for i, (_, op) in enumerate(pairs))
        self._do(f"add constraint {short}.{name} (no two rows may overlap)", f"ALTER TABLE {t.name} ADD {text}",
                 check=f"WITH r AS (SELECT {key} AS key, {keys} FROM {t.name} WHERE {pred}) "
                       f"SELECT a.key, 'overlaps ' || b.key || ' ({name})' FROM r a JOIN r b ON a.key < b.key AND {on}",
                 table=short, undo=f"ALTER TABLE {t.name} DROP CONSTRAINT IF EXISTS {name}")

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


class Refused(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


async def needed(con: asyncpg.Connection) -> bool:
    """Whether objects 0001 creates already exist (a database the hub did not make)."""
    return bool(await con.fetchval("""
        SELECT to_regclass('auth.users') IS NOT NULL OR to_regtype('public.app_role') IS NOT NULL
            OR EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename IN
                       ('profiles', 'user_roles', 'dentists', 'appointments', 'appointment_documents'))"""))
