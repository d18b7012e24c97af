"""Adoption's plan, and the part of it that extends a table that already exists.

`Plan` collects what adopting a database would do (one `Action` each) and
why it cannot (`problems`). `table()` plans one of 0001's CREATE TABLEs on a
database that may already have that table: a missing table is created with
0001's text; an existing one is kept, and gains the columns, defaults,
NOT NULLs, CHECKs, keys and exclusion constraint 0001 declares for it, each
with a query that finds the existing rows that would break it. hub/adopt.py
plans the other statements and runs the plan.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import asyncpg

from hub import ddl

_TEXT = {"text", "character varying"}


@dataclasses.dataclass
class Action:
    line: str                 # what --dry-run prints
    sql: str | None = None    # None: a line that only says what is kept
    check: str | None = None  # rows (key, reason) of existing data that forbid this action
    table: str = ""
    undo: str | None = None
    enum: bool = False        # ALTER TYPE ... ADD VALUE: committed before the rest


class Refused(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def short(name: str) -> str:
    return name.removeprefix("public.")


class Plan:
    def __init__(self, con: asyncpg.Connection) -> None:
        self.con = con
        self.actions: list[Action] = []
        self.problems: list[str] = []
        self.enums: dict[str, list[str]] = {}  # 0001's enum types and their labels, as planned so far

    def do(self, line: str, sql: str | None = None, **kw: Any) -> None:
        self.actions.append(Action(line, sql, **kw))

    async def exists(self, query: str, *args: Any) -> bool:
        return bool(await self.con.fetchval(query, *args))


async def table(plan: Plan, s: str) -> None:
    t = ddl.table(s)
    if not await plan.exists("SELECT to_regclass($1) IS NOT NULL", t.name):
        plan.do(f"create table {short(t.name)}", s, undo=f"DROP TABLE IF EXISTS {t.name} CASCADE")
        return
    live = {r["name"]: r for r in await plan.con.fetch("""
        SELECT a.attname AS name, format_type(a.atttypid, NULL) AS type, a.atttypid AS oid,
               a.attnotnull AS not_null, a.attgenerated <> '' OR a.attidentity <> '' AS generated,
               pg_get_expr(d.adbin, d.adrelid) AS "default"
        FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped""", t.name)}
    if t.name == "auth.users":
        _supabase_users(plan, live)
        return
    key = "id::text" if "id" in live else " || '/' || ".join(f"{c}::text" for c in t.primary_key if c in live)
    await _Existing(plan, t, key).extend(live)


def _supabase_users(plan: Plan, live: dict[str, Any]) -> None:
    if live.get("id") is None or live["id"]["type"] != "uuid" or "email" not in live:
        plan.problems.append("auth.users exists but has no id uuid and email columns")
    for name, c in live.items():
        if name != "id" and c["not_null"] and c["default"] is None and not c["generated"]:
            plan.problems.append(f"auth.users.{name} is NOT NULL without a default: the hub cannot sign users up")
    plan.do("skip auth.users (exists)")


class _Existing:
    """One of 0001's tables that the database already has. `key` is the SQL
    expression that names a row in a problem report."""

    def __init__(self, plan: Plan, t: ddl.Table, key: str) -> None:
        self.plan, self.t, self.key = plan, t, key
        self.rel, self.shown = t.name, short(t.name)

    async def extend(self, live: dict[str, Any]) -> None:
        plan, t, shown = self.plan, self.t, self.shown
        rows = await plan.con.fetchval(f"SELECT count(*) FROM {t.name}")
        plan.do(f"keep table {shown} ({rows} rows)")
        for col in t.columns:
            if col.name in live:
                await self._adapt(col, live[col.name])
            elif col.not_null and col.default is None and rows:
                plan.problems.append(f"{shown}: new column {col.name} is NOT NULL without a default, "
                                     f"and {rows} existing rows have no value for it")
            else:
                default = f" default {col.default}" if col.default else " generated" if col.generated else ""
                plan.do(f"add column {shown}.{col.name} {col.type}{default}",
                        f"ALTER TABLE {t.name} ADD COLUMN {col.text}", undo=f"ALTER TABLE {t.name} DROP COLUMN {col.name}")
        declared = {c.name for c in t.columns}
        for name, c in live.items():
            if name not in declared and c["not_null"] and c["default"] is None and not c["generated"]:
                plan.problems.append(f"{shown}.{name} is NOT NULL without a default, and the hub does not fill it "
                                     "in: give it a default or allow NULL")
        for constraint in t.constraints:
            await self._table_constraint(constraint)

    async def _adapt(self, col: ddl.Column, live: Any) -> None:
        plan, rel, name, key = self.plan, self.rel, col.name, self.key
        where = f"{self.shown}.{name}"
        if col.type in plan.enums:
            live = await self._to_enum(col, live)
            if live is None:
                return
        else:
            want = "bigint" if col.type == "bigserial" else await plan.con.fetchval(
                "SELECT format_type(to_regtype($1), NULL)", col.type)
            if live["type"] != want and not {live["type"], want} <= _TEXT:
                hint = (f" (convert it, e.g. ALTER TABLE {rel} ALTER COLUMN {name} TYPE timestamptz "
                        f"USING {name} AT TIME ZONE '<the clinic''s time zone>')"
                        if live["type"].startswith("timestamp without") else "")
                plan.problems.append(f"{where} is {live['type']}; the hub needs {want}{hint}")
                return
        if col.generated and not live["generated"]:
            plan.problems.append(f"{where} exists but is not a generated column; the hub computes it")
        if col.default and live["default"] is None and not col.generated:
            plan.do(f"set default {where} {col.default}",
                    f"ALTER TABLE {rel} ALTER COLUMN {name} SET DEFAULT {col.default}",
                    undo=f"ALTER TABLE {rel} ALTER COLUMN {name} DROP DEFAULT")
        if col.not_null and not live["not_null"]:
            nulls = await plan.con.fetchval(f"SELECT count(*) FROM {rel} WHERE {name} IS NULL")
            if nulls and col.default:
                plan.do(f"backfill {nulls} rows of {where} with {col.default}",
                        f"UPDATE {rel} SET {name} = DEFAULT WHERE {name} IS NULL")
            plan.do(f"set not null {where}", f"ALTER TABLE {rel} ALTER COLUMN {name} SET NOT NULL",
                    check=f"SELECT {key}, '{name} is empty (NULL)' FROM {rel} WHERE {name} IS NULL",
                    table=self.shown, undo=f"ALTER TABLE {rel} ALTER COLUMN {name} DROP NOT NULL")
        for expr in col.checks:
            await self._check(f"{rel.split('.')[1]}_{name}_check", expr,
                              f"format('{name} = %s is not allowed (CHECK {expr.replace(chr(39), chr(39) * 2)})', {name})")
        if col.references:
            await self._foreign_key(name, col.references)
        if col.primary_key:
            await self._unique([name], primary=True)
        elif col.unique:
            await self._unique([name])

    async def _to_enum(self, col: ddl.Column, live: Any) -> Any:
        """A status kept as text, or as another enum, becomes the hub's enum if every
        row's value is one of its. Returns the column as it will be, None if it cannot."""
        plan, rel, shown = self.plan, self.rel, self.shown
        labels = plan.enums[col.type]
        name, kind = col.name, short(col.type)
        quoted = ", ".join(f"'{label}'" for label in labels)
        check = (f"SELECT {self.key}, format('{name} %L is not one the hub knows ({', '.join(labels)})', {name}) "
                 f"FROM {rel} WHERE {name}::text NOT IN ({quoted})")
        if live["type"] == kind or live["type"] == col.type:
            plan.do(f"keep {shown}.{name} ({kind})", check=check, table=shown)
            return live
        if live["type"] not in _TEXT and not await plan.exists("SELECT 1 FROM pg_enum WHERE enumtypid = $1", live["oid"]):
            plan.problems.append(f"{shown}.{name} is {live['type']}; the hub needs text values it can turn into {kind}")
            return None
        users = [r[0] for r in await plan.con.fetch("""
            SELECT coalesce((SELECT 'policy ' || polname FROM pg_policy WHERE oid = d.objid),
                            (SELECT 'view ' || ev_class::regclass::text FROM pg_rewrite WHERE oid = d.objid))
            FROM pg_depend d
            WHERE d.refobjid = $1::regclass AND d.refobjsubid = (SELECT attnum FROM pg_attribute
                  WHERE attrelid = $1::regclass AND attname = $2)
              AND d.classid IN ('pg_policy'::regclass, 'pg_rewrite'::regclass)""", rel, name)]
        if users:
            plan.problems.append(f"{shown}.{name} is {live['type']} and used by {', '.join(users)}: the hub needs it "
                                 f"as {kind}; drop those, adopt, and recreate them")
            return None
        for conname, definition in await plan.con.fetch("""
                SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
                WHERE conrelid = $1::regclass AND contype = 'c'
                  AND conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2)]""",
                rel, name):
            plan.do(f"drop constraint {shown}.{conname} (the type {kind} replaces it)",
                    f"ALTER TABLE {rel} DROP CONSTRAINT {conname}",
                    undo=f"ALTER TABLE {rel} ADD CONSTRAINT {conname} {definition}")
        old = re.match(r"'([^']*)'", live["default"] or "")
        default = f"'{old.group(1)}'" if old and old.group(1) in labels else col.default
        steps = [f"ALTER TABLE {rel} ALTER COLUMN {name} DROP DEFAULT",
                 f"ALTER TABLE {rel} ALTER COLUMN {name} TYPE {col.type} USING {name}::text::{col.type}"]
        if default:
            steps.append(f"ALTER TABLE {rel} ALTER COLUMN {name} SET DEFAULT {default}")
        plan.do(f"convert {shown}.{name} from {live['type']} to {kind}" + (f" (default {default})" if default else ""),
                ";\n".join(steps), check=check, table=shown,
                undo=f"ALTER TABLE {rel} ALTER COLUMN {name} DROP DEFAULT;\n"
                     f"ALTER TABLE {rel} ALTER COLUMN {name} TYPE {live['type']} USING {name}::text"
                     + (f";\nALTER TABLE {rel} ALTER COLUMN {name} SET DEFAULT {live['default']}" if live["default"] else ""))
        return dict(live, default=default)

    async def _constraint_exists(self, name: str) -> bool:
        return await self.plan.exists("SELECT 1 FROM pg_constraint WHERE conrelid = $1::regclass AND conname = $2",
                                      self.rel, name)

    async def _check(self, conname: str, expr: str, reason: str) -> None:
        rel, shown = self.rel, self.shown
        if await self._constraint_exists(conname):
            self.plan.do(f"keep constraint {shown}.{conname} (exists)")
            return
        self.plan.do(f"add check {shown}: {expr}", f"ALTER TABLE {rel} ADD CONSTRAINT {conname} CHECK ({expr})",
                     check=f"SELECT {self.key}, {reason} FROM {rel} WHERE NOT ({expr})", table=shown,
                     undo=f"ALTER TABLE {rel} DROP CONSTRAINT IF EXISTS {conname}")

    async def _foreign_key(self, name: str, references: str) -> None:
        rel, shown = self.rel, self.shown
        if await self.plan.exists("""SELECT 1 FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'f'
                AND conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2)]""",
                rel, name):
            return
        target, column = re.match(r"([\w.]+)\((\w+)\)", references).groups()
        conname = f"{rel.split('.')[1]}_{name}_fkey"
        self.plan.do(f"add foreign key {shown}.{name} references {short(target)}",
                     f"ALTER TABLE {rel} ADD CONSTRAINT {conname} FOREIGN KEY ({name}) REFERENCES {references}",
                     check=f"SELECT {self.key}, format('{name} %s is not in {short(target)}', {name}) FROM {rel} x "
                           f"WHERE {name} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {target} r WHERE r.{column} = x.{name})",
                     table=shown, undo=f"ALTER TABLE {rel} DROP CONSTRAINT IF EXISTS {conname}")

    async def _unique(self, cols: list[str], primary: bool = False) -> None:
        rel = self.rel
        indexes = await self.plan.con.fetch("""
            SELECT i.indisprimary AS primary,
                   array(SELECT attname FROM pg_attribute WHERE attrelid = i.indrelid AND attnum = ANY(i.indkey)
                         ORDER BY attname) AS cols
            FROM pg_index i WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indpred IS NULL
              AND i.indexprs IS NULL AND i.indnkeyatts = $2""", rel, len(cols))
        if any(list(r["cols"]) == sorted(cols) for r in indexes):
            return
        has_primary = await self.plan.exists(
            "SELECT 1 FROM pg_index WHERE indrelid = $1::regclass AND indisprimary", rel)
        kind = "PRIMARY KEY" if primary and not has_primary else "UNIQUE"
        listed = ", ".join(cols)
        self.plan.do(f"add {kind.lower()} {self.shown} ({listed})", f"ALTER TABLE {rel} ADD {kind} ({listed})",
                     check=f"SELECT min({self.key}), format('({listed}) = (%s) appears %s times', "
                           f"concat_ws(', ', {listed}), count(*)) FROM {rel} WHERE ({listed}) IS NOT NULL "
                           f"GROUP BY {listed} HAVING count(*) > 1",
                     table=self.shown)

    async def _table_constraint(self, text: str) -> None:
        upper = text.upper()
        if upper.startswith("PRIMARY KEY") or upper.startswith("UNIQUE"):
            await self._unique([c.strip() for c in ddl.group(text)[0].split(",")], primary=upper.startswith("PRIMARY"))
            return
        m = re.match(r"CONSTRAINT (\w+) EXCLUDE USING \w+", text)
        if m is None:
            raise Refused([f"adoption cannot read this constraint of {self.rel}: {text[:60]}"])
        name, rel, shown = m.group(1), self.rel, self.shown
        if await self._constraint_exists(name):
            self.plan.do(f"keep constraint {shown}.{name} (exists)")
            return
        elements, end = ddl.group(text, m.end())
        pred = text[end:].strip().removeprefix("WHERE").strip() or "true"
        pairs = [e.rsplit(" WITH ", 1) for e in ddl.split(elements)]
        keys = ", ".join(f"({e}) AS k{i}" for i, (e, _) in enumerate(pairs))
        on = " AND ".join(f"a.k{i} {op} b.k{i}" for i, (_, op) in enumerate(pairs))
        self.plan.do(f"add constraint {shown}.{name} (no two rows may overlap)", f"ALTER TABLE {rel} ADD {text}",
                     check=f"WITH r AS (SELECT {self.key} AS key, {keys} FROM {rel} WHERE {pred}) "
                           f"SELECT a.key, 'overlaps ' || b.key || ' ({name})' FROM r a JOIN r b ON a.key < b.key AND {on}",
                     table=shown, undo=f"ALTER TABLE {rel} DROP CONSTRAINT IF EXISTS {name}")
