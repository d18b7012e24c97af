"""What an INSERT into `appointments` costs PostgreSQL (no hub), schema against schema.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/triggers.py \\
        [--sql ../other-worktree/sql ...] [--without realtime_events.realtime_events_webhooks ...] \\
        [--rounds 8] [--inserts 1000]

Migrates one scratch database on DATABASE_URL's server per migrations folder
(this checkout's sql/, then each --sql, e.g. an older commit's; then this
checkout's again with each --without trigger disabled), gives each
200 dentists and 20 patients, and then, in rounds that alternate the order,
has each take --inserts appointments: one INSERT statement each, from a
PL/pgSQL loop (so no client round trips), spread over the dentists,
committing every 100. Prints per schema the median over the rounds of the
server backend's CPU time per insert (/proc/<pid>/schedstat, when the server
runs on this machine; the steadier figure on a shared machine), the median of
its round-by-round difference from the first schema (rounds next to each
other share the machine's load), the median wall time per insert, and the
user triggers on `appointments`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub import db, migrate  # noqa: E402
from tests.conftest import with_database  # noqa: E402

# Inserts %(done)d to %(done)d + %(n)d - 1 of the database: the k-th books dentist k mod 200 at its
# (k div 200)-th half hour after %(base)s.
LOOP = """
DO $$
DECLARE
  _p uuid[] := (SELECT array_agg(id ORDER BY id) FROM auth.users);
  _d uuid[] := (SELECT array_agg(id ORDER BY id) FROM public.dentists);
BEGIN
  FOR k IN %(done)d..%(done)d + %(n)d - 1 LOOP
    INSERT INTO public.appointments (patient_id, dentist_id, appointment_date, appointment_type)
    VALUES (_p[1 + k %% 20], _d[1 + k %% 200], '%(base)s'::timestamptz + make_interval(mins => 30 * (k / 200)), 'checkup');
    IF k %% 100 = 99 THEN
      COMMIT;
    END IF;
  END LOOP;
END $$"""


def backend_cpu_ns(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except OSError:
        return None


class Schema:
    def __init__(self, sql_dir: Path, without: str | None = None) -> None:
        self.sql_dir = sql_dir
        self.without = without
        self.name = f"bench_triggers_{uuid.uuid4().hex[:8]}"
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self.done = 0
        self.created = False
        self.con: asyncpg.Connection | None = None

    async def create(self, server: str) -> None:
        admin = await asyncpg.connect(server)
        await admin.execute(f'CREATE DATABASE "{self.name}"')
        await admin.close()
        self.created = True
        self.con = await db.connect(with_database(server, self.name))
        await migrate.migrate(self.con, migrate.load(self.sql_dir))
        await self.con.execute("INSERT INTO public.dentists (name, available_times) "
                               "SELECT 'Dr ' || g, '{}' FROM generate_series(1, 200) g")
        await self.con.execute("INSERT INTO auth.users (email) SELECT 'p' || g || '@bench' FROM generate_series(1, 20) g")
        self.base = await self.con.fetchval("SELECT date_trunc('day', now()) + interval '10 days'")
        if self.without:
            table, trigger = self.without.rsplit(".", 1)
            await self.con.execute(f"ALTER TABLE public.{table} DISABLE TRIGGER {trigger}")
        self.pid = await self.con.fetchval("SELECT pg_backend_pid()")
        self.triggers = [r[0] for r in await self.con.fetch(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.appointments'::regclass AND NOT tgisinternal "
            "ORDER BY tgname")]

    async def round(self, n: int) -> None:
        cpu, wall = backend_cpu_ns(self.pid), time.perf_counter()
        await self.con.execute(LOOP % {"n": n, "base": self.base.isoformat(), "done": self.done})
        self.wall.append((time.perf_counter() - wall) / n * 1e6)
        if cpu is not None:
            self.cpu.append((backend_cpu_ns(self.pid) - cpu) / n / 1e3)
        self.done += n

    async def drop(self, server: str) -> None:
        if self.con is not None:
            await self.con.close()
        admin = await asyncpg.connect(server)
        await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sql", type=Path, action="append", default=[], help="another migrations folder")
    parser.add_argument("--without", action="append", default=[], metavar="TABLE.TRIGGER",
                        help="also this checkout's schema with that trigger disabled")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--inserts", type=int, default=1000)
    args = parser.parse_args()
    server = os.environ["DATABASE_URL"]
    schemas = [Schema(d.resolve()) for d in [ROOT / "sql", *args.sql]]
    schemas += [Schema(ROOT / "sql", without) for without in args.without]
    try:
        for schema in schemas:
            await schema.create(server)
        for r in range(args.rounds):
            for schema in schemas if r % 2 == 0 else reversed(schemas):
                await schema.round(args.inserts)
        for schema in schemas:
            cpu = diff = "n/a"
            if schema.cpu:
                cpu = f"{statistics.median(schema.cpu):.0f}"
                diff = f"{statistics.median(c - f for c, f in zip(schema.cpu, schemas[0].cpu)):+.0f}"
            label = f"{schema.sql_dir} without {schema.without}" if schema.without else schema.sql_dir
            print(f"{label}: backend CPU {cpu} us/insert ({diff} against the first), "
                  f"wall {statistics.median(schema.wall):.0f} us/insert; "
                  f"triggers on appointments: {', '.join(schema.triggers)}")
    finally:
        for schema in schemas:
            if schema.created:
                await schema.drop(server)


if __name__ == "__main__":
    asyncio.run(main())
