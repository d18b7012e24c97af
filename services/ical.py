"""iCalendar (RFC 5545) feeds of appointments.

Times are written in UTC (`...Z`), so every calendar application places them
exactly, across daylight-saving changes, without a VTIMEZONE. Lines end in
CRLF and are folded at 75 octets, never inside a UTF-8 character.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

PRODID = "-//Dental Hub//Calendar Feed//EN"
UID_DOMAIN = "dental-hub"


def escape(text: str) -> str:
    """TEXT value escaping (RFC 5545 3.3.11)."""
    return (text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


def fold(line: str) -> bytes:
    """One content line, folded into chunks of at most 75 octets plus CRLF."""
    raw = line.encode()
    out, start, limit = [], 0, 75
    while len(raw) - start > limit:
        end = start + limit
        while end > start and (raw[end] & 0xC0) == 0x80:  # a UTF-8 continuation byte: cut before its character
            end -= 1
        out.append(raw[start:end])
        start, limit = end, 74  # continuation lines begin with one space
    out.append(raw[start:])
    return b"\r\n ".join(out) + b"\r\n"


def stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def summary(appointment_type: str, who: str, dentist_feed: bool) -> str:
    kind = appointment_type.replace("_", " ").capitalize()
    return f"{kind}: {who}" if dentist_feed else f"{kind} with {who}"


def event(row: dict[str, Any], *, dentist_feed: bool, now: datetime) -> list[str]:
    """The VEVENT lines of one appointment row (id, dates, type, status, names, sequence)."""
    start: datetime = row["appointment_date"]
    cancelled = row["status"] == "cancelled"
    who = (row.get("patient_name") or "Patient") if dentist_feed else row["dentist_name"]
    lines = [
        "BEGIN:VEVENT",
        f"UID:{row['id']}@{UID_DOMAIN}",
        f"DTSTAMP:{stamp(now)}",
        f"DTSTART:{stamp(start)}",
        f"DTEND:{stamp(start + timedelta(minutes=row['duration_minutes']))}",
        f"SEQUENCE:{row['sequence']}",
        f"LAST-MODIFIED:{stamp(row['updated_at'])}",
        f"SUMMARY:{escape(summary(row['appointment_type'], who, dentist_feed))}",
        f"STATUS:{'CANCELLED' if cancelled else 'CONFIRMED' if row['status'] != 'pending' else 'TENTATIVE'}",
        f"TRANSP:{'TRANSPARENT' if cancelled else 'OPAQUE'}",
        "END:VEVENT",
    ]
    return lines


def calendar(name: str, rows: Iterable[dict[str, Any]], *, dentist_feed: bool,
             now: datetime | None = None) -> bytes:
    now = now or datetime.now(timezone.utc)
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{PRODID}", "CALSCALE:GREGORIAN", "METHOD:PUBLISH",
             f"X-WR-CALNAME:{escape(name)}", "REFRESH-INTERVAL;VALUE=DURATION:PT15M", "X-PUBLISHED-TTL:PT15M"]
    for row in rows:
        lines += event(row, dentist_feed=dentist_feed, now=now)
    lines.append("END:VCALENDAR")
    return b"".join(fold(line) for line in lines)
