"""Appointment reminders.

An appointment's reminders follow from its row, its dentist's time zone and
the offsets in force, whichever path made or changed it (REST, socket, MCP,
SQL by hand): the `appointment_reminders` view (sql/0016) computes the
pending ones, so a booking writes nothing for them. A reschedule or a status
change plans them anew from that moment; a cancelled appointment has none.
This module writes the configured offsets into the database at start (when
they changed, they count for reminders due from then on) and sends what is due:
the notification (which reaches the patient's realtime channel), the
`reminder.due` webhook event and the reminder's row in `reminder_log` commit
together, and inserting that row is the claim, so each reminder goes out from
one process only. After downtime, reminders that fell due meanwhile go out
late if at most REMINDER_MAX_LATE_MINUTES late and before the appointment
starts; the others are logged `missed`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg

from hub import db, metrics
from hub.config import Settings

log = logging.getLogger("hub.reminders")
DB_ERRORS = db.ERRORS
_UNIT = {"d": (1, 0), "h": (0, 60), "m": (0, 1)}


def offsets(labels: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """(label, days, minutes) rows for the configured labels ("1d", "2h", "30m")."""
    rows = []
    for label in labels:
        count, unit = int(label[:-1]), label[-1]
        days, minutes = _UNIT[unit]
        rows.append((label, count * days, count * minutes))
    return rows


async def configure(pool: asyncpg.Pool, labels: tuple[str, ...]) -> bool:
    """Make the database's offsets these, in force from now if they changed."""
    wanted = sorted(offsets(labels))
    async with pool.acquire() as con, con.transaction():
        await con.execute("LOCK TABLE public.reminder_offsets IN EXCLUSIVE MODE")
        current = sorted(tuple(r) for r in await con.fetch("SELECT label, days, minutes FROM public.reminder_offsets"))
        if current == wanted:
            return False
        await con.execute("DELETE FROM public.reminder_offsets")
        await con.executemany("INSERT INTO public.reminder_offsets (label, days, minutes) VALUES ($1, $2, $3)", wanted)
    log.info("reminder offsets are now %s", ", ".join(labels) or "none")
    return True


async def send_due(pool: asyncpg.Pool, max_late: timedelta, limit: int = 200) -> dict[str, int]:
    """Send (or mark missed) one batch of due reminders; counts by outcome."""
    counts = {"sent": 0, "missed": 0}
    for row in await pool.fetch("SELECT id, status, late_seconds FROM public.send_due_reminders($1, $2)",
                                limit, max_late):
        counts[row["status"]] += 1
        metrics.REMINDERS.labels(row["status"]).inc()
        if row["status"] == "sent":
            metrics.REMINDER_LATENESS.observe(max(row["late_seconds"], 0.0))
    return counts


async def run(pool: asyncpg.Pool, settings: Settings) -> None:
    """The sender: at start (catching up after downtime), then every REMINDER poll."""
    max_late = timedelta(minutes=settings.reminder_max_late_minutes)
    configured, pause = False, 1.0
    while True:
        try:
            if not configured:
                await configure(pool, settings.reminder_offsets)
                configured = True
            while (counts := await send_due(pool, max_late))["sent"] + counts["missed"] > 0:
                if counts["missed"]:
                    log.warning("%d reminders were too late to be useful and were marked missed", counts["missed"])
            wait, pause = settings.reminder_poll_seconds, 1.0
        except DB_ERRORS as exc:
            log.warning("reminder sender cannot reach the database (%s); retrying in %.1fs", exc, pause)
            wait, pause = pause, min(pause * 2, 30.0)
        await asyncio.sleep(wait)
