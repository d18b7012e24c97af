"""The hub behind a transaction pooler, as on Supabase (Supavisor, port 6543):
a real pgbouncer in transaction mode between real `hub serve` processes and
PostgreSQL, with LISTEN, migrations and the CLI on the direct URL."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest

from hub import db, migrate
from hub.auth import issue_token
from hub.client import RealtimeClient
from hub.config import ROOT
from services import users
from tests.conftest import ALL_DAY, SECRET, Databases, HubProcesses, free_port, slot_at

PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)


def _server_address(dsn: str) -> tuple[str, int, str]:
    """(host or socket directory, port, user) of a DSN, as pgbouncer wants them."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or ["127.0.0.1"])[0]
    port = parts.port or int((query.get("port") or ["0"])[0])
    if not port and host.startswith("/"):
        sockets = sorted(Path(host).glob(".s.PGSQL.*"))
        port = int(sockets[0].name.rsplit(".", 1)[1]) if sockets else 5432
    return host, port or 5432, parts.username or "postgres"


def _owner(host: str, port: int) -> str:
    import pwd

    if host.startswith("/"):
        return pwd.getpwuid((Path(host) / f".s.PGSQL.{port}").stat().st_uid).pw_name
    return "nobody"


class PgBouncer:
    """A pgbouncer process of this test's own, in transaction mode."""

    def __init__(self, server_dsn: str, database: str) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hub-pgbouncer-"))
        self.dir.chmod(0o755)  # readable by `nobody` when we run as root
        host, port, self.user = _server_address(server_dsn)
        target = f"host={host} port={port} user={self.user} dbname={database}"
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(f"""
[databases]
{database} = {target} pool_size=4
probe = {target} pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/users.txt
pool_mode = transaction
max_client_conn = 500
default_pool_size = 4
ignore_startup_parameters = extra_float_digits
logfile = {self.dir}/pgbouncer.log
""")
        for path in self.dir.iterdir():
            path.chmod(0o644)
        (self.dir / "pgbouncer.log").touch(mode=0o666)
        (self.dir / "pgbouncer.log").chmod(0o666)
        # pgbouncer refuses to run as root; it can drop to another user itself:
        # the socket's owner (who may connect to it) or nobody.
        user = ["-u", _owner(host, port)] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen([PGBOUNCER, *user, str(self.dir / "pgbouncer.ini")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def log(self) -> str:
        return (self.dir / "pgbouncer.log").read_text()

    async def ready(self, database: str) -> None:
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            assert self.proc.poll() is None, f"pgbouncer exited:\n{self.log}"
            try:
                con = await asyncpg.connect(self.dsn(database), statement_cache_size=0, timeout=2)
                await con.close()
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"pgbouncer did not accept connections:\n{self.log}") from None
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fresh_dsn(databases: Databases) -> Iterator[str]:
    dsn = databases.create(migrated=False)
    yield dsn
    databases.drop(dsn)


@pytest.fixture
async def bouncer(fresh_dsn: str, server_dsn: str):
    if PGBOUNCER is None:
        message = "pgbouncer is not installed (make pgbouncer, or apt-get install pgbouncer)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    name = urlsplit(fresh_dsn).path.lstrip("/")
    bouncer = PgBouncer(server_dsn, name)
    try:
        await bouncer.ready(name)
        yield bouncer, bouncer.dsn(name), fresh_dsn
    finally:
        bouncer.stop()


async def _hub_cli(*args: str, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", *args, env={**os.environ, "HUB_ENV": "test", "JWT_SECRET": SECRET, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_pgbouncer_really_pools_per_transaction(bouncer) -> None:
    """The setup is what it claims: two clients share one server connection
    (pool_size=1), which session pooling would not allow."""
    pgb, _, _ = bouncer
    one = await asyncpg.connect(pgb.dsn("probe"), statement_cache_size=0)
    two = await asyncpg.connect(pgb.dsn("probe"), statement_cache_size=0)
    try:
        assert await one.fetchval("SELECT pg_backend_pid()") == await two.fetchval("SELECT pg_backend_pid()")
    finally:
        await one.close()
        await two.close()


async def test_migrations_through_the_pooler_leave_no_lock_behind(bouncer) -> None:
    """Two processes migrating at once through the pooler: each file applied
    once, and no advisory lock left on a server connection."""
    _, pooled, direct = bouncer
    files = migrate.load(ROOT / "sql")
    cons = [await asyncpg.connect(pooled, statement_cache_size=0) for _ in range(2)]
    try:
        done = await asyncio.gather(*(migrate.migrate(c, files) for c in cons))
        assert sorted(m.version for d in done for m in d) == [m.version for m in files]
    finally:
        for c in cons:
            await c.close()
    con = await db.connect(direct)
    try:
        await migrate.check(con, files)
        assert await con.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                 "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())") == 0
    finally:
        await con.close()


async def test_hubs_book_and_deliver_through_a_transaction_pooler(bouncer, tmp_path: Path) -> None:
    pgb, pooled, direct = bouncer
    env = {"DATABASE_URL": pooled, "DATABASE_DIRECT_URL": direct}
    await _hub_cli("migrate", env=env)  # session advisory lock: must go direct, and does
    con = await db.connect(direct)
    try:
        admin = await users.create_user(con, email="admin@pool.test", full_name="Admin", roles=("admin",))
        patients = [await users.create_user(con, email=f"p{i}@pool.test", full_name=f"P{i}") for i in range(4)]
        dentist = await con.fetchval("INSERT INTO dentists (name, timezone, available_times) "
                                     "VALUES ('Dr Pool', 'UTC', $1) RETURNING id", ALL_DAY)
    finally:
        await con.close()

    hubs = HubProcesses(pooled, tmp_path)
    client = None
    try:
        first, second = await hubs.start(2, DATABASE_DIRECT_URL=direct)
        client = RealtimeClient(second, issue_token(SECRET, admin))
        await client.connect()
        channel = client.channel(f"appointments:dentist_id={dentist}")
        await channel.join()

        async with aiohttp.ClientSession() as http:
            async def book(url: str, patient: uuid.UUID, hour: int) -> str:
                body = {"dentist_id": str(dentist), "appointment_date": slot_at(days=4, hour=hour),
                        "appointment_type": "checkup"}
                headers = {"Authorization": f"Bearer {issue_token(SECRET, patient)}"}
                async with http.post(url + "/api/appointments", json=body, headers=headers) as resp:
                    created = await resp.json()
                    assert resp.status == 201, created
                async with http.get(url + f"/api/appointments/{created['id']}", headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                async with http.get(url + f"/api/availability/{dentist}/slots?date={slot_at(days=4)[:10]}",
                                    headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                return created["id"]

            # Both processes at once, several clients each: the pooler's 4
            # server connections are shared by ~20 client connections.
            made = await asyncio.gather(*(book(first if i % 2 else second, patients[i % 4], 8 + i)
                                          for i in range(8)))
            async with http.get(first + "/health") as resp:
                assert resp.status == 200, await resp.text()

        seen: set[str] = set()
        while not set(made) <= seen:  # including those booked on the other process
            msg = await channel.next(timeout=10)
            if msg.event == "broadcast" and msg.payload["event"] == "INSERT":
                seen.add(msg.payload["payload"]["new"]["id"])
    finally:
        if client is not None:
            await client.close()
        hubs.stop()
    logs = "".join(p.read_text() for p in tmp_path.glob("hub-*.log")) + pgb.log
    assert "prepared statement" not in logs, logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
