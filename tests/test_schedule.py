"""Slot computation, without a database: ranges, overrides, durations,
notice, horizon and daylight-saving changes in both directions."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from actors.schedule import IntervalSet, Schedule, ScheduleError, parse_ranges

UTC = timezone.utc
WEEK = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def every_day(hours: str, tz: str = "Europe/London", **kw) -> Schedule:
    return Schedule.from_json({d: hours for d in WEEK}, timezone=tz, **kw)


def local(s: Schedule, instant: datetime) -> datetime:
    return instant.astimezone(ZoneInfo(s.timezone))


@pytest.mark.parametrize("text, expected", [
    ("09:00-17:00", ((540, 1020),)),
    ("08:00-12:00,13:00-17:00", ((480, 720), (780, 1020))),
    (" 08:00 - 12:00 , 12:00-13:00 ", ((480, 720), (720, 780))),
    ("", ()),
    ("   ", ()),
    ("18:00-24:00", ((1080, 1440),)),
])
def test_parse_ranges(text, expected) -> None:
    assert parse_ranges(text) == expected


@pytest.mark.parametrize("text", ["9-5", "09:00", "25:00-26:00", "10:60-11:00", "12:00-09:00", "09:00-09:00",
                                  "08:00-12:00,11:00-13:00", "13:00-14:00,08:00-09:00", "24:00-24:00", "09:00-24:30"])
def test_parse_ranges_rejects(text) -> None:
    with pytest.raises(ScheduleError) as exc:
        parse_ranges(text, "tuesday")
    assert exc.value.field == "tuesday"


def test_from_json() -> None:
    with pytest.raises(ScheduleError) as exc:
        Schedule.from_json({"funday": "09:00-10:00"}, timezone="UTC")
    assert exc.value.field == "funday"
    with pytest.raises(ScheduleError) as exc:
        Schedule.from_json({}, timezone="Atlantis/Capital")
    assert exc.value.field == "timezone"
    with pytest.raises(ScheduleError) as exc:
        Schedule.from_json({}, timezone="UTC", overrides={"2026-02-30": ""})
    assert exc.value.field == "overrides.2026-02-30"
    s = Schedule.from_json({"monday": "09:00-17:00", "friday": "08:00-12:00,13:00-15:00"}, timezone="UTC",
                           overrides={"2026-12-24": "09:00-12:00", "2026-12-25": ""})
    at = lambda day, hh, mm=0: datetime(2026, *day, hh, mm, tzinfo=UTC)  # noqa: E731
    assert s.working_intervals(date(2026, 11, 23)) == [(at((11, 23), 9), at((11, 23), 17))]  # a Monday
    assert s.working_intervals(date(2026, 11, 27)) == [(at((11, 27), 8), at((11, 27), 12)),
                                                       (at((11, 27), 13), at((11, 27), 15))]  # a Friday
    assert s.working_intervals(date(2026, 12, 24)) == [(at((12, 24), 9), at((12, 24), 12))]  # overridden
    assert s.working_intervals(date(2026, 12, 25)) == []  # a Friday, closed by its override
    assert s.working_intervals(date(2026, 11, 24)) == []  # a Tuesday: missing means closed


def test_ordinary_day_and_lunch_break() -> None:
    s = every_day("09:00-17:00")
    starts = s.slot_starts(date(2026, 6, 10))
    assert len(starts) == 16
    assert local(s, starts[0]).hour == 9 and local(s, starts[-1]).strftime("%H:%M") == "16:30"
    lunch = every_day("08:00-12:00,13:00-17:00")
    hours = {local(lunch, t).strftime("%H:%M") for t in lunch.slot_starts(date(2026, 6, 10))}
    assert len(hours) == 16 and "12:00" not in hours and "12:30" not in hours and "13:00" in hours
    assert len(every_day("09:00-18:00", slot_minutes=45).slot_starts(date(2026, 6, 10))) == 12


@pytest.mark.parametrize("tz, day", [
    ("Europe/London", date(2026, 3, 29)), ("Europe/London", date(2026, 10, 25)),
    ("America/New_York", date(2026, 3, 8)), ("America/New_York", date(2026, 11, 1)),
])
def test_daylight_saving_days_keep_local_hours(tz, day) -> None:
    s = every_day("09:00-17:00", tz)
    today, before = s.slot_starts(day), s.slot_starts(day - timedelta(days=1))
    assert len(today) == 16
    assert local(s, today[0]).strftime("%H:%M") == "09:00"
    assert today[0].utcoffset() == timedelta(0)
    assert local(s, today[0]).utcoffset() != local(s, before[0]).utcoffset()  # the offset did change


def test_ranges_across_the_change_follow_absolute_time() -> None:
    s = every_day("00:00-04:00", "Europe/London")
    assert len(s.slot_starts(date(2026, 3, 29))) == 6    # 01:00-02:00 never happened: 3 hours
    assert len(s.slot_starts(date(2026, 10, 25))) == 10  # 01:00-02:00 happened twice: 5 hours
    gap = every_day("01:30-03:00", "Europe/London")
    [(start, end)] = gap.working_intervals(date(2026, 3, 29))
    assert local(gap, start).strftime("%H:%M") == "02:00"  # moved past the gap
    assert end - start == timedelta(hours=1)


@pytest.mark.parametrize("tz, first", [("Europe/London", date(2026, 3, 25)), ("Europe/London", date(2026, 10, 21)),
                                       ("America/New_York", date(2026, 3, 5)), ("America/New_York", date(2026, 10, 29))])
def test_a_week_across_the_change(tz, first) -> None:
    s = every_day("09:00-17:00", tz)
    offsets = set()
    for i in range(7):
        starts = s.slot_starts(first + timedelta(days=i))
        assert local(s, starts[0]).strftime("%H:%M") == "09:00" and len(starts) == 16
        offsets.add(local(s, starts[0]).utcoffset())
    assert len(offsets) == 2


def test_overrides_and_closures() -> None:
    s = Schedule.from_json({d: "09:00-17:00" for d in WEEK}, timezone="UTC",
                           overrides={"2026-12-24": "09:00-12:00", "2026-12-26": "", "2026-12-25": "10:00-11:00"},
                           closures=[date(2026, 12, 25)])
    assert len(s.slot_starts(date(2026, 12, 24))) == 6
    assert s.slot_starts(date(2026, 12, 25)) == []  # closures beat overrides
    assert s.slot_starts(date(2026, 12, 26)) == []
    assert len(s.slot_starts(date(2026, 12, 27))) == 16


NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def _reason(s: Schedule, start: datetime, minutes: int = 30) -> str:
    with pytest.raises(ScheduleError) as exc:
        s.check_bookable(start, minutes, NOW)
    assert exc.value.field == "slot_time"
    return str(exc.value)


def test_check_bookable_reasons() -> None:
    s = every_day("09:00-12:00,13:00-17:00", "UTC")
    ok = datetime(2026, 6, 3, 9, 0, tzinfo=UTC)
    s.check_bookable(ok, 30, NOW)
    s.check_bookable(ok, 60, NOW)  # a 60-minute type takes two slots
    assert "time zone" in _reason(s, ok.replace(tzinfo=None))
    assert "past" in _reason(s, NOW - timedelta(days=1))
    assert "minimum notice" in _reason(s, datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
    assert "horizon" in _reason(s, ok + timedelta(days=120))
    assert "grid" in _reason(s, ok + timedelta(minutes=15))
    assert "outside working hours" in _reason(s, datetime(2026, 6, 3, 18, 0, tzinfo=UTC))
    assert "outside working hours" in _reason(s, datetime(2026, 6, 3, 12, 0, tzinfo=UTC))
    assert "outside working hours" in _reason(s, datetime(2026, 6, 3, 11, 30, tzinfo=UTC), 60)  # into lunch
    assert "outside working hours" in _reason(s, datetime(2026, 6, 3, 16, 30, tzinfo=UTC), 60)  # past closing


def test_slots_mark_notice_horizon_and_durations() -> None:
    s = every_day("09:00-12:00", "UTC")
    day = date(2026, 6, 3)
    free = {x.start.strftime("%H:%M"): x.available for x in s.slots(day, day, now=NOW)}
    assert free == {"09:00": True, "09:30": True, "10:00": True, "10:30": True, "11:00": True, "11:30": True}
    hour = {x.start.strftime("%H:%M"): x.available for x in s.slots(day, day, now=NOW, duration_minutes=60)}
    assert hour == {"09:00": True, "09:30": True, "10:00": True, "10:30": True, "11:00": True, "11:30": False}
    early = s.slots(date(2026, 6, 1), date(2026, 6, 1), now=NOW)
    assert [x.available for x in early] == [False] * 2 + [True] * 4  # 2 h notice from 08:00
    far = s.slots(date(2026, 9, 1), date(2026, 9, 1), now=NOW)
    assert far and not any(x.available for x in far)


def test_interval_set() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    iv = IntervalSet()
    iv.add("long", t0, t0 + timedelta(hours=5))
    iv.add("short", t0 + timedelta(hours=6), t0 + timedelta(hours=6, minutes=30))
    assert iv.overlapping(t0 + timedelta(hours=4), t0 + timedelta(hours=4, minutes=1)) == ["long"]
    assert not iv.overlaps(t0 + timedelta(hours=5), t0 + timedelta(hours=6))  # touching is not overlapping
    iv.add("short", t0 + timedelta(hours=1), t0 + timedelta(hours=2))  # replaces
    assert len(iv) == 2 and iv.overlapping(t0, t0 + timedelta(hours=9)) == ["long", "short"]
    assert iv.remove("long") == (t0, t0 + timedelta(hours=5)) and "long" not in iv
    assert iv.remove("long") is None


def test_interval_set_agrees_with_brute_force() -> None:
    rng = random.Random(42)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    iv, truth = IntervalSet(), {}
    for i in range(1000):
        start = t0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 30))
        end = start + timedelta(minutes=rng.choice([15, 30, 60, 90, 600]))
        iv.add(i, start, end)
        truth[i] = (start, end)
    for i in rng.sample(range(1000), 200):
        iv.remove(i)
        del truth[i]
    for _ in range(500):
        qs = t0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 30))
        qe = qs + timedelta(minutes=rng.choice([1, 30, 120]))
        expected = {k for k, (s, e) in truth.items() if s < qe and e > qs}
        assert set(iv.overlapping(qs, qe)) == expected
        assert iv.overlaps(qs, qe) == bool(expected)
