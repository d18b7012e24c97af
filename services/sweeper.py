"""Housekeeping no single actor owns: holds left behind by a process that
died, old idempotency keys, and events past the replay retention."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from hub import db

log = logging.getLogger("hub.sweeper")

# Holds past expiry by more than the grace: their own actor would have freed them.
_ORPHANS = ("SELECT DISTINCT dentist_id FROM public.slot_reservations "
            "WHERE expires_at <= now() - make_interval(secs => $1)")


async def sweep_once(pool: asyncpg.Pool, grace_seconds: float = 5.0, retention_hours: int = 24) -> int:
    """Release orphaned holds dentist by dentist, taking each dentist's row
    lock first, as every writer does (the same lock order, so no deadlock)."""
    released = 0
    for row in await pool.fetch(_ORPHANS, grace_seconds):
        async with pool.acquire() as con, con.transaction():
            await con.execute("SELECT 1 FROM public.dentists WHERE id = $1 FOR UPDATE", row["dentist_id"])
            released += len(await con.fetch("SELECT id FROM public.expire_holds($1, make_interval(secs => $2))",
                                            row["dentist_id"], grace_seconds))
    await pool.execute("DELETE FROM public.idempotency_keys WHERE created_at < now() - interval '24 hours'")
    await pool.execute("DELETE FROM public.realtime_events WHERE created_at < now() - make_interval(hours => $1)",
                       retention_hours)
    await pool.execute("DELETE FROM public.realtime_cursors WHERE updated_at < now() - make_interval(hours => $1)",
                       retention_hours)
    return released


async def sweep_forever(pool: asyncpg.Pool, every: float = 5.0, retention_hours: int = 24) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            if count := await sweep_once(pool, retention_hours=retention_hours):
                log.info("released %d orphaned holds", count)
        except db.ERRORS as exc:
            log.warning("sweep failed: %s", exc)
