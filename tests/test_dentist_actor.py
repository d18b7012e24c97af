"""The dentist actor itself, driven directly (no HTTP) against a real
PostgreSQL: holds, bookings, refusals, release, expiry, catching up on what
someone else wrote, changes decided again when someone else wrote first, and
a crashing turn that fails its caller only."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any, AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from prometheus_client import REGISTRY

from actors.batch import GroupCommit
from actors.dentist import DentistActor, Rules
from actors.messages import Book, CatchUp, ChangeAppointment, GetSlots, Hold, ReleaseHold
from hub.catalog import Catalog
from hub.errors import ErrorCode, HubError
from hub.events import Event
from services import users
from tests.conftest import ALL_DAY, eventually

UTC = timezone.utc


class World:
    """A dentist open around the clock, two patients, and what the actor published."""

    def __init__(self, pool: asyncpg.Pool, dentist: uuid.UUID, patient: uuid.UUID, other: uuid.UUID,
                 catalog: Catalog) -> None:
        self.pool, self.dentist, self.patient, self.other, self.catalog = pool, dentist, patient, other, catalog
        self.published: list[Event] = []
        self._running: list[tuple[DentistActor, asyncio.Task[None]]] = []

    def start(self, rules: Rules = Rules(), writes: GroupCommit | None = None) -> DentistActor:
        actor = DentistActor(str(self.dentist), pool=self.pool, writes=writes or GroupCommit(self.pool),
                             catalog=self.catalog, rules=rules, publish=self.published.extend)
        self._running.append((actor, asyncio.create_task(actor.run(), name=f"actor:{self.dentist}")))
        return actor

    async def stop(self) -> None:
        for actor, task in self._running:
            actor.stop()
            await task

    async def db_version(self) -> int:
        return await self.pool.fetchval("SELECT version FROM dentists WHERE id = $1", self.dentist)

    async def appointments_at(self, start: datetime) -> list[uuid.UUID]:
        return [r["patient_id"] for r in await self.pool.fetch(
            "SELECT patient_id FROM appointments WHERE dentist_id = $1 AND appointment_date = $2 "
            "AND status <> 'cancelled'", self.dentist, start)]


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    async with pool.acquire() as con:
        patient = await users.create_user(con, email=None, full_name="Actor Patient")
        other = await users.create_user(con, email=None, full_name="Other Patient")
        dentist = await con.fetchval("INSERT INTO dentists (name, timezone, available_times) "
                                     "VALUES ('Dr Actor', 'UTC', $1) RETURNING id", ALL_DAY)
    catalog = Catalog()
    await catalog.load(pool)
    w = World(pool, dentist, patient, other, catalog)
    yield w
    await w.stop()


def at(hour: int, days: int = 3) -> datetime:
    return datetime.now(UTC).replace(hour=hour, minute=0, second=0, microsecond=0) + timedelta(days=days)


async def status(actor: DentistActor, start: datetime, viewer: uuid.UUID | None = None) -> str:
    day: date = start.date()
    slots = await actor.ask(GetSlots(day_from=day, day_to=day, viewer=viewer))
    return next(s["status"] for s in slots if s["start"] == start)


async def refused(call: Awaitable[object], code: ErrorCode) -> HubError:
    with pytest.raises(HubError) as exc:
        await call
    assert exc.value.code == code, exc.value
    return exc.value


async def test_hold_then_book_with_it(world: World) -> None:
    actor = world.start()
    start = at(10)
    hold = await actor.ask(Hold(patient_id=world.patient, start=start))
    assert hold["patient_id"] == world.patient and hold["slot_time"] == start
    assert await world.pool.fetchval("SELECT count(*) FROM slot_reservations WHERE id = $1", hold["id"]) == 1
    assert await status(actor, start, world.other) == "busy-tentative"
    assert await status(actor, start, world.patient) == "free"  # your own hold is yours to book

    booked = await actor.ask(Book(patient_id=world.patient, start=start, reservation_id=hold["id"]))
    assert booked["status"] == "pending" and booked["appointment_date"] == start
    assert await world.appointments_at(start) == [world.patient]
    assert await world.pool.fetchval("SELECT count(*) FROM slot_reservations WHERE id = $1", hold["id"]) == 0
    assert await status(actor, start, world.patient) == "busy"
    # Memory and the database agree, and every event of its own writes went out once, in order.
    assert actor.version == await world.db_version()
    assert [e.version for e in world.published] == list(range(world.published[0].version, actor.version + 1))
    assert [(e.table_name, e.event_type) for e in world.published] == [
        ("slot_reservations", "INSERT"), ("slot_reservations", "DELETE"), ("appointments", "INSERT")]


async def test_a_conflicting_book_is_refused_and_writes_nothing(world: World) -> None:
    actor = world.start()
    start = at(11)
    await actor.ask(Book(patient_id=world.patient, start=start))
    published = len(world.published)
    await refused(actor.ask(Book(patient_id=world.other, start=start)), ErrorCode.SLOT_UNAVAILABLE)
    assert await world.appointments_at(start) == [world.patient]
    assert len(world.published) == published


async def test_a_slot_held_by_another_patient_is_refused_with_when_it_frees(world: World) -> None:
    actor = world.start()
    start = at(12)
    await actor.ask(Hold(patient_id=world.patient, start=start))
    error = await refused(actor.ask(Book(patient_id=world.other, start=start)), ErrorCode.SLOT_UNAVAILABLE)
    assert 1 <= error.details["retry_after_seconds"] <= Rules().hold_ttl_seconds
    error = await refused(actor.ask(Hold(patient_id=world.other, start=start)), ErrorCode.SLOT_UNAVAILABLE)
    assert await world.appointments_at(start) == []


async def test_release_frees_the_slot_for_others(world: World) -> None:
    actor = world.start()
    start = at(13)
    hold = await actor.ask(Hold(patient_id=world.patient, start=start))
    await refused(actor.ask(ReleaseHold(hold_id=hold["id"], patient_id=world.other)), ErrorCode.FORBIDDEN)
    assert await actor.ask(ReleaseHold(hold_id=hold["id"], patient_id=world.patient)) is None
    assert await world.pool.fetchval("SELECT count(*) FROM slot_reservations WHERE id = $1", hold["id"]) == 0
    assert await status(actor, start, world.other) == "free"
    await refused(actor.ask(ReleaseHold(hold_id=hold["id"], patient_id=world.patient)), ErrorCode.NOT_FOUND)
    assert (await actor.ask(Hold(patient_id=world.other, start=start)))["patient_id"] == world.other


async def test_the_hold_limit_is_kept(world: World) -> None:
    actor = world.start(Rules(max_holds_per_patient=1))
    await actor.ask(Hold(patient_id=world.patient, start=at(14)))
    error = await refused(actor.ask(Hold(patient_id=world.patient, start=at(15))), ErrorCode.CONFLICT)
    assert error.details["limit"] == 1
    assert await world.pool.fetchval("SELECT count(*) FROM slot_reservations WHERE patient_id = $1",
                                     world.patient) == 1


async def test_an_expired_hold_is_released_by_the_actor_within_a_second(world: World) -> None:
    actor = world.start(Rules(hold_ttl_seconds=1))
    start = at(16)
    hold = await actor.ask(Hold(patient_id=world.patient, start=start))

    async def gone() -> bool:
        return not await world.pool.fetchval("SELECT count(*) FROM slot_reservations WHERE id = $1", hold["id"])

    await eventually(gone, timeout=(hold["expires_at"] - datetime.now(UTC)).total_seconds() + 1.0,
                     what="the expired hold's release")
    assert await status(actor, start, world.other) == "free"
    assert await world.pool.fetchval("SELECT kind FROM notifications WHERE user_id = $1", world.patient) == \
        "hold_expired"
    assert world.published[-1].table_name == "slot_reservations" and world.published[-1].event_type == "DELETE"
    assert actor.version == await world.db_version()


async def test_catches_up_on_a_write_made_by_someone_else(world: World) -> None:
    actor = world.start()
    start, later = at(17), at(18)
    assert await status(actor, start) == "free"  # loaded, and now behind what psql is about to write
    insert = ("INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
              "VALUES ($1, $2, $3, 'checkup')")
    await world.pool.execute(insert, world.other, world.dentist, start)
    # Its memory says free; the write finds it is behind, catches up under the lock and refuses.
    await refused(actor.ask(Book(patient_id=world.patient, start=start)), ErrorCode.SLOT_UNAVAILABLE)
    assert await world.appointments_at(start) == [world.other]
    assert actor.version == await world.db_version()
    # Told of a version (as the listener does), it applies what it missed without writing.
    await world.pool.execute(insert, world.other, world.dentist, later)
    version = await world.db_version()
    assert await actor.ask(CatchUp(version=version)) == version
    assert await status(actor, later) == "busy"
    assert world.published == []  # others' events reach subscribers through the feed, not the actor


class FirstComesSomeoneElse(GroupCommit):
    """Group commit where, once, someone else (as psql would) commits a write
    for the dentist after the actor decided and before its write arrives."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.pool = pool
        self.interloper: tuple[str, tuple[object, ...]] | None = None

    async def write(self, *args: Any) -> bytes:
        if self.interloper is not None:
            (query, params), self.interloper = self.interloper, None
            await self.pool.execute(query, *params)
        return await super().write(*args)


async def test_a_change_made_on_a_stale_version_is_decided_again_on_the_row_as_it_is(world: World) -> None:
    writes = FirstComesSomeoneElse(world.pool)
    actor = world.start(writes=writes)
    staff = world.other  # acting as the clinic (staff=True): the patient hears of the change
    appt = (await actor.ask(Book(patient_id=world.patient, start=at(9))))["id"]
    # Decided on a pending appointment; cancelled by someone else before the write: confirming it is refused.
    writes.interloper = ("UPDATE appointments SET status = 'cancelled' WHERE id = $1", (appt,))
    error = await refused(actor.ask(ChangeAppointment(appointment_id=appt, by=staff, staff=True, status="confirmed")),
                          ErrorCode.CONFLICT)
    assert error.details == {"allowed": []}
    assert await world.pool.fetchval("SELECT status FROM appointments WHERE id = $1", appt) == "cancelled"
    assert actor.version == await world.db_version()

    appt = (await actor.ask(Book(patient_id=world.patient, start=at(10))))["id"]
    # Moved to a time memory thinks free, which someone else booked meanwhile: refused, nothing written.
    insert = ("INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
              "VALUES ($1, $2, $3, 'checkup')")
    writes.interloper = (insert, (world.other, world.dentist, at(11)))
    await refused(actor.ask(ChangeAppointment(appointment_id=appt, by=staff, staff=True, start=at(11))),
                  ErrorCode.SLOT_UNAVAILABLE)
    assert await world.appointments_at(at(11)) == [world.other]
    assert await world.appointments_at(at(10)) == [world.patient]

    # Someone else confirmed it meanwhile: the move is made on the confirmed row, the patient told once.
    published = len(world.published)
    writes.interloper = ("UPDATE appointments SET status = 'confirmed' WHERE id = $1", (appt,))
    moved = await actor.ask(ChangeAppointment(appointment_id=appt, by=staff, staff=True, start=at(12)))
    assert (moved["status"], moved["appointment_date"]) == ("confirmed", at(12))
    row = await world.pool.fetchrow("SELECT * FROM appointments WHERE id = $1", appt)
    assert moved == {k: row[k] for k in moved}
    told = await world.pool.fetch("SELECT kind, data FROM notifications WHERE user_id = $1 "
                                  "AND kind <> 'appointment_booked'", world.patient)
    assert [(n["kind"], n["data"]["status"], n["data"]["appointment_date"]) for n in told] == [
        ("appointment_rescheduled", "confirmed", at(12).isoformat())]
    assert [(e.table_name, e.event_type, e.record_id) for e in world.published[published:]] == [
        ("appointments", "UPDATE", appt)]  # its own write only: someone else's reaches subscribers by the feed
    assert actor.version == await world.db_version()
    assert await status(actor, at(10)) == "free" and await status(actor, at(12)) == "busy"


async def test_a_crash_in_one_turn_fails_that_caller_only(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    actor = world.start()
    start = at(19)
    await actor.ask(Book(patient_id=world.patient, start=start))
    crashes = REGISTRY.get_sample_value("hub_actor_crashes_total")
    healthy: Callable[..., object] = actor._slots

    def half_done_then_bug(msg: GetSlots) -> object:
        actor.booked.remove(next(iter(actor._appts)))  # memory changed, then the turn fails
        raise RuntimeError("a bug")

    monkeypatch.setattr(actor, "_slots", half_done_then_bug)
    await refused(actor.ask(GetSlots(day_from=start.date(), day_to=start.date())), ErrorCode.INTERNAL_ERROR)
    monkeypatch.setattr(actor, "_slots", healthy)
    assert REGISTRY.get_sample_value("hub_actor_crashes_total") == crashes + 1
    assert actor.alive and actor.stop_reason is None  # the same actor serves the next message...
    assert await status(actor, start) == "busy"  # ...from memory reloaded from the database
    await refused(actor.ask(Book(patient_id=world.other, start=start)), ErrorCode.SLOT_UNAVAILABLE)
    assert await world.appointments_at(start) == [world.patient]
