"""Booking throughput and latency of one hub process, against raw INSERTs.

    .venv/bin/python bench/booking.py [--bookings 6000] [--clients 32] [--dentists 200]

Creates a scratch database (on DATABASE_URL's server, or the embedded one),
starts `hub serve` as a separate process, and from this process:
  1. books across --dentists dentists from --clients concurrent HTTP clients,
     as fast as they go: bookings/s and latency percentiles;
  2. an open-loop run at --rate bookings/s for --seconds: latency percentiles;
  3. the same number of raw asyncpg INSERTs as in 1 into `appointments` (same
     table, same exclusion constraint and triggers) from --clients connections;
  4. slot queries for a dentist with 1,000 future appointments: latency percentiles.
Prints one line per figure (with the CPU time of the hub process, and of the
bench database's PostgreSQL backends when the server runs on this machine);
docs/BENCHMARKS.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, NamedTuple

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub import db, migrate  # noqa: E402
from hub.auth import issue_token  # noqa: E402
from tests.conftest import free_port, with_database  # noqa: E402

SECRET = "bench-secret-" + "z" * 40
OVERLOADED: list[int] = []  # 503 answers seen
ALL_DAY = {d: "00:00-24:00" for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def report(name: str, latencies: list[float]) -> str:
    ms = [v * 1000 for v in latencies]
    return (f"{name}: n={len(ms)} p50={pct(ms, 50):.2f}ms p95={pct(ms, 95):.2f}ms p99={pct(ms, 99):.2f}ms "
            f"max={max(ms):.2f}ms mean={statistics.fmean(ms):.2f}ms")


class Slots:
    """Distinct grid slots per dentist, handed out in order, so no booking collides."""

    def __init__(self, dentists: list[uuid.UUID], start: datetime) -> None:
        self.dentists = dentists
        self.start = start
        self.n = 0

    def next(self) -> tuple[uuid.UUID, datetime]:
        i = self.n
        self.n += 1
        dentist = self.dentists[i % len(self.dentists)]
        return dentist, self.start + timedelta(minutes=30 * (i // len(self.dentists)))


async def setup(server_dsn: str, dentists: int, patients: int) -> tuple[str, list[uuid.UUID], list[uuid.UUID]]:
    name = f"hub_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = with_database(server_dsn, name)
    con = await db.connect(dsn)
    await migrate.migrate(con, migrate.load(ROOT / "sql"))
    dentist_ids = [r["id"] for r in await con.fetch(
        "INSERT INTO dentists (name, timezone, available_times, min_notice_minutes, horizon_days) "
        "SELECT 'Dr ' || g, 'UTC', $1, 0, 730 FROM generate_series(1, $2) g RETURNING id", ALL_DAY, dentists)]
    patient_ids = [r["id"] for r in await con.fetch(
        "INSERT INTO auth.users (email) SELECT 'p' || g || '@bench' FROM generate_series(1, $1) g RETURNING id",
        patients)]
    await con.close()
    return dsn, dentist_ids, patient_ids


async def drop(server_dsn: str, dsn: str) -> None:
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1].split("?")[0]}" WITH (FORCE)')
    await admin.close()


# Every client of a benchmark is one address and a few users: the abuse limits (docs/LIMITS.md) would measure themselves.
NO_LIMITS = {name: "0" for name in ("MAX_FUTURE_APPOINTMENTS_PER_DENTIST", "MAX_APPOINTMENTS_PER_DAY",
                                    "RATE_LIMIT_USER_PER_MINUTE", "RATE_LIMIT_IP_PER_MINUTE", "MAX_CONNECTIONS_PER_IP")}
NO_LIMITS["HEARTBEAT_TIMEOUT_SECONDS"] = "3600"  # bench/subscriber.c sends no heartbeats


async def start_hub(dsn: str, tmp: str, preexec_fn: Any = None) -> tuple[subprocess.Popen, str]:
    """One `hub serve` process on `dsn`, once /health says it is ready."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env={**os.environ, "DATABASE_URL": dsn, "JWT_SECRET": SECRET, "HUB_ENV": "test",
                                 "LOG_LEVEL": "WARNING", "HUB_VAR_DIR": tmp, "DB_POOL_MAX": "20", **NO_LIMITS},
                            cwd=ROOT, preexec_fn=preexec_fn)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url + "/health") as resp:
                    if resp.status == 200:
                        return proc, url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("hub did not start")


async def book(session: aiohttp.ClientSession, url: str, token: str, dentist: uuid.UUID, when: datetime) -> float:
    began = time.perf_counter()
    async with session.post(url + "/api/appointments", headers={"Authorization": f"Bearer {token}"}, json={
            "dentist_id": str(dentist), "appointment_date": when.isoformat(), "appointment_type": "checkup"}) as resp:
        await resp.read()
        if resp.status == 503:  # overload answered fast, as designed: counted, not fatal
            OVERLOADED.append(1)
        elif resp.status != 201:
            raise SystemExit(f"booking failed: {resp.status} {await resp.text()}")
    return time.perf_counter() - began


async def closed_loop(url: str, tokens: list[str], slots: Slots, total: int, clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = total
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def client(i: int) -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                dentist, when = slots.next()
                latencies.append(await book(session, url, tokens[i % len(tokens)], dentist, when))

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        return time.perf_counter() - began, latencies


async def paced(rate: float, count: int, start: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Start `count` calls at `rate` per second whatever their latency (open
    loop, as real clients arrive) and wait for them all."""
    tasks = []
    began = time.perf_counter()
    for i in range(count):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(start(i)))
    return list(await asyncio.gather(*tasks))


async def open_loop(url: str, tokens: list[str], slots: Slots, rate: int, seconds: float) -> tuple[float, list[float]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        def start(i: int) -> Awaitable[float]:
            dentist, when = slots.next()
            return book(session, url, tokens[i % len(tokens)], dentist, when)

        began = time.perf_counter()
        latencies = await paced(rate, int(rate * seconds), start)
        return time.perf_counter() - began, latencies


async def raw_inserts(dsn: str, patients: list[uuid.UUID], slots: Slots, total: int,
                      clients: int) -> tuple[float, float | None]:
    """INSERTs per second, and PostgreSQL's CPU seconds for them."""
    pool = await asyncpg.create_pool(dsn, min_size=clients, max_size=clients)
    database = await DatabaseCPU(dsn).start()
    remaining = total

    async def client(i: int) -> None:
        nonlocal remaining
        async with pool.acquire() as con:
            while remaining > 0:
                remaining -= 1
                dentist, when = slots.next()
                await con.execute(
                    "INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
                    "VALUES ($1, $2, $3, 'checkup')", patients[i % len(patients)], dentist, when)

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - began
    cpu = await database.stop()
    await pool.close()
    return total / elapsed, cpu


async def slot_queries(url: str, dsn: str, token: str, queries: int) -> list[float]:
    con = await db.connect(dsn)
    dentist = await con.fetchval("INSERT INTO dentists (name, timezone, available_times, min_notice_minutes, "
                                 "horizon_days) VALUES ('Dr Busy', 'UTC', $1, 0, 730) RETURNING id", ALL_DAY)
    patient = await con.fetchval("INSERT INTO auth.users (email) VALUES ('busy@bench') RETURNING id")
    first = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    await con.execute(
        "INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
        "SELECT $1, $2, $3::timestamptz + g * interval '1 hour', 'checkup' FROM generate_series(0, 999) g", patient, dentist, first)
    await con.close()
    latencies = []
    async with aiohttp.ClientSession() as session:
        for i in range(queries):
            day = (first + timedelta(days=i % 40)).date().isoformat()
            began = time.perf_counter()
            async with session.get(f"{url}/api/availability/{dentist}/slots?date={day}",
                                   headers={"Authorization": f"Bearer {token}"}) as resp:
                body = await resp.read()
                assert resp.status == 200, body
            latencies.append(time.perf_counter() - began)
    return latencies[50:]  # the first few warm the actor up


async def write_batches(url: str) -> tuple[float, float]:
    """(writes, batches) the hub's group commit has made so far, from /metrics."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("hub_db_write_batch_size_")}
    return values.get("hub_db_write_batch_size_sum", 0.0), values.get("hub_db_write_batch_size_count", 0.0)


def batching(before: tuple[float, float], after: tuple[float, float]) -> str:
    writes, batches = after[0] - before[0], after[1] - before[1]
    return f"{writes / batches:.1f} writes per commit" if batches else "no writes"


class Used(NamedTuple):
    seconds: float  # wall clock
    cpu: float      # the hub process's user+system CPU seconds
    stolen: float   # CPU seconds the hypervisor gave other guests

    def shares(self) -> str:
        return (f"hub CPU {self.cpu / self.seconds * 100:.0f}% of a core, "
                f"CPU stolen by the host {self.stolen / self.seconds * 100:.0f}% of a core")


class DatabaseCPU:
    """CPU time of the PostgreSQL backends connected to `dsn`'s database, from
    now until `stop()` (Linux, server on this machine; None otherwise). The
    bench is bound by PostgreSQL on a shared machine: its CPU per booking is
    steadier than bookings per second. Backends that exit meanwhile are missed."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._start: dict[int, int] | None = None

    async def _read(self) -> dict[int, int] | None:
        con = await asyncpg.connect(self._dsn)
        try:
            pids = [r[0] for r in await con.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        finally:
            await con.close()
        try:
            return {pid: int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) for pid in pids}
        except (OSError, ValueError):
            return None

    async def start(self) -> DatabaseCPU:
        self._start = await self._read()
        return self

    async def stop(self) -> float | None:
        """Seconds of CPU used since start()."""
        end = await self._read()
        if self._start is None or end is None:
            return None
        return sum(ns - self._start.get(pid, 0) for pid, ns in end.items()) / 1e9


def per(seconds: float | None, count: int, what: str) -> str:
    return f"{seconds / count * 1000:.2f} ms per {what}" if seconds is not None else "not measured (remote server)"


class Usage:
    """The hub's CPU and the host's CPU steal from now until `stop()`, from
    /proc (Linux). Steal stalls every process here: on a shared host, runs
    with much of it measure the neighbours, not the hub."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._start = self._read()

    def _read(self) -> Used:
        tick = os.sysconf("SC_CLK_TCK")
        fields = Path(f"/proc/{self._pid}/stat").read_text().rsplit(")", 1)[1].split()
        return Used(time.perf_counter(), (int(fields[11]) + int(fields[12])) / tick,
                    int(Path("/proc/stat").read_text().split()[8]) / tick)

    def stop(self) -> Used:
        return Used(*(end - start for start, end in zip(self._start, self._read())))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bookings", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--dentists", type=int, default=200)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()

    server = os.environ.get("DATABASE_URL")
    if not server:
        from hub import embedded

        server = embedded.start(ROOT / "var" / "bench-pgdata")
    dsn, dentists, patients = await setup(server, args.dentists, 400)
    tokens = [issue_token(SECRET, p, ttl=3600) for p in patients]
    tmp = tempfile.mkdtemp()
    proc, url = await start_hub(dsn, tmp)
    try:
        start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=2)
        print(f"machine: {os.cpu_count()} cores; hub: 1 process; load: this process; server: "
              f"{'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'embedded'}", flush=True)
        # Warm-up: activate every dentist's actor and the connection pool.
        await closed_loop(url, tokens, Slots(dentists, start), args.dentists, args.clients)
        usage, batches, database = Usage(proc.pid), await write_batches(url), await DatabaseCPU(dsn).start()
        elapsed, lat = await closed_loop(url, tokens, Slots(dentists, start + timedelta(days=1)), args.bookings,
                                         args.clients)
        used, database_cpu = usage.stop(), await database.stop()
        hub_rate = args.bookings / elapsed
        print(f"hub process CPU: {used.cpu / args.bookings * 1000:.2f} ms per booking; {used.shares()}")
        print(f"PostgreSQL CPU: {per(database_cpu, args.bookings, 'booking')} (the bench database's backends)")
        print(f"hub bookings: {hub_rate:.0f}/s over {args.bookings} bookings, {args.clients} clients, "
              f"{args.dentists} dentists; {batching(batches, await write_batches(url))}", flush=True)
        print(report("hub booking latency (closed loop)", lat), flush=True)
        batches, usage = await write_batches(url), Usage(proc.pid)
        elapsed, lat = await open_loop(url, tokens, Slots(dentists, start + timedelta(days=40)), args.rate,
                                       args.seconds)
        print(f"open loop at {args.rate}/s for {args.seconds:.0f}s (achieved {len(lat) / elapsed:.0f}/s; "
              f"{batching(batches, await write_batches(url))}; {usage.stop().shares()})")
        print(report(f"hub booking latency at {args.rate}/s", lat) + " (target p99 < 25ms)", flush=True)
        if OVERLOADED:
            print(f"  {len(OVERLOADED)} bookings answered 503 SERVICE_UNAVAILABLE (actor overloaded), counted above")
        # After the open loop: the raw INSERTs bump every dentist's version, so the
        # hub's next write for each would first catch up on them.
        raw_rate, raw_cpu = await raw_inserts(dsn, patients, Slots(dentists, start + timedelta(days=20)),
                                              args.bookings, args.clients)
        print(f"raw asyncpg INSERTs: {raw_rate:.0f}/s ({args.clients} connections, same table and constraint); "
              f"PostgreSQL CPU {per(raw_cpu, args.bookings, 'INSERT')}")
        print(f"ratio hub/raw: {hub_rate / raw_rate:.2f} (target >= 0.30)", flush=True)
        lat = await slot_queries(url, dsn, tokens[0], args.queries)
        print(report("slot query latency, dentist with 1,000 future appointments", lat) + " (target p99 < 2ms)")
    finally:
        proc.terminate()
        proc.wait(15)
        await drop(server, dsn)


if __name__ == "__main__":
    import uvloop  # the load shares the hub's two cores: the cheaper it is, the less it stands in the way
    uvloop.run(main())
