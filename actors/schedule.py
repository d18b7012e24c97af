"""Working hours to bookable slots: pure logic, no I/O.

Hours are local wall-clock ranges in the dentist's IANA time zone; slots are
UTC instants. Converting each day's ranges through zoneinfo keeps "09:00"
meaning 09:00 local on both sides of a daylight-saving change.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from datetime import date, datetime, time, timedelta, timezone
from types import MappingProxyType
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Ranges = tuple[tuple[int, int], ...]
_RANGE = re.compile(r"^\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*$")


class ScheduleError(ValueError):
    """Invalid schedule input or an unbookable time; `field` names the input."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _minute(hh: str, mm: str, field: str, text: str) -> int:
    hours, minutes = int(hh), int(mm)
    if minutes > 59 or hours > 24 or (hours == 24 and minutes != 0):
        raise ScheduleError(f"{field}: {text!r} is not a time of day (HH:MM, 00:00 to 24:00)", field)
    return hours * 60 + minutes


def parse_ranges(text: str, field: str = "hours") -> Ranges:
    """"08:00-12:00,13:00-17:00" -> ((480, 720), (780, 1020)); "" is closed."""
    if not isinstance(text, str):
        raise ScheduleError(f"{field} must be a string like \"09:00-17:00\"", field)
    if not text.strip():
        return ()
    ranges = []
    for part in text.split(","):
        match = _RANGE.match(part)
        if match is None:
            raise ScheduleError(f"{field}: {part.strip()!r} is not a range like \"09:00-17:00\"", field)
        start = _minute(match.group(1), match.group(2), field, part.strip())
        end = _minute(match.group(3), match.group(4), field, part.strip())
        if start >= end:
            raise ScheduleError(f"{field}: {part.strip()!r} ends before it starts", field)
        if start == 1440:
            raise ScheduleError(f"{field}: a range cannot start at 24:00", field)
        if ranges and start < ranges[-1][1]:
            raise ScheduleError(f"{field}: ranges must be in order and must not overlap", field)
        ranges.append((start, end))
    return tuple(ranges)


@dataclasses.dataclass(frozen=True, slots=True)
class Slot:
    start: datetime
    end: datetime
    available: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    timezone: str
    weekly: tuple[Ranges, ...]
    slot_minutes: int = 30
    overrides: Mapping[date, Ranges] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    closures: frozenset[date] = frozenset()
    min_notice_minutes: int = 120
    horizon_days: int = 90
    # Working intervals per local date: every booking checks two days' grid.
    _days: dict[date, list[tuple[datetime, datetime]]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ScheduleError(f"unknown time zone {self.timezone!r} (use an IANA name like Europe/London)",
                                "timezone") from None
        if len(self.weekly) != 7:
            raise ScheduleError("weekly hours need seven days", "available_times")
        if not 5 <= self.slot_minutes <= 240:
            raise ScheduleError("slot_minutes must be between 5 and 240", "slot_minutes")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # zoneinfo caches instances

    @classmethod
    def from_json(cls, available_times: Mapping[str, str], *, timezone: str, slot_minutes: int = 30,
                  overrides: Mapping[str, str] | None = None, closures: Iterable[date | str] = (),
                  min_notice_minutes: int = 120, horizon_days: int = 90) -> Schedule:
        """The seed's weekday object (a missing day is closed), plus overrides by local date."""
        if not isinstance(available_times, Mapping):
            raise ScheduleError("available_times must be an object of weekday keys", "available_times")
        unknown = sorted(set(available_times) - set(WEEKDAYS))
        if unknown:
            raise ScheduleError(f"unknown weekday {unknown[0]!r} (use {', '.join(WEEKDAYS)})", unknown[0])
        weekly = tuple(parse_ranges(available_times.get(day) or "", day) for day in WEEKDAYS)
        parsed: dict[date, Ranges] = {}
        for key, hours in (overrides or {}).items():
            field = f"overrides.{key}"
            try:
                day = date.fromisoformat(key)
            except (TypeError, ValueError):
                raise ScheduleError(f"{field}: override keys are dates like 2026-12-24", field) from None
            parsed[day] = parse_ranges(hours or "", field)
        days = frozenset(d if isinstance(d, date) else date.fromisoformat(d) for d in closures)
        return cls(timezone, weekly, slot_minutes, MappingProxyType(parsed), days, min_notice_minutes, horizon_days)

    def _ranges(self, day: date) -> Ranges:
        if day in self.closures:
            return ()
        found = self.overrides.get(day)
        return found if found is not None else self.weekly[day.weekday()]

    def _instant(self, day: date, minute: int) -> datetime:
        """Local wall time to UTC; a time in a spring-forward gap moves to the
        end of the gap, an ambiguous fall-back time takes its first occurrence."""
        if minute >= 1440:
            day, minute = day + timedelta(days=1), minute - 1440
        return wall_to_utc(self.zone, datetime.combine(day, time(minute // 60, minute % 60)))

    def working_intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """UTC intervals worked on local date `day` (closures, then overrides, then weekly hours)."""
        found = self._days.get(day)
        if found is None:
            if len(self._days) > 1000:
                self._days.clear()
            found = self._days[day] = [(self._instant(day, s), self._instant(day, e)) for s, e in self._ranges(day)]
        return list(found)

    def slot_starts(self, day: date) -> list[datetime]:
        step = timedelta(minutes=self.slot_minutes)
        starts = []
        for begin, end in self.working_intervals(day):
            at = begin
            while at + step <= end:
                starts.append(at)
                at += step
        return starts

    def _local_day(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def is_on_grid(self, start: datetime) -> bool:
        day = self._local_day(start)
        return any(start == s for d in (day, day - timedelta(days=1)) for s in self.slot_starts(d))

    def _reason(self, start: datetime, duration_minutes: int, now: datetime) -> str | None:
        if start.tzinfo is None:
            return "slot_time must include a time zone"
        if start < now:
            return "slot is in the past"
        if start < now + timedelta(minutes=self.min_notice_minutes):
            return f"slot is inside the minimum notice of {self.min_notice_minutes} minutes"
        if start > now + timedelta(days=self.horizon_days):
            return f"slot is past the booking horizon of {self.horizon_days} days"
        day = self._local_day(start)
        around = [(b, e) for d in (day - timedelta(days=1), day) for b, e in self.working_intervals(d) if b <= start < e]
        if not around:
            return "slot is outside working hours"
        if not self.is_on_grid(start):
            return "slot is not on the dentist's slot grid"
        if start + timedelta(minutes=duration_minutes) > around[0][1]:
            return "slot is outside working hours (the appointment would run past the end of the working period)"
        return None

    def check_bookable(self, start: datetime, duration_minutes: int, now: datetime) -> None:
        """Raise ScheduleError(field="slot_time") saying why `start` cannot be booked."""
        reason = self._reason(start, duration_minutes, now)
        if reason is not None:
            raise ScheduleError(reason, "slot_time")

    def slots(self, day_from: date, day_to: date, *, now: datetime,
              duration_minutes: int | None = None) -> list[Slot]:
        """Every grid slot of the local dates day_from..day_to, available when the
        schedule's rules (hours, notice, horizon) allow it; the dentist actor
        marks what appointments and holds take."""
        if day_from <= date.min or day_to >= date.max - timedelta(days=1):  # the next day must exist
            raise ScheduleError("dates must lie inside the calendar", "date")
        length = timedelta(minutes=duration_minutes or self.slot_minutes)
        out = []
        day = day_from
        while day <= day_to:
            intervals = self.working_intervals(day)
            step = timedelta(minutes=self.slot_minutes)
            earliest = now + timedelta(minutes=self.min_notice_minutes)
            latest = now + timedelta(days=self.horizon_days)
            for begin, end in intervals:
                at = begin
                while at + step <= end:
                    out.append(Slot(at, at + length, earliest <= at <= latest and at + length <= end))
                    at += step
            day += timedelta(days=1)
        return out


def wall_to_utc(zone: ZoneInfo, wall: datetime) -> datetime:
    """A naive local wall time in `zone` as a UTC instant; a time in a
    spring-forward gap moves to the end of the gap, an ambiguous fall-back
    time takes its first occurrence."""
    instant = wall.replace(tzinfo=zone).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != wall:
        instant = _gap_end(zone, wall)
    return instant


def _gap_end(zone: ZoneInfo, wall: datetime) -> datetime:
    """The first instant whose local time is at or past `wall`, a time that a
    daylight-saving gap swallows: the instant the gap ends."""
    at = wall.replace(tzinfo=zone).astimezone(UTC) - timedelta(hours=3)  # gaps are shorter than this
    while at.astimezone(zone).replace(tzinfo=None) < wall:  # rare: only for hours set inside a gap
        at += timedelta(minutes=1)
    return at


class IntervalSet:
    """Half-open UTC intervals [start, end) by key, with O(log n + k) overlap queries.

    Starts are kept sorted in a plain list (bisect compares datetimes in C);
    a query bisects from `start - longest` so long intervals that began
    earlier are still found.
    """

    def __init__(self) -> None:
        self._starts: list[datetime] = []
        self._keys: list[Any] = []  # parallel to _starts
        self._by_key: dict[Any, tuple[datetime, datetime]] = {}
        self._longest = timedelta(0)

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def get(self, key: Any) -> tuple[datetime, datetime] | None:
        return self._by_key.get(key)

    def add(self, key: Any, start: datetime, end: datetime) -> None:
        self.remove(key)
        self._by_key[key] = (start, end)
        i = bisect.bisect_right(self._starts, start)
        self._starts.insert(i, start)
        self._keys.insert(i, key)
        self._longest = max(self._longest, end - start)

    def remove(self, key: Any) -> tuple[datetime, datetime] | None:
        found = self._by_key.pop(key, None)
        if found is not None:
            i = bisect.bisect_left(self._starts, found[0])
            while self._keys[i] != key:
                i += 1
            del self._starts[i]
            del self._keys[i]
        return found

    def overlapping(self, start: datetime, end: datetime) -> list[Any]:
        starts, keys, by_key = self._starts, self._keys, self._by_key
        i = bisect.bisect_left(starts, start - self._longest)
        found = []
        while i < len(starts) and starts[i] < end:
            if by_key[keys[i]][1] > start:
                found.append(keys[i])
            i += 1
        return found

    def overlaps(self, start: datetime, end: datetime) -> bool:
        starts, keys, by_key = self._starts, self._keys, self._by_key
        i = bisect.bisect_left(starts, start - self._longest)
        while i < len(starts) and starts[i] < end:
            if by_key[keys[i]][1] > start:
                return True
            i += 1
        return False
