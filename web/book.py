"""The console's appointment book: one day of every dentist side by side, or
one dentist's week, on a time axis in the clinic's time zone. Staff only.

One read gathers what the grid draws: each column's working intervals (the
dentist's hours in their own zone, after clinic closures and date overrides),
appointments with patient names, live holds, and the free grid slots a desk
may click. Times are UTC instants; the page places them by their distance
from the start of the clinic's local day, so a 23- or 25-hour day (a
daylight-saving change) has 23 or 25 hours on its axis.
"""

from __future__ import annotations

import collections
import uuid
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from aiohttp import web

from actors.schedule import Schedule, ScheduleError, wall_to_utc
from hub import errors, policy
from hub.auth import Principal
from services.booking import SlotsQuery
from web._http import BOOKING, POOL, SETTINGS, json, principal, query

routes = web.RouteTableDef()
UTC = timezone.utc
# Days around today a desk may page through (the slot list itself stops at each dentist's horizon).
MAX_DAYS_AWAY = 366 * 2


class BookQuery(msgspec.Struct, forbid_unknown_fields=True):
    date: date | None = None
    view: Literal["day", "week"] = "day"
    dentist_id: uuid.UUID | None = None


_DENTISTS = """
SELECT id, user_id, name, timezone, available_times, date_overrides, slot_minutes, min_notice_minutes, horizon_days
FROM public.dentists ORDER BY name, id
"""
_APPOINTMENTS = """
SELECT a.id, a.dentist_id, a.patient_id, p.full_name AS patient_name, p.phone AS patient_phone,
       a.appointment_date AS start, a.ends_at AS "end", a.buffer_minutes, a.appointment_type, a.status,
       a.notes, a.patient_notes
FROM public.appointments a LEFT JOIN public.profiles p ON p.id = a.patient_id
WHERE a.dentist_id = ANY($1) AND a.status <> 'cancelled'
  AND a.appointment_date < $3 AND a.ends_at + make_interval(mins => a.buffer_minutes) > $2
ORDER BY a.appointment_date
"""
_HOLDS = """
SELECT r.id, r.dentist_id, r.patient_id, p.full_name AS patient_name, r.slot_time AS start,
       r.slot_time + make_interval(mins => r.duration_minutes) AS "end", r.appointment_type, r.expires_at,
       o.id IS NOT NULL AS waitlist_offer
FROM public.slot_reservations r LEFT JOIN public.profiles p ON p.id = r.patient_id
LEFT JOIN public.waitlist_offers o ON o.id = r.id AND o.outcome IS NULL
WHERE r.dentist_id = ANY($1) AND r.expires_at > now()
  AND r.slot_time < $3 AND r.slot_time + make_interval(mins => r.duration_minutes) > $2
ORDER BY r.slot_time
"""


async def visible_dentists(request: web.Request, who: Principal) -> list[dict[str, Any]]:
    """The dentists whose columns the caller may see: all for admins, their own
    for a dentist; FORBIDDEN for anyone else."""
    if not policy.allowed(who, "use", policy.Clinic()):
        raise errors.forbidden("The appointment book is for the clinic's admins and dentists")
    return await managed_dentists(request.app[POOL], who)


async def managed_dentists(pool: asyncpg.Pool, who: Principal) -> list[dict[str, Any]]:
    """The dentists the caller manages (hub/policy.py), by name."""
    return [dict(r) for r in await pool.fetch(_DENTISTS) if policy.allowed(who, "manage", policy.Dentist(r["user_id"]))]


def clinic_zone(configured: str | None, dentists: list[dict[str, Any]]) -> str:
    """CLINIC_TIMEZONE, or else the zone most of the clinic's dentists work in."""
    if configured:
        return configured
    counts = collections.Counter(d["timezone"] for d in dentists)
    return counts.most_common(1)[0][0] if counts else "UTC"


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant a local day starts (midnight, or the end of a gap that swallows it)."""
    return wall_to_utc(zone, datetime.combine(day, time(0)))


def _schedule(row: dict[str, Any], closures: list[date]) -> Schedule:
    return Schedule.from_json(row["available_times"], timezone=row["timezone"], slot_minutes=row["slot_minutes"],
                              overrides=row["date_overrides"], closures=closures,
                              min_notice_minutes=row["min_notice_minutes"], horizon_days=row["horizon_days"])


def _working(schedule: Schedule, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The dentist's working intervals clipped to [start, end)."""
    zone = schedule.zone
    day, last = start.astimezone(zone).date() - timedelta(days=1), end.astimezone(zone).date()
    out = []
    while day <= last:
        for begin, finish in schedule.working_intervals(day):
            if begin < end and finish > start:
                out.append((max(begin, start), min(finish, end)))
        day += timedelta(days=1)
    return out


def _notes(row: dict[str, Any], closures: dict[date, str], days: list[date]) -> list[dict[str, Any]]:
    """What a column header says about a day: a clinic closure or the dentist's own hours that day."""
    out = []
    for day in days:
        if day in closures:
            out.append({"date": day, "kind": "closure", "text": f"Clinic closed{': ' + closures[day] if closures[day] else ''}"})
        elif day.isoformat() in row["date_overrides"]:
            hours = row["date_overrides"][day.isoformat()]
            out.append({"date": day, "kind": "override", "text": f"Special hours {hours}" if hours else "Day off"})
    return out


@routes.get("/api/admin/book")
async def book(request: web.Request) -> web.Response:
    who = await principal(request)
    q = query(request, BookQuery)
    dentists = await visible_dentists(request, who)
    zone_name = clinic_zone(request.app[SETTINGS].clinic_timezone, dentists)
    zone = ZoneInfo(zone_name)
    today = datetime.now(zone).date()
    first = q.date or today
    if abs((first - today).days) > MAX_DAYS_AWAY:
        raise errors.invalid(f"date must be within {MAX_DAYS_AWAY} days of today", field="date", location="query")
    if q.view == "week":
        first -= timedelta(days=first.weekday())  # weeks start on Monday
    days = [first + timedelta(days=i) for i in range(7 if q.view == "week" else 1)]
    if q.dentist_id is not None or q.view == "week":
        wanted = q.dentist_id or (dentists[0]["id"] if dentists else None)
        chosen = [d for d in dentists if d["id"] == wanted]
        if wanted is not None and not chosen:
            raise errors.not_found("dentist", wanted)  # unknown, or not the caller's to see
        dentists = chosen
    start, end = local_midnight(days[0], zone), local_midnight(days[-1] + timedelta(days=1), zone)
    pool = request.app[POOL]
    ids = [d["id"] for d in dentists]
    closure_rows = await pool.fetch("SELECT day, reason FROM public.clinic_closures WHERE day BETWEEN $1 AND $2",
                                    days[0] - timedelta(days=1), days[-1] + timedelta(days=1))
    closures = {r["day"]: r["reason"] for r in closure_rows}
    appointments = collections.defaultdict(list)
    for r in await pool.fetch(_APPOINTMENTS, ids, start, end):
        appointments[r["dentist_id"]].append(dict(r))
    holds = collections.defaultdict(list)
    for r in await pool.fetch(_HOLDS, ids, start, end):
        holds[r["dentist_id"]].append(dict(r))
    columns = []
    for row in dentists:
        try:
            schedule = _schedule(row, list(closures))
        except ScheduleError:
            schedule = None  # hours set by hand in SQL that the hub cannot read: draw the bookings only
        zone_of = schedule.zone if schedule else zone
        slots = await request.app[BOOKING].slots(who, row["id"], SlotsQuery(
            from_=start.astimezone(zone_of).date(), to=(end - timedelta(seconds=1)).astimezone(zone_of).date()))
        columns.append({
            "dentist_id": row["id"], "name": row["name"], "timezone": row["timezone"], "slot_minutes": row["slot_minutes"],
            "working": [{"start": s, "end": e} for s, e in (_working(schedule, start, end) if schedule else [])],
            "notes": _notes(row, closures, days),
            "appointments": appointments[row["id"]], "holds": holds[row["id"]],
            "free": [s["start"] for s in slots if s["status"] == "free" and start <= s["start"] < end],
        })
    return json({"timezone": zone_name, "view": q.view, "now": datetime.now(UTC),
                 "days": [{"date": d, "start": local_midnight(d, zone), "end": local_midnight(d + timedelta(days=1), zone)}
                          for d in days],
                 "dentists": columns})
