"""One actor per dentist: schedule, bookings and holds in memory, PostgreSQL first.

Every write takes the dentist's row lock, catches up on events committed by
anyone else since the actor's version, re-checks against memory, writes, and
reads back the events its own change produced. Memory changes only by
applying committed events, whoever made them: one code path for local
writes, other processes and SQL typed by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, TypeVar
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from actors import dentist_sql as sql
from actors import offers
from actors._base import Actor, StopReason
from actors.batch import GroupCommit
from actors.messages import (Book, ChangeAppointment, ExpireHolds, ExtendHold, GetSlots, Hold, Idempotency,
                             ReleaseHold, SetSchedule, Sync)
from actors.schedule import IntervalSet, Schedule, ScheduleError
from hub import db, errors, events, metrics
from hub.catalog import Catalog
from hub.errors import ErrorCode, HubError

log = logging.getLogger("hub.actors")
T = TypeVar("T")
UTC = timezone.utc

# Status changes staff may make; patients may only cancel (DESIGN: one explicit table).
TRANSITIONS = {
    ("pending", "confirmed"), ("confirmed", "completed"),
    ("pending", "cancelled"), ("confirmed", "cancelled"), ("confirmed", "no_show"),
}
_NOTICES = {"booked": "Your appointment was booked", "confirmed": "Your appointment was confirmed",
            "rescheduled": "Your appointment was rescheduled", "cancelled": "Your appointment was cancelled"}


@dataclasses.dataclass(frozen=True, slots=True)
class Rules:
    """The booking rules of settings that an actor needs."""

    hold_ttl_seconds: int = 300
    hold_max_age_seconds: int = 1800
    max_holds_per_patient: int = 3
    cancellation_window_hours: int = 24
    max_future_appointments_per_dentist: int = 0  # 0: no cap
    max_appointments_per_day: int = 0
    waitlist_offer_minutes: int = 15

    def caps(self) -> dict[str, int] | None:
        """The appointment caps for a patient's own booking (sql/0007), None when off."""
        if not (self.max_future_appointments_per_dentist or self.max_appointments_per_day):
            return None
        return {"per_dentist": self.max_future_appointments_per_dentist, "per_day": self.max_appointments_per_day}


class _Outcome(msgspec.Struct, frozen=True):
    """What `hub_write` answers: the write's result and events, or why not."""
    stale: int | None = None       # somebody else wrote since our version: catch up to this one
    missing: bool = False          # the dentist is gone
    refused: str | None = None     # a rule only the database could check; nothing was written
    result: msgspec.Raw = msgspec.Raw(b"null")
    events: list[events.Event] = []


_OUTCOME = msgspec.json.Decoder(_Outcome)


@dataclasses.dataclass(slots=True)
class _Held:
    patient_id: uuid.UUID
    start: datetime
    end: datetime
    expires_at: datetime


def _ts(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def slot_unavailable(message: str, **details: Any) -> HubError:
    return HubError(ErrorCode.SLOT_UNAVAILABLE, message, details or None)


class DentistActor(Actor):
    def __init__(self, key: str, *, pool: asyncpg.Pool, writes: GroupCommit, catalog: Catalog, rules: Rules,
                 publish: Callable[[list[events.Event]], None] = lambda evs: None) -> None:
        super().__init__(key)
        self.dentist_id = uuid.UUID(key)
        self._pool = pool
        self._writes = writes
        self._catalog = catalog
        self._rules = rules
        self._publish = publish
        self.version = 0
        self.schedule: Schedule | None = None
        self._closures: list[date] = []
        self.booked = IntervalSet()                        # appointment id -> blocked range
        self._appts: dict[uuid.UUID, tuple[datetime, int]] = {}  # id -> (start, duration)
        self.held = IntervalSet()                          # hold id -> blocked range
        self._holds: dict[uuid.UUID, _Held] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._stale = False  # memory may be behind the database: reload before the next turn

    # ---- lifecycle -------------------------------------------------------

    async def on_start(self) -> None:
        self._stale = True
        await self._reload()

    async def recover(self) -> None:
        """A turn failed unexpectedly: reload now, or before the next turn if
        the database is away. A reload that fails with a bug stops the actor."""
        self._stale = True
        with contextlib.suppress(HubError):
            await self._reload()

    async def _reload(self) -> None:
        if not self._stale:
            return
        try:
            async with self._pool.acquire() as con:
                await self._load(con)
        except Exception as exc:
            if db.unavailable(exc):
                raise errors.database_unavailable() from None
            raise
        self._stale = False

    async def on_stop(self, reason: StopReason) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def _load(self, con: asyncpg.Connection) -> None:
        """(Re)build all memory from the database."""
        row = await con.fetchrow(sql.DENTIST, self.dentist_id)
        if row is None:
            self.schedule = None
            return
        today = datetime.now(UTC).date()
        self._closures = [r["day"] for r in await con.fetch(sql.CLOSURES, today)]
        self._set_schedule(row)
        self.version = row["version"]
        self.booked, self._appts, self.held, self._holds = IntervalSet(), {}, IntervalSet(), {}
        for a in await con.fetch(sql.BOOKED, self.dentist_id, datetime.now(UTC) - timedelta(days=1)):
            self._add_appointment(a["id"], a["appointment_date"], a["duration_minutes"], a["buffer_minutes"])
        for h in await con.fetch(sql.HOLDS, self.dentist_id):
            self._add_hold(h["id"], h["patient_id"], h["slot_time"], h["duration_minutes"], h["expires_at"])
        self._arm_timer()

    def _set_schedule(self, row: Any) -> None:
        self.schedule = Schedule.from_json(
            row["available_times"], timezone=row["timezone"], slot_minutes=row["slot_minutes"],
            overrides=row["date_overrides"], closures=self._closures,
            min_notice_minutes=row["min_notice_minutes"], horizon_days=row["horizon_days"])

    def idle(self) -> bool:
        """Holds need their expiry timer: an actor with holds is never passivated."""
        return not self._holds

    # ---- memory, changed only by committed events -------------------------

    def _add_appointment(self, key: uuid.UUID, start: datetime, duration: int, buffer: int) -> None:
        self.booked.add(key, start, start + timedelta(minutes=duration + buffer))
        self._appts[key] = (start, duration)

    def _add_hold(self, key: uuid.UUID, patient: uuid.UUID, start: datetime, minutes: int, expires: datetime) -> None:
        end = start + timedelta(minutes=minutes)
        self.held.add(key, start, end)
        self._holds[key] = _Held(patient, start, end, expires)

    def _apply(self, event: events.Event) -> bool:
        """Apply one event; False when only a full reload can (a clinic closure)."""
        new = event.new
        if event.table_name == "appointments":
            key = event.record_id
            self.booked.remove(key)
            self._appts.pop(key, None)
            if new is not None and new["status"] != "cancelled":
                self._add_appointment(key, _ts(new["appointment_date"]), new["duration_minutes"],
                                      new["buffer_minutes"])
        elif event.table_name == "slot_reservations":
            self.held.remove(event.record_id)
            self._holds.pop(event.record_id, None)
            if new is not None:
                self._add_hold(event.record_id, _uuid(new["patient_id"]), _ts(new["slot_time"]),
                               new["duration_minutes"], _ts(new["expires_at"]))
        elif event.table_name == "dentists" and new is not None:
            self._set_schedule(new)
        else:
            return False
        self.version = event.version
        return True

    async def _catch_up(self, con: asyncpg.Connection, target: int) -> None:
        """Apply what others committed since our version (or reload on a gap).
        Their events reach subscribers through the feed, not from here."""
        if target <= self.version:
            return
        missed = await events.since(con, self.dentist_id, self.version)
        if [e.version for e in missed] != list(range(self.version + 1, target + 1)) \
                or not all(self._apply_one(e) for e in missed):
            await self._load(con)
        self._arm_timer()

    def _apply_one(self, event: events.Event) -> bool:
        return event.version == self.version + 1 and self._apply(event)

    async def _write(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `work` in a transaction under the dentist's row lock, then apply
        and publish the events it produced. A failed commit changes nothing."""
        try:
            async with self._pool.acquire() as con:
                async with con.transaction():
                    current = await con.fetchval(sql.LOCK, self.dentist_id)
                    if current is None:
                        raise errors.not_found("dentist", self.dentist_id)
                    await self._catch_up(con, current)
                    result = await work(con)
                    produced = await events.since(con, self.dentist_id, current)
        except db.DATA_ERRORS as exc:  # refused before commit: memory is as it was
            raise db.data_error(exc) from None
        await self._absorb(produced)
        return result

    async def _commit(self, decide: Callable[[], tuple[str, dict[str, Any]]],
                      answer: type[msgspec.Struct] | None, key: Idempotency | None = None) -> dict[str, Any] | None:
        """Decide from memory, then write with one call (`hub_write`) that
        succeeds only if nobody wrote for this dentist since our version. If
        somebody did (another process, psql), decide again under the row lock,
        after catching up, where nobody can get in first twice."""
        idem = None if key is None else {"user_key": key.user_key, "key": key.key, "request_hash": key.request_hash}

        async def call(con: asyncpg.Connection | None) -> _Outcome:
            op, args = decide()
            try:
                out = _OUTCOME.decode(
                    await self._writes.write(self.dentist_id, self.version, op, args, idem) if con is None
                    else await con.fetchval(sql.WRITE, self.dentist_id, self.version, op, args, idem))
            except asyncpg.ExclusionViolationError:  # memory was wrong; the database was not
                raise slot_unavailable("That time is already taken") from None
            except asyncpg.InsufficientPrivilegeError as exc:  # the caller's claims do not allow it (RLS)
                raise db.policy_refusal(exc) from None
            except asyncpg.UniqueViolationError as exc:
                if exc.table_name != "idempotency_keys":
                    raise
                raise errors.conflict("A request with this Idempotency-Key is already in progress") from None
            if out.missing:
                raise errors.not_found("dentist", self.dentist_id)
            if out.refused is not None:
                raise self._refusal(out.refused, args)
            return out

        try:
            out = await call(None)  # with other actors' writes: actors/batch.py
        except db.DATA_ERRORS as exc:
            raise db.data_error(exc) from None
        if out.stale is None:
            await self._absorb(out.events)
        else:
            out = await self._write(call)  # absorbs the events itself
        return None if answer is None else msgspec.structs.asdict(msgspec.json.decode(out.result, type=answer))

    def _refusal(self, code: str, args: dict[str, Any]) -> HubError:
        if code == "hold_limit":
            return errors.conflict(f"A patient may hold at most {self._rules.max_holds_per_patient} slots at once",
                                   limit=self._rules.max_holds_per_patient)
        if code == "dentist_cap":
            limit = self._rules.max_future_appointments_per_dentist
            return errors.conflict(f"A patient may have at most {limit} upcoming appointments with one dentist",
                                   limit=limit, rule="max_future_appointments_per_dentist")
        if code == "day_cap":
            limit = self._rules.max_appointments_per_day
            return errors.conflict(f"A patient may have at most {limit} appointments on one day",
                                   limit=limit, rule="max_appointments_per_day")
        if code == "max_age":
            return errors.conflict("The reservation has reached its maximum age; book it or let it go",
                                   max_age_seconds=self._rules.hold_max_age_seconds)
        return errors.not_found("reservation", args["hold_id"])

    async def _absorb(self, produced: list[events.Event]) -> None:
        """Apply the events our own write produced, then publish them."""
        for event in produced:
            if not self._apply(event):
                async with self._pool.acquire() as con:
                    await self._load(con)
        self._arm_timer()
        if produced:
            metrics.count_changes(produced)
            self._publish(produced)  # the fast path to this process's subscribers
            await self._offer_freed(produced)

    async def _offer_freed(self, produced: list[events.Event]) -> None:
        """Offer time our write freed to the waitlist, in a write of its own,
        within this turn. The write is already committed, so a failure here
        is logged, not answered; the next freeing write tries again."""
        now = datetime.now(UTC)
        spans = [(a, b) for a, b in offers.freed(produced, now)
                 if not any(s <= a and b <= e for s, e in map(self.booked.get, self.booked.overlapping(a, b)))]
        if not spans or self.schedule is None:
            return
        try:
            waiting = await self._pool.fetch(offers.WAITING, self.dentist_id, now.date() - timedelta(days=1))
            if not waiting:
                return

            async def offer(con: asyncpg.Connection) -> Any:
                assert self.schedule is not None
                found = offers.candidates(self.schedule, self._catalog, spans, waiting, self._taken, now)
                return await con.fetchval(offers.OFFER, self.dentist_id, found,
                                          self._rules.waitlist_offer_minutes) if found else None

            done = await self._write(offer)
        except (HubError, *db.ERRORS):
            log.warning("waitlist offer pass failed for dentist %s", self.dentist_id, exc_info=True)
            return
        if done is not None:
            metrics.count_offers(done)

    def _taken(self, start: datetime, end: datetime) -> bool:
        return self.booked.overlaps(start, end) or bool(self._blocking_holds(start, end, None, datetime.now(UTC)))

    # ---- the turn ----------------------------------------------------------

    async def receive(self, msg: Any) -> Any:
        await self._reload()
        try:
            return await self._receive(msg)
        except Exception as exc:
            error = db.as_hub_error(exc)
            if error is None:
                raise
            if error.temporary:  # the database went away mid-turn: a write's outcome is unknown
                self._stale = True
            raise error from None

    async def _receive(self, msg: Any) -> Any:
        if self.schedule is None:
            self.stop(StopReason.IDLE)  # nothing to serve; a later activation re-checks
            raise errors.not_found("dentist", self.dentist_id)
        match msg:
            case GetSlots():
                return self._slots(msg)
            case Hold():
                return await self._hold(msg)
            case ExtendHold():
                return await self._commit(lambda: self._extend(msg), sql.SlotReservation)
            case ReleaseHold():
                return await self._commit(lambda: self._release(msg), None)
            case Book():
                return await self._idempotent(msg.idempotency, lambda: self._book(msg))
            case ChangeAppointment():
                return await self._write(lambda con: self._change(con, msg))
            case SetSchedule():
                return await self._write(lambda con: self._set(con, msg))
            case ExpireHolds():
                return await self._expire()
            case Sync(version=version):
                async with self._pool.acquire() as con:
                    await self._catch_up(con, version)
                return self.version
        raise TypeError(f"unknown message {type(msg).__name__}")

    # ---- reads ---------------------------------------------------------------

    def _blocking_holds(self, start: datetime, end: datetime, patient: uuid.UUID | None,
                        now: datetime) -> list[uuid.UUID]:
        return [k for k in self.held.overlapping(start, end)
                if self._holds[k].patient_id != patient and self._holds[k].expires_at > now]

    def _slots(self, msg: GetSlots) -> list[dict[str, Any]]:
        """The seed's TimeSlots with a FHIR slot status; a viewer's own holds are free to them."""
        assert self.schedule is not None
        now = datetime.now(UTC)
        buffer = timedelta(minutes=msg.buffer)
        out = []
        for s in self.schedule.slots(msg.day_from, msg.day_to, now=now, duration_minutes=msg.duration):
            end = s.end + buffer
            if self.booked.overlaps(s.start, end):
                status = "busy"
            elif self._blocking_holds(s.start, end, msg.viewer, now):
                status = "busy-tentative"
            else:
                status = "free" if s.available else "busy-unavailable"
            out.append({"start": s.start, "end": s.end, "available": status == "free", "status": status,
                        "dentist_id": self.dentist_id})
        return out

    def _check_slot(self, start: datetime, minutes: int, blocked_minutes: int, patient: uuid.UUID,
                    ignore: uuid.UUID | None = None) -> list[uuid.UUID]:
        """Raise unless [start, start+blocked) is bookable by `patient`; returns
        the patient's own holds it covers (a booking consumes them)."""
        assert self.schedule is not None
        now = datetime.now(UTC)
        try:
            self.schedule.check_bookable(start, minutes, now)
        except ScheduleError as exc:
            raise errors.invalid(str(exc), field="appointment_date" if exc.field == "slot_time" else exc.field) from None
        end = start + timedelta(minutes=blocked_minutes)
        if any(k != ignore for k in self.booked.overlapping(start, end)):
            raise slot_unavailable("That time is already booked", slot_time=start.isoformat())
        blocking = self._blocking_holds(start, end, patient, now)
        if blocking:
            frees = max(self._holds[k].expires_at for k in blocking)
            raise slot_unavailable("That time is held by another patient", slot_time=start.isoformat(),
                                   retry_after_seconds=max(1, int((frees - now).total_seconds() + 0.999)))
        return [k for k in self.held.overlapping(start, end) if self._holds[k].patient_id == patient]

    # ---- writes ----------------------------------------------------------------

    async def _idempotent(self, key: Idempotency | None, act: Callable[[], Awaitable[dict[str, Any]]]) -> dict:
        """Replay the first answer to a retried request (same caller and key)."""
        if key is not None:
            stored = await self._pool.fetchrow(sql.IDEMPOTENT_GET, key.user_key, key.key)
            if stored is not None:
                if stored["request_hash"] != key.request_hash:
                    raise errors.conflict("Idempotency-Key was already used with a different request")
                return {**stored["response"], "_replayed": True}
        return await act()

    def _hold_args(self, hold_id: uuid.UUID, claims: str | None) -> dict[str, Any]:
        return {"hold_id": hold_id, "ttl": self._rules.hold_ttl_seconds, "max_age": self._rules.hold_max_age_seconds,
                "claims": claims}

    async def _hold(self, msg: Hold) -> dict[str, Any]:
        kind = self._catalog.get(msg.appointment_type)

        def decide() -> tuple[str, dict[str, Any]]:
            own = self._check_slot(msg.start, kind.duration_minutes, kind.blocked_minutes, msg.patient_id)
            now = datetime.now(UTC)
            own = [k for k in own if self._holds[k].expires_at > now]  # an expired one is released by hub_hold
            end = msg.start + timedelta(minutes=kind.blocked_minutes)
            for key in own:  # holding your own held slot again just refreshes it
                if (self._holds[key].start, self._holds[key].end) == (msg.start, end):
                    return "extend", self._hold_args(key, msg.claims)
            if own:
                raise slot_unavailable("You already hold an overlapping slot; release it first",
                                       reservation_ids=[str(k) for k in own])
            return "hold", {"patient_id": msg.patient_id, "start": msg.start, "minutes": kind.blocked_minutes,
                            "type": kind.name, "ttl": self._rules.hold_ttl_seconds, "created_by": msg.created_by,
                            "max_holds": self._rules.max_holds_per_patient, "claims": msg.claims}

        return await self._idempotent(msg.idempotency,
                                      lambda: self._commit(decide, sql.SlotReservation, msg.idempotency))

    def _owned_hold(self, hold_id: uuid.UUID, patient: uuid.UUID | None) -> _Held:
        held = self._holds.get(hold_id)
        if held is None:
            raise errors.not_found("reservation", hold_id)
        if patient is not None and held.patient_id != patient:
            raise errors.forbidden("That reservation belongs to another patient")
        return held

    def _extend(self, msg: ExtendHold) -> tuple[str, dict[str, Any]]:
        if self._owned_hold(msg.hold_id, msg.patient_id).expires_at <= datetime.now(UTC):
            raise errors.not_found("reservation", msg.hold_id)
        return "extend", self._hold_args(msg.hold_id, msg.claims)

    def _release(self, msg: ReleaseHold) -> tuple[str, dict[str, Any]]:
        self._owned_hold(msg.hold_id, msg.patient_id)
        return "release", {"hold_id": msg.hold_id, "claims": msg.claims}

    def _notice(self, patient: uuid.UUID, by: uuid.UUID | None, kind: str, appointment_id: uuid.UUID,
                start: datetime, appointment_type: str, status: str) -> list[dict[str, Any]]:
        """The patient's notification of a change someone else made to their appointment."""
        if by == patient:
            return []
        when = start.isoformat()
        return [{"user_id": patient, "kind": f"appointment_{kind}", "title": _NOTICES[kind],
                 "body": f"{appointment_type} on {when}",
                 "data": {"appointment_id": str(appointment_id), "dentist_id": str(self.dentist_id),
                          "appointment_date": when, "status": status}}]

    async def _book(self, msg: Book) -> dict[str, Any]:
        kind = self._catalog.get(msg.appointment_type)
        appointment_id = uuid.uuid4()  # chosen here so the patient's notification can name it

        def decide() -> tuple[str, dict[str, Any]]:
            own = self._check_slot(msg.start, kind.duration_minutes, kind.blocked_minutes, msg.patient_id)
            if msg.reservation_id is not None and msg.reservation_id not in own:
                self._owned_hold(msg.reservation_id, msg.patient_id)  # NOT_FOUND / FORBIDDEN first
                raise errors.invalid("The reservation is for another time", field="reservation_id")
            caps = self._rules.caps() if msg.capped else None
            return "book", {
                **({"caps": caps} if caps else {}), "id": appointment_id, "consume": own,
                "patient_id": msg.patient_id, "start": msg.start,
                "duration": kind.duration_minutes, "buffer": kind.buffer_minutes, "type": kind.name,
                "notes": msg.notes, "patient_notes": msg.patient_notes, "medical_history": msg.medical_history,
                "created_by": msg.created_by, "claims": msg.claims,
                "notices": self._notice(msg.patient_id, msg.created_by, "booked", appointment_id, msg.start,
                                        kind.name, "pending")}

        return await self._commit(decide, sql.Appointment, msg.idempotency)

    async def _change(self, con: asyncpg.Connection, msg: ChangeAppointment) -> dict[str, Any]:
        row = await con.fetchrow(sql.APPOINTMENT_FOR_UPDATE, msg.appointment_id)
        if row is None or row["dentist_id"] != self.dentist_id:
            raise errors.not_found("appointment", msg.appointment_id)
        current = dict(row)
        sets: dict[str, Any] = {}
        kinds: list[str] = []
        consume: list[uuid.UUID] = []
        status = msg.status
        # Repeating the current status is a no-op, except cancelling twice, which the caller should hear about.
        if status is not None and (status != current["status"] or status == "cancelled"):
            if not msg.staff and status != "cancelled":
                raise errors.forbidden("Patients may only cancel or reschedule their appointments")
            if (current["status"], status) not in TRANSITIONS:
                raise errors.conflict(f"Cannot change status from {current['status']} to {status}",
                                      allowed=sorted(t for f, t in TRANSITIONS if f == current["status"]))
            if status == "cancelled":
                window = timedelta(hours=self._rules.cancellation_window_hours)
                if not msg.staff and current["appointment_date"] - datetime.now(UTC) < window:
                    raise HubError(ErrorCode.CANCELLATION_WINDOW_EXPIRED,
                                   f"Appointments can only be cancelled more than "
                                   f"{self._rules.cancellation_window_hours} hours ahead; please call the clinic",
                                   {"cancellation_window_hours": self._rules.cancellation_window_hours})
                sets.update(cancelled_at=datetime.now(UTC), cancelled_by=msg.by, cancellation_reason=msg.reason)
            sets["status"] = status
            kinds.append(status if status in _NOTICES else "")
        elif status is None and current["status"] in ("cancelled", "completed", "no_show") and (
                msg.start is not None or msg.appointment_type is not None):
            raise errors.conflict(f"A {current['status']} appointment cannot be changed")
        if msg.start is not None or msg.appointment_type is not None:
            kind = self._catalog.get(msg.appointment_type or current["appointment_type"])
            start = msg.start or current["appointment_date"]
            if (start, kind.duration_minutes, kind.buffer_minutes) != (
                    current["appointment_date"], current["duration_minutes"], current["buffer_minutes"]):
                own = self._check_slot(start, kind.duration_minutes, kind.blocked_minutes, current["patient_id"],
                                       ignore=msg.appointment_id)
                caps = None if msg.staff else self._rules.caps()
                if caps and (refused := await con.fetchval(sql.CAPS, current["patient_id"], self.dentist_id, start,
                                                           msg.appointment_id, caps)):
                    raise self._refusal(refused, {})
                consume = own  # the patient's own holds on the new time go with the move
                kinds.append("rescheduled")
            sets.update(appointment_date=start, appointment_type=kind.name,
                        duration_minutes=kind.duration_minutes, buffer_minutes=kind.buffer_minutes)
        if msg.notes_set:
            sets["notes"] = msg.notes
        if not sets:
            return current
        assignments = ", ".join(f"{col} = ${i}" for i, col in enumerate(sets, start=2))
        try:
            async with db.claims_scope(con, msg.claims):  # the caller's policies bound the change (RLS)
                for key in consume:
                    await con.execute(sql.DELETE_HOLD, key)
                row = await con.fetchrow(
                    f"UPDATE public.appointments SET {assignments} WHERE id = $1 RETURNING {sql.APPOINTMENT_COLUMNS}",
                    msg.appointment_id, *sets.values())
                if row is None:  # their policies hid the row from the UPDATE
                    raise db.policy_refusal(f"UPDATE of appointment {msg.appointment_id}")
        except asyncpg.ExclusionViolationError:
            raise slot_unavailable("That time is already booked") from None
        updated = dict(row)
        for kind_name in filter(None, kinds):
            for n in self._notice(current["patient_id"], msg.by, kind_name, updated["id"],
                                  updated["appointment_date"], updated["appointment_type"], updated["status"]):
                await con.execute(sql.NOTIFY_PATIENT, *n.values())
        return updated

    async def _set(self, con: asyncpg.Connection, msg: SetSchedule) -> dict[str, Any]:
        try:
            schedule = Schedule.from_json(msg.available_times, timezone=msg.timezone, slot_minutes=msg.slot_minutes,
                                          overrides=msg.overrides, closures=self._closures)
        except ScheduleError as exc:
            raise errors.invalid(str(exc), field=exc.field) from None
        now = datetime.now(UTC)
        outside = [{"id": str(key), "appointment_date": start.isoformat(), "duration_minutes": minutes}
                   for key, (start, minutes) in sorted(self._appts.items(), key=lambda kv: kv[1][0])
                   if start >= now and not _within_hours(schedule, start, minutes)]
        if outside and not msg.force:
            raise errors.conflict("The new hours would leave booked appointments outside working hours; "
                                  "pass force=true to keep them anyway", appointments=outside)
        async with db.claims_scope(con, msg.claims):  # the caller's policies bound the change (RLS)
            if await con.fetchval(sql.SET_SCHEDULE, self.dentist_id, msg.available_times, msg.overrides,
                                  msg.timezone, msg.slot_minutes) is None:
                raise db.policy_refusal(f"UPDATE of dentist {self.dentist_id}'s hours")
        return {"conflicts": outside}

    async def _expire(self) -> int:
        now = datetime.now(UTC)
        if not any(h.expires_at <= now for h in self._holds.values()):
            self._arm_timer()
            return 0
        return len(await self._write(lambda con: con.fetch("SELECT id FROM public.expire_holds($1)",
                                                             self.dentist_id)))

    def _arm_timer(self) -> None:
        """Wake at the earliest hold expiry, so holds free within a second of it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._holds:
            return
        due = min(h.expires_at for h in self._holds.values())
        delay = max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.05
        self._timer = asyncio.get_running_loop().call_later(delay, self._wake)

    def _wake(self) -> None:
        self._timer = None
        if self.alive and self.stop_reason is None:
            try:
                self.tell(ExpireHolds())
            except HubError:  # a full mailbox: try again shortly
                self._timer = asyncio.get_running_loop().call_later(0.2, self._wake)


def _within_hours(schedule: Schedule, start: datetime, minutes: int) -> bool:
    """Inside one working interval (of its local day, or one crossing midnight)."""
    end = start + timedelta(minutes=minutes)
    day = start.astimezone(ZoneInfo(schedule.timezone)).date()
    return any(ws <= start and end <= we for d in (day - timedelta(days=1), day)
               for ws, we in schedule.working_intervals(d))
