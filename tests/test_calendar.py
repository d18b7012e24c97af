"""Calendar feeds, parsed with the `icalendar` package as calendar apps would."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import icalendar

from services import ical
from tests.conftest import Api, assert_error, make_dentist

BERLIN = ZoneInfo("Europe/Berlin")


def last_sunday(year: int, month: int) -> date:
    day = date(year, month + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() + 1) % 7)


def next_dst_sundays() -> list[date]:
    """The next last-Sundays of March and October (the EU's clock changes), in the feed's window."""
    today = datetime.now(timezone.utc).date()
    found = [last_sunday(y, m) for y in (today.year, today.year + 1) for m in (3, 10)]
    return sorted(d for d in found if d > today + timedelta(days=2))[:2]


async def book(api: Api, dentist_id: str, patient: uuid.UUID, local: datetime, kind: str = "checkup") -> uuid.UUID:
    """An appointment written straight to the table (the trigger-fed paths see it like any other)."""
    return await api.pool.fetchval(
        "INSERT INTO public.appointments (patient_id, dentist_id, appointment_date, appointment_type, status) "
        "VALUES ($1, $2, $3, $4, 'confirmed') RETURNING id", patient, uuid.UUID(dentist_id), local, kind)


async def fetch(api: Api, url: str) -> tuple[int, bytes, str]:
    path = url.split("://", 1)[1].split("/", 1)[1]
    async with api.client.get("/" + path) as resp:  # no Authorization: the token is the credential
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


def events(body: bytes) -> dict[str, Any]:
    calendar = icalendar.Calendar.from_ical(body)
    return {str(e["UID"]).split("@")[0]: e for e in calendar.walk("VEVENT")}


async def test_feeds_across_dst_for_patient_and_dentist(api: Api) -> None:
    admin, login = await api.user("admin"), await api.user("dentist")
    patient, other = await api.user(), await api.user()
    await api.pool.execute("UPDATE public.profiles SET full_name = 'Ada Lovelace, \"the first\"; ok' WHERE id = $1",
                           patient.id)
    dentist_id = await make_dentist(api, admin, login, name="Dr Ünïcødé " + "Ämtsgericht-Straße " * 4,
                                    timezone="Europe/Berlin")
    mine, theirs = [], []
    for sunday in next_dst_sundays():
        for day in (sunday - timedelta(days=1), sunday):  # the Saturday before and the Sunday of the change
            mine.append(await book(api, dentist_id, patient.id, datetime.combine(day, datetime.min.time(), BERLIN)
                                   .replace(hour=10)))
            theirs.append(await book(api, dentist_id, other.id, datetime.combine(day, datetime.min.time(), BERLIN)
                                     .replace(hour=12)))

    status, feed = await api.post("/api/calendar-feeds", patient, json={})
    assert status == 201 and feed["kind"] == "patient" and feed["url"].endswith(".ics"), feed
    status, raw, content_type = await fetch(api, feed["url"])
    assert status == 200 and content_type.startswith("text/calendar")
    lines = raw.split(b"\r\n")
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 75 for line in lines) and any(line.startswith(b" ") for line in lines)
    got = events(raw)
    assert set(got) == {str(a) for a in mine}  # never another patient's appointment
    for appointment_id in mine:
        event = got[str(appointment_id)]
        start = event.decoded("DTSTART")
        assert start.tzinfo is not None and start.utcoffset() == timedelta(0)  # written in UTC
        local = start.astimezone(BERLIN)
        assert (local.hour, local.minute) == (10, 0)  # ten o'clock on both sides of each clock change
        assert event.decoded("DTEND") - start == timedelta(minutes=30)
        assert str(event["SUMMARY"]).startswith("Checkup with Dr Ünïcødé")
    offsets = {got[str(a)].decoded("DTSTART").hour for a in mine}
    assert offsets == {8, 9}  # UTC+2 and UTC+1: the offset really changed between them

    status, staff = await api.post("/api/calendar-feeds", login, json={"dentist_id": dentist_id})
    assert status == 201 and staff["kind"] == "dentist", staff
    status, raw, _ = await fetch(api, staff["url"])
    got = events(raw)
    assert set(got) == {str(a) for a in mine + theirs}
    assert str(got[str(mine[0])]["SUMMARY"]) == 'Checkup: Ada Lovelace, "the first"; ok'
    assert b"SUMMARY:Checkup: Ada Lovelace\\, \"the first\"\\; ok" in raw  # TEXT escaping

    # A change bumps SEQUENCE; a cancellation stays in the feed as CANCELLED.
    before = int(got[str(mine[0])]["SEQUENCE"])
    await api.pool.execute("UPDATE public.appointments SET status = 'cancelled' WHERE id = $1", mine[0])
    status, raw, _ = await fetch(api, feed["url"])
    event = events(raw)[str(mine[0])]
    assert str(event["STATUS"]) == "CANCELLED" and int(event["SEQUENCE"]) > before


async def test_who_may_subscribe_and_revocation(api: Api) -> None:
    admin, login, stranger_dentist = await api.user("admin"), await api.user("dentist"), await api.user("dentist")
    patient = await api.user()
    dentist_id = await make_dentist(api, admin, login)
    for who, expected, code in ((patient, 403, "FORBIDDEN"), (stranger_dentist, 403, "FORBIDDEN"),
                                (api.service(), 403, "FORBIDDEN")):
        status, body = await api.post("/api/calendar-feeds", who, json={"dentist_id": dentist_id})
        assert_error(status, body, expected, code)
    status, body = await api.post("/api/calendar-feeds", admin, json={"dentist_id": str(uuid.uuid4())})
    assert_error(status, body, 404, "NOT_FOUND")
    status, body = await api.post("/api/calendar-feeds", admin, json={"dentist_id": "nope"})
    assert assert_error(status, body, 400, "VALIDATION_ERROR")["details"]["field"] == "dentist_id"
    status, body = await api.post("/api/calendar-feeds", None, json={})
    assert_error(status, body, 401, "UNAUTHORIZED")

    status, feed = await api.post("/api/calendar-feeds", admin, json={"dentist_id": dentist_id})
    assert status == 201, feed
    status, listed = await api.get("/api/calendar-feeds", admin)
    assert [f["id"] for f in listed] == [feed["id"]] and "url" not in listed[0]
    status, _, _ = await fetch(api, feed["url"])
    assert status == 200
    status, body = await api.delete(f"/api/calendar-feeds/{feed['id']}", patient)  # not theirs
    assert_error(status, body, 404, "NOT_FOUND")
    status, _ = await api.delete(f"/api/calendar-feeds/{feed['id']}", admin)
    assert status == 204
    status, raw, _ = await fetch(api, feed["url"])
    assert status == 404
    status, body = await api.get("/ical/" + "A" * 43 + ".ics")
    assert_error(status, body, 404, "NOT_FOUND")

    # A dentist feed stops working once its owner may no longer see that dentist.
    status, feed = await api.post("/api/calendar-feeds", login, json={"dentist_id": dentist_id})
    assert status == 201
    await api.pool.execute("DELETE FROM public.user_roles WHERE user_id = $1 AND role = 'dentist'", login.id)
    status, _, _ = await fetch(api, feed["url"])
    assert status == 404


def test_folding_never_splits_a_character() -> None:
    line = "SUMMARY:" + "ü" * 100
    folded = ical.fold(line)
    parts = folded.split(b"\r\n ")
    assert all(len(p) <= 75 for p in folded.split(b"\r\n"))
    assert b"".join(parts).rstrip(b"\r\n").decode() == line  # each part is valid UTF-8 on its own
    assert all(p.rstrip(b"\r\n").decode() for p in parts)
