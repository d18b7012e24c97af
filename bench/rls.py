"""What running a booking or a hold under the caller's claims (RLS) costs the database.

    .venv/bin/python bench/rls.py [--bookings 400] [--rounds 6]

Creates a scratch database (on DATABASE_URL's server, or the embedded one) and
calls `hub_book` (the insert of every booking, with its triggers), then
`hub_hold` and `hub_extend_hold` (a hold and its renewal), from one
connection, alternating blocks with the caller's claims (role switched to
`authenticated`, policies checked) and without (the hub's own role, as for the
service role), so both see the same machine load. Each block is one
transaction, so the figures are the statements' cost, not the WAL flush's.
Prints the mean time per call of each, per round, and the median difference;
then the same for a read through the pool against `db.as_caller`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.booking import drop, setup  # noqa: E402
from hub import db  # noqa: E402

BOOK = "SELECT public.hub_book($1, $2)"
HOLD = "SELECT public.hub_hold($1, $2)"
EXTEND = "SELECT public.hub_extend_hold($1, $2)"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bookings", type=int, default=400, help="per block")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL")
    if not server:
        from hub import embedded

        server = embedded.start(ROOT / "var" / "bench-pgdata")
    dsn, dentists, patients = await setup(server, 1, 1)
    dentist, patient = dentists[0], patients[0]
    claims = db._encode({"sub": str(patient), "role": "authenticated", "aud": "authenticated",
                         "exp": int(time.time()) + 3600, "aal": "aal1", "session_id": str(uuid.uuid4()),
                         "app_metadata": {"provider": "email"}, "user_metadata": {}}).decode()
    con = await db.connect(dsn)
    when = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=2)
    slots = iter(range(10**9))

    def start() -> str:
        return (when + timedelta(minutes=30 * next(slots))).isoformat()

    async def book(mode: str) -> None:
        booking = {"id": str(uuid.uuid4()), "consume": [], "patient_id": str(patient), "start": start(),
                   "duration": 30, "buffer": 0, "type": "checkup", "created_by": str(patient)}
        await con.fetchval(BOOK, dentist, {**booking, **({"claims": claims} if mode == "claims" else {})})

    async def hold_and_extend(mode: str) -> None:
        """A hold, then its renewal: the two writes migration 0013 put under the claims."""
        extra = {"claims": claims} if mode == "claims" else {}
        held = await con.fetchval(HOLD, dentist, {"patient_id": str(patient), "start": start(), "minutes": 30,
                                                  "type": "checkup", "ttl": 300, "created_by": str(patient),
                                                  "max_holds": 10**9, **extra})
        await con.fetchval(EXTEND, dentist, {"hold_id": held["id"], "ttl": 600, "max_age": 1800, **extra})

    try:
        await blocks(con, "booking", book, args.bookings, args.rounds)
        await blocks(con, "hold+extend", hold_and_extend, args.bookings, args.rounds)
        await reads(dsn, patient, claims, args.bookings, args.rounds)
    finally:
        await con.close()
        await drop(server, dsn)


async def blocks(con, what: str, call, count: int, rounds: int) -> None:
    """`count` calls per block, alternating owner and claims blocks, `rounds` times."""
    means: dict[str, list[float]] = {"claims": [], "owner": []}
    for _ in range(rounds):
        for mode in ("owner", "claims"):
            began = time.perf_counter()
            tx = con.transaction()  # one commit per block: the WAL flush would drown the difference
            await tx.start()
            for _ in range(count):
                await call(mode)
            await tx.commit()
            means[mode].append((time.perf_counter() - began) / count * 1000)
        print(f"{what}: owner {means['owner'][-1]:.3f} ms, claims {means['claims'][-1]:.3f} ms "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    summary(what, means)


def summary(what: str, means: dict[str, list[float]]) -> None:
    diffs = [c - o for c, o in zip(means["claims"], means["owner"])]
    print(f"{what}: median owner {statistics.median(means['owner']):.3f} ms, claims "
          f"{statistics.median(means['claims']):.3f} ms, difference {statistics.median(diffs):+.3f} ms", flush=True)


async def reads(dsn: str, patient: uuid.UUID, claims: str, count: int, rounds: int) -> None:
    """One appointment read through the pool as the owner, against db.as_caller."""
    from hub.auth import Claims, Principal

    pool = await db.create_pool(dsn, min_size=1, max_size=1)
    who = Principal(Claims(role="authenticated", sub=patient, exp=0, raw=db._decode(claims)))
    query = "SELECT * FROM public.appointments WHERE patient_id = $1 ORDER BY appointment_date LIMIT 1"
    means: dict[str, list[float]] = {"claims": [], "owner": []}
    try:
        for _ in range(rounds):
            began = time.perf_counter()
            for _ in range(count):
                await pool.fetchrow(query, patient)
            means["owner"].append((time.perf_counter() - began) / count * 1000)
            began = time.perf_counter()
            for _ in range(count):
                async with db.as_caller(pool, who) as con:
                    await con.fetchrow(query, patient)
            means["claims"].append((time.perf_counter() - began) / count * 1000)
    finally:
        await pool.close()
    summary("read", means)


if __name__ == "__main__":
    asyncio.run(main())
