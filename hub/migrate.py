"""Numbered SQL migrations in `sql/`, applied once each and recorded with a checksum.

`sql/0001_init.up.sql` is version 1. Each file runs in its own transaction,
under a transaction-scoped advisory lock that keeps several processes (a
`release:` step racing a worker) from applying the same file twice. An
applied file must never change: the hub refuses to serve a database whose
record differs from the files.

A database that already holds what 0001 creates (a clinic's Supabase project)
is adopted instead of initialized: see hub/adopt.py. `dry_run` says what
`migrate` would do and changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from pathlib import Path

import asyncpg

from hub import adopt, ddl

log = logging.getLogger("hub.migrate")

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.up\.sql$")
_LOCK = 0x6875625F6D6967  # "hub_mig": one advisory lock key for the whole hub

_TABLE = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  checksum   text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)"""


class MigrationError(Exception):
    """The database and the files disagree; the message says how to fix it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """Of the file without its comment and blank lines, so a reworded
        comment does not make an applied migration look changed."""
        return _sha256(_COMMENT_LINE.sub("", self.sql))

    def stamped(self, checksum: str) -> bool:
        """Whether `checksum`, recorded when this file was applied, is this
        file's. Databases migrated before comment lines were left out hold
        the whole text's checksum: this file's, or, where a comment was
        reworded since, the text it had then (`_FORMER`)."""
        return checksum in (self.checksum, _sha256(self.sql), _FORMER.get(self.version))


_COMMENT_LINE = re.compile(r"^[ \t]*(--.*)?(\n|$)", re.MULTILINE)
# The whole-text checksums of files whose comment lines were reworded after they shipped.
_FORMER = {
    4: "1e04e597eace06bf5d564d83d0950053fa50a787422ab52f3ddee980405e1994",
    7: "3477da5a7577d6e2a940498f87839752f1f663865f39e044549eb0e6358dfdea",
}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load(sql_dir: Path) -> list[Migration]:
    """The migrations in `sql_dir`, ordered by version."""
    found: dict[int, Migration] = {}
    for path in sorted(sql_dir.glob("*.up.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.up.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations have version {version}")
        found[version] = Migration(version, match.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


async def _applied(con: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    exists = await con.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await con.fetch("SELECT version, name, checksum FROM public.schema_migrations")
    return {r["version"]: (r["name"], r["checksum"]) for r in rows}


def _differences(applied: dict[int, tuple[str, str]], files: list[Migration]) -> list[str]:
    by_version = {m.version: m for m in files}
    problems = []
    for version, (name, checksum) in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            problems.append(f"{version:04d}_{name} is applied but its file is missing")
        elif not migration.stamped(checksum):
            problems.append(f"{version:04d}_{name}.up.sql changed after it was applied "
                            "(add a new migration instead of editing an applied one)")
    return problems


_RECORD = "INSERT INTO public.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"


async def _adoption(con: asyncpg.Connection, files: list[Migration],
                    applied: dict[int, tuple[str, str]]) -> adopt.Adoption | None:
    """The plan to adopt this database in place of 0001, if it needs one."""
    if not files or files[0].version != 1 or 1 in applied or not await adopt.needed(con):
        return None
    adoption = adopt.Adoption(con, files[0])
    try:
        await adoption.plan()
    except adopt.Refused as exc:
        raise _refusal(exc.problems) from None
    return adoption


def _refusal(problems: list[str]) -> MigrationError:
    return MigrationError("cannot adopt this database; nothing was changed:\n  - " + "\n  - ".join(problems))


async def _adopt(con: asyncpg.Connection, files: list[Migration]) -> bool:
    """Adopt the database in place of 0001 unless another process has meanwhile; whether this one did."""
    await con.execute("SELECT pg_advisory_lock($1)", _LOCK)
    try:
        applied = await _applied(con)  # read under the lock
        adoption = await _adoption(con, files, applied)
        if adoption is None:
            return False
        pending = [m for m in files[1:] if m.version not in applied]
        problems = await adoption.rehearse(pending, _TABLE)
        if problems:
            raise _refusal(problems)
        log.info("adopting the existing schema as %04d_%s", files[0].version, files[0].name)
        try:
            await adoption.apply([(_TABLE, ()), (_RECORD, (files[0].version, files[0].name, files[0].checksum))])
        except adopt.Refused as exc:
            raise _refusal(exc.problems) from None
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"adopting the existing schema failed and was rolled back: {exc}") from None
        return True
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", _LOCK)


async def migrate(con: asyncpg.Connection, files: list[Migration]) -> list[Migration]:
    """Apply the pending migrations; returns those applied.

    Raises MigrationError if an applied migration differs from its file, if
    an existing database cannot be adopted, or if a migration fails (it is
    rolled back). Each numbered file takes the lock inside its own
    transaction (never a session lock), so this is also safe through a
    transaction pooler, where a session lock could be left held on a server
    connection someone else gets next. Adoption, a one-time step that runs
    several transactions, holds a session lock: run it over a direct
    connection (the CLI uses DATABASE_DIRECT_URL).
    """
    applied = await _applied(con)
    problems = _differences(applied, files)
    if problems:
        raise MigrationError("; ".join(problems))
    done = []
    if 1 not in applied and await adopt.needed(con):
        if await _adopt(con, files):
            done.append(files[0])
        applied = await _applied(con)
    for migration in files:
        if migration.version in applied:
            continue
        try:
            async with con.transaction():
                await con.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                await con.execute(_TABLE)
                if await con.fetchval("SELECT EXISTS (SELECT 1 FROM public.schema_migrations WHERE version = $1)",
                                      migration.version):
                    continue  # another process applied it while we waited
                log.info("applying migration %04d_%s", migration.version, migration.name)
                await con.execute(migration.sql)
                await con.execute(_RECORD, migration.version, migration.name, migration.checksum)
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"{migration.version:04d}_{migration.name} failed and was rolled back: "
                                 f"{type(exc).__name__}: {exc}") from None
        done.append(migration)
    return done


async def dry_run(con: asyncpg.Connection, files: list[Migration]) -> tuple[list[str], list[str]]:
    """(what `migrate` would do, one line each; why it could not), changing nothing.

    The pending files are run in a transaction that is rolled back, so a file
    that would fail is found too.
    """
    await con.execute("SELECT pg_advisory_lock($1)", _LOCK)
    try:
        applied = await _applied(con)
        problems = _differences(applied, files)
        if problems:
            return [], problems
        lines = [] if await con.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL") \
            else ["create table schema_migrations"]
        pending = [m for m in files if m.version not in applied]
        adoption = await _adoption(con, files, applied)
        if adoption is not None:
            lines.append(f"adopt the existing schema as {files[0].version:04d}_{files[0].name}:")
            lines += ["  " + a.line for a in adoption.actions]
            problems = await adoption.rehearse(pending[1:], _TABLE)
            pending = pending[1:]
        else:
            problems = await _rehearse(con, pending)
        for m in pending:
            lines += [f"apply {m.version:04d}_{m.name}:"] + ["  " + line for line in ddl.outline(m.sql)]
        return lines, problems
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", _LOCK)


async def _rehearse(con: asyncpg.Connection, pending: list[Migration]) -> list[str]:
    tx = con.transaction()
    await tx.start()
    try:
        await con.execute(_TABLE)
        for migration in pending:
            try:
                await con.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                return [f"{migration.version:04d}_{migration.name} would fail: {type(exc).__name__}: {exc}"]
        return []
    finally:
        await tx.rollback()


async def check(con: asyncpg.Connection, files: list[Migration]) -> None:
    """Raises MigrationError unless every file is applied, unchanged."""
    applied = await _applied(con)
    problems = _differences(applied, files)
    pending = [f"{m.version:04d}_{m.name}" for m in files if m.version not in applied]
    if pending:
        problems.append(f"pending migrations {', '.join(pending)} (run `hub migrate`)")
    if problems:
        raise MigrationError("database schema does not match sql/: " + "; ".join(problems))
