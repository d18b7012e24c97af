"""What the triggers on `appointments` cost an INSERT, PostgreSQL side (no hub).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/triggers.py

Creates a scratch database on DATABASE_URL's server, migrates it, and inserts
appointments in blocks of 1,500 (one transaction each): with every trigger,
without the reminder planning, and without the webhook outbox too; twice.
"""

import asyncio
import datetime
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub import db, migrate  # noqa: E402

SERVER = os.environ["DATABASE_URL"]
async def main():
    name = "bench_triggers_" + uuid.uuid4().hex[:8]
    a=await asyncpg.connect(SERVER); await a.execute(f'CREATE DATABASE "{name}"'); await a.close()
    dsn=SERVER.rsplit("/",1)[0]+"/"+name
    con=await db.connect(dsn)
    await migrate.migrate(con, migrate.load(ROOT / "sql"))
    d=await con.fetchval("INSERT INTO dentists (name, available_times) VALUES ('x','{}') RETURNING id")
    pats=[await con.fetchval("INSERT INTO auth.users (email) VALUES ($1) RETURNING id", f"p{i}@x") for i in range(20)]
    base=await con.fetchval("SELECT date_trunc('day', now()) + interval '10 days'")
    async def run(label, n=1500):
        t=time.perf_counter()
        async with con.transaction():
            for i in range(n):
                await con.execute("INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) VALUES ($1,$2,$3,'checkup')",
                                  pats[i%20], d, base + datetime.timedelta(minutes=30*(i+run.k)))
        run.k+=n
        print(f"{label}: {(time.perf_counter()-t)/n*1e6:.0f} us/insert")
    run.k=0
    for rep in range(2):
        await run("all triggers")
        await con.execute("ALTER TABLE appointments DISABLE TRIGGER appointments_planned")
        await run("without reminder planning")
        await con.execute("ALTER TABLE realtime_events DISABLE TRIGGER realtime_events_webhooks")
        await run("without reminders and webhook outbox")
        await con.execute("ALTER TABLE appointments ENABLE TRIGGER appointments_planned")
        await con.execute("ALTER TABLE realtime_events ENABLE TRIGGER realtime_events_webhooks")
    trig=await con.fetch("SELECT tgname, tgrelid::regclass::text AS rel FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN ('appointments'::regclass,'realtime_events'::regclass,'dentists'::regclass)")
    print([ (r['rel'], r['tgname']) for r in trig])
    await con.close()
    a=await asyncpg.connect(SERVER); await a.execute(f'DROP DATABASE "{name}" WITH (FORCE)'); await a.close()
asyncio.run(main())
