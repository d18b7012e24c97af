"""One actor per dentist: schedule, bookings and holds in memory, PostgreSQL first.

Memory changes only by applying committed events, whoever made them: one
code path for local writes, other processes and SQL typed by hand.

The write path. Every write goes through `_commit`: decide from memory, then
one `hub_write` call (sql/0004, with ops up to sql/0015: hold, extend,
release, book, change, schedule, expire, offer) that applies the decision
only if nobody wrote for this dentist since our version, and answers the
events it produced. Most writes are group-committed with other actors'
(actors/batch.py), which is where the booking throughput comes from. When
somebody did write first (another process, psql), `_commit` decides again
inside `_write`: under the dentist's row lock, after catching up, where
nobody can get in first twice; a decision that reads a row (an appointment
change) reads it again there, locked. `_write` is that fallback and nothing
else. Writes made for a user run under their claims inside the op (RLS).

Where each rule lives. Rules about one dentist's calendar (working hours,
notice, horizon, overlaps with bookings and others' holds, status
transitions, the cancellation window, appointments left outside new hours)
are checked here and in actors/changes.py, from memory, because the actor is
the only writer of its dentist and answers without a round trip; the
exclusion constraints are the backstop. Rules that span dentists (a
patient's hold limit, the appointment caps of bookings and of a patient's
own moves: sql/0004, sql/0007, sql/0015) are checked in PostgreSQL within
the write, because no one actor sees them; `Rules.refusal` words their
refusals. The patient's notifications of changes others made are built in
Python (`actors.rules.notifications`) and written by `hub_write` with the
change; those of expired holds and waitlist offers by their SQL functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, TypeVar

import asyncpg
import msgspec

from actors import dentist_sql as sql
from actors._base import Actor, StopReason
from actors.batch import GroupCommit
from actors.changes import Changes
from actors.rules import Rules, notifications, slot_unavailable
from actors.messages import (Book, CatchUp, ChangeAppointment, ExpireHolds, ExtendHold, GetSlots, Hold, Idempotency,
                             ReleaseHold, SetSchedule)
from actors.dentist_memory import Held
from actors.dentist_sql import Decision
from actors.schedule import IntervalSet, Schedule
from hub import db, errors, events, metrics, rows
from hub.catalog import Catalog
from hub.errors import HubError

log = logging.getLogger("hub.actors")
T = TypeVar("T")
UTC = timezone.utc

class _Outcome(msgspec.Struct, frozen=True):
    """What `hub_write` answers: the write's result and events, or why not."""
    stale: int | None = None       # somebody else wrote since our version: catch up to this one
    missing: bool = False          # the dentist is gone
    refused: str | None = None     # a rule only the database could check; nothing was written
    result: msgspec.Raw = msgspec.Raw(b"null")
    events: list[events.Event] = []


_OUTCOME = msgspec.json.Decoder(_Outcome)


class DentistActor(Changes, Actor):
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
        self._holds: dict[uuid.UUID, Held] = {}
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

    def idle(self) -> bool:
        """Holds need their expiry timer: an actor with holds is never passivated."""
        return not self._holds

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
        """`_commit`'s fallback: run `work` in a transaction under the
        dentist's row lock, after catching up, then apply and publish the
        events it produced. A failed commit changes nothing."""
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

    async def _commit(self, decide: Callable[[asyncpg.Connection | None], Decision | Awaitable[Decision]],
                      answer: Any = None, key: Idempotency | None = None,
                      taken: str = "That time is already taken") -> Any:
        """Every write: `decide(None)` from memory, then write with one call
        (`hub_write`) that succeeds only if nobody wrote for this dentist
        since our version. If somebody did (another process, psql), decide
        again under the row lock, after catching up (`decide(con)`: rows the
        decision reads are read on `con`, locked), where nobody can get in
        first twice. Answers the op's result decoded as `answer` (a struct as
        a dict); None without `answer`, or when the decision wrote nothing.
        `taken`: the refusal when the exclusion constraint caught an overlap."""
        idem = None if key is None else {"user_key": key.user_key, "key": key.key, "request_hash": key.request_hash}

        async def call(con: asyncpg.Connection | None) -> _Outcome | None:
            decision = decide(con)
            if inspect.isawaitable(decision):
                decision = await decision
            if decision is None:
                return None
            op, args = decision
            try:
                out = _OUTCOME.decode(
                    await self._writes.write(self.dentist_id, self.version, op, args, idem) if con is None
                    else await con.fetchval(sql.WRITE, self.dentist_id, self.version, op, args, idem))
            except asyncpg.ExclusionViolationError:  # memory was wrong; the database was not
                raise slot_unavailable(taken) from None
            except asyncpg.InsufficientPrivilegeError as exc:  # the caller's claims do not allow it (RLS)
                raise db.policy_refusal(exc) from None
            except asyncpg.UniqueViolationError as exc:
                if exc.table_name != "idempotency_keys":
                    raise
                raise errors.conflict("A request with this Idempotency-Key is already in progress") from None
            if out.missing:
                raise errors.not_found("dentist", self.dentist_id)
            if out.refused is not None:
                raise self._rules.refusal(out.refused, args)
            return out

        try:
            out = await call(None)  # with other actors' writes: actors/batch.py
        except db.DATA_ERRORS as exc:
            raise db.data_error(exc) from None
        if out is not None and out.stale is not None:
            out = await self._write(call)  # absorbs the events itself
        elif out is not None:
            await self._absorb(out.events)
        if out is None or answer is None:
            return None
        value = msgspec.json.decode(out.result, type=answer)
        return msgspec.structs.asdict(value) if isinstance(value, msgspec.Struct) else value

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
                return await self._commit(lambda con: self._extend(msg), rows.SlotReservation)
            case ReleaseHold():
                return await self._commit(lambda con: self._release(msg))
            case Book():
                return await self._idempotent(msg.idempotency, lambda: self._book(msg))
            case ChangeAppointment():
                return await self._change(msg)
            case SetSchedule():
                return await self._set(msg)
            case ExpireHolds():
                return await self._expire()
            case CatchUp(version=version):
                async with self._pool.acquire() as con:
                    await self._catch_up(con, version)
                return self.version
        raise TypeError(f"unknown message {type(msg).__name__}")

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

        def decide(con: asyncpg.Connection | None) -> Decision:
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
                                      lambda: self._commit(decide, rows.SlotReservation, msg.idempotency))

    def _owned_hold(self, hold_id: uuid.UUID, patient: uuid.UUID | None) -> Held:
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

    async def _book(self, msg: Book) -> dict[str, Any]:
        kind = self._catalog.get(msg.appointment_type)
        appointment_id = uuid.uuid4()  # chosen here so the patient's notification can name it

        def decide(con: asyncpg.Connection | None) -> Decision:
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
                "notices": notifications(self.dentist_id, msg.patient_id, msg.created_by, "booked",
                                         appointment_id, msg.start, kind.name, "pending")}

        return await self._commit(decide, rows.Appointment, msg.idempotency)

    async def _expire(self) -> int:
        now = datetime.now(UTC)
        if not any(h.expires_at <= now for h in self._holds.values()):
            self._arm_timer()
            return 0
        return await self._commit(lambda con: ("expire", {}), int)

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

