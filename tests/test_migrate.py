"""Migrations apply once, re-apply as a no-op, and a changed file is refused."""

from __future__ import annotations


import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest

from hub import db, migrate
from hub.config import ROOT
from web import create_app


@pytest.fixture
def empty_dsn(databases):
    dsn = databases.create(migrated=False)
    yield dsn
    databases.drop(dsn)


async def test_apply_from_empty_then_noop(empty_dsn: str) -> None:
    files = migrate.load(ROOT / "sql")
    assert [m.version for m in files] == sorted(m.version for m in files)
    con = await db.connect(empty_dsn)
    try:
        done = await migrate.migrate(con, files)
        assert [m.version for m in done] == [m.version for m in files]
        rows = await con.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["checksum"]) for r in rows] == [(m.version, m.checksum) for m in files]
        assert await migrate.migrate(con, files) == []
        await migrate.check(con, files)
        for table in ("profiles", "user_roles", "dentists", "appointments", "appointment_documents",
                      "slot_reservations", "realtime_events", "notifications"):
            assert await con.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{table}"), table
    finally:
        await con.close()


async def test_changed_file_is_refused(empty_dsn: str, tmp_path: Path) -> None:
    sql = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", sql)
    con = await db.connect(empty_dsn)
    try:
        await migrate.migrate(con, migrate.load(sql))
        first = sorted(sql.glob("0001_*.up.sql"))[0]
        first.write_text(first.read_text() + "\n  -- a comment reworded after it was applied\n")
        await migrate.check(con, migrate.load(sql))  # comment lines are not the migration
        first.write_text(first.read_text() + "\nSELECT 1; -- edited after it was applied\n")
        with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
            await migrate.migrate(con, migrate.load(sql))
        with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
            await migrate.check(con, migrate.load(sql))
    finally:
        await con.close()


async def test_pending_and_missing_are_reported(empty_dsn: str, tmp_path: Path) -> None:
    con = await db.connect(empty_dsn)
    try:
        with pytest.raises(migrate.MigrationError, match="pending migrations 0001_init, 0002_booking_rules, 0003_notification_events, 0004_write_calls"):
            await migrate.check(con, migrate.load(ROOT / "sql"))
        await migrate.migrate(con, migrate.load(ROOT / "sql"))
        (tmp_path / "sql").mkdir()
        with pytest.raises(migrate.MigrationError, match="file is missing"):
            await migrate.check(con, migrate.load(tmp_path / "sql"))
    finally:
        await con.close()


async def test_dry_run_lists_the_pending_files_and_changes_nothing(empty_dsn: str, tmp_path: Path) -> None:
    files = migrate.load(ROOT / "sql")
    sql = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", sql)
    last = sorted(sql.glob("*.up.sql"))[-1]
    last.rename(tmp_path / last.name)
    con = await db.connect(empty_dsn)
    try:
        lines, problems = await migrate.dry_run(con, files)
        assert problems == []
        assert lines[0] == "create table schema_migrations"
        assert [line for line in lines if line.startswith("apply ")] == [f"apply {m.version:04d}_{m.name}:" for m in files]
        assert any(line.startswith("  CREATE TABLE public.appointments ( id uuid PRIMARY KEY") for line in lines)
        assert await con.fetchval("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace") == 0

        await migrate.migrate(con, migrate.load(sql))  # all but the last file
        lines, problems = await migrate.dry_run(con, files)
        assert problems == []
        assert lines[0] == f"apply {files[-1].version:04d}_{files[-1].name}:" and len(lines) > 1
        # A pending file that would fail is found, and nothing changes.
        broken = [*files[:-1], dataclasses.replace(files[-1], sql="SELECT 1; ALTER TABLE nowhere ADD COLUMN x int")]
        lines, problems = await migrate.dry_run(con, broken)
        assert lines == [f"apply {files[-1].version:04d}_{files[-1].name}:", "  SELECT 1",
                         "  ALTER TABLE nowhere ADD COLUMN x int"]
        assert len(problems) == 1 and 'relation "nowhere" does not exist' in problems[0], problems
        assert [m.version for m in await migrate.migrate(con, files)] == [files[-1].version]
    finally:
        await con.close()


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_init.up.sql").write_text("SELECT 1")
    with pytest.raises(migrate.MigrationError, match="NNNN_name.up.sql"):
        migrate.load(tmp_path)


async def test_serve_refuses_a_database_that_differs(empty_dsn: str, settings, aiohttp_client, tmp_path: Path) -> None:
    import dataclasses

    sql = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", sql)
    con = await db.connect(empty_dsn)
    try:
        await migrate.migrate(con, migrate.load(sql))
    finally:
        await con.close()
    first = sorted(sql.glob("0001_*.up.sql"))[0]
    first.write_text(first.read_text() + "SELECT 1;\n")
    app = create_app(dataclasses.replace(settings, database_url=empty_dsn, sql_dir=sql))
    with pytest.raises(migrate.MigrationError, match="does not match"):
        await aiohttp_client(app)


async def test_databases_stamped_with_the_whole_text_checksum_still_match(empty_dsn: str) -> None:
    """Before comment lines were left out of the checksum, the whole file was
    stamped: such databases keep working, also for files whose comments were
    reworded since (their former text's checksum)."""
    files = migrate.load(ROOT / "sql")
    con = await db.connect(empty_dsn)
    try:
        await migrate.migrate(con, files)
        former = {4: migrate._FORMER[4]}
        for m in files:
            await con.execute("UPDATE schema_migrations SET checksum = $2 WHERE version = $1", m.version,
                              former.get(m.version, hashlib.sha256(m.sql.encode()).hexdigest()))
        await migrate.check(con, files)
        await con.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = 4", "0" * 64)
        with pytest.raises(migrate.MigrationError, match="0004_write_calls.up.sql changed after it was applied"):
            await migrate.check(con, files)
    finally:
        await con.close()
