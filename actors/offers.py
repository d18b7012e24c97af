"""What the dentist actor needs to offer freed time to the waitlist (sql/0010):
which spans a write freed, and which bookable slots now lie in them."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

from actors.schedule import Schedule
from hub.catalog import Catalog
from hub.events import Event
from hub.errors import HubError

UTC = timezone.utc
FOREVER = datetime.max.replace(tzinfo=UTC)
MAX_CANDIDATES = 2000  # one pass offers at most this many slots (a new week of hours, say)

# Entries waiting for this dentist: their types and the dates they span.
WAITING = """
SELECT appointment_type, min(earliest_date) AS first, max(latest_date) AS last
FROM public.waitlist_entries
WHERE status = 'waiting' AND (dentist_id = $1 OR dentist_id IS NULL) AND latest_date >= $2
GROUP BY appointment_type
"""

OFFER = "SELECT public.waitlist_offer($1, $2, $3)"


def _ts(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def freed(produced: list[Event], now: datetime) -> list[tuple[datetime, datetime]]:
    """Spans a write may have freed: a hold gone (released, expired, declined;
    or booked, which the slot check then finds taken), an appointment
    cancelled or moved; new hours may free anything from now on."""
    spans = []
    for event in produced:
        old, new = event.old, event.new
        if event.table_name == "slot_reservations" and old is not None and new is None:
            start = _ts(old["slot_time"])
            spans.append((start, start + timedelta(minutes=old["duration_minutes"])))
        elif event.table_name == "appointments" and old is not None and old["status"] != "cancelled" and (
                new is None or new["status"] == "cancelled"
                or any(new[k] != old[k] for k in ("appointment_date", "duration_minutes", "buffer_minutes"))):
            start = _ts(old["appointment_date"])
            spans.append((start, start + timedelta(minutes=old["duration_minutes"] + old["buffer_minutes"])))
        elif event.table_name in ("dentists", "clinic_closures"):
            spans.append((now, FOREVER))
    return [(a, b) for a, b in spans if b > now]


def candidates(schedule: Schedule, catalog: Catalog, spans: list[tuple[datetime, datetime]],
               waiting: list[Any], taken: Callable[[datetime, datetime], bool], now: datetime) -> list[dict[str, Any]]:
    """Bookable slots of each waited-for type that overlap a freed span and
    that nothing (`taken`: booked or held) blocks now."""
    zone = ZoneInfo(schedule.timezone)
    first_span = min(a for a, _ in spans).astimezone(zone).date()
    last_span = min(max(b for _, b in spans), now + timedelta(days=schedule.horizon_days + 1)).astimezone(zone).date()
    out: list[dict[str, Any]] = []
    for row in waiting:
        try:
            kind = catalog.get(row["appointment_type"])
        except HubError:
            continue  # a type removed since the patient joined: nothing can match it
        first: date = max(row["first"], first_span)
        last: date = min(row["last"], last_span)
        if first > last:
            continue
        for slot in schedule.slots(first, last, now=now, duration_minutes=kind.duration_minutes):
            end = slot.start + timedelta(minutes=kind.blocked_minutes)
            if slot.available and any(slot.start < b and a < end for a, b in spans) and not taken(slot.start, end):
                out.append({"start": slot.start, "type": kind.name, "duration": kind.duration_minutes,
                            "minutes": kind.blocked_minutes})
    out.sort(key=lambda c: c["start"])
    return out[:MAX_CANDIDATES]
