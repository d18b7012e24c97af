"""The dentist actor's decisions about an existing appointment (its status,
time, type or notes), the dentist's hours, and the waitlist offers of time a
write freed. Decided in Python from memory, like a booking (a change also
reads the appointment's row first), and written through
`DentistActor._commit` as `hub_write`'s 'change', 'schedule' and 'offer' ops
(sql/0015). A part of `DentistActor`, kept apart."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable
from zoneinfo import ZoneInfo

import asyncpg

from actors import dentist_sql as sql
from actors import offers
from actors.dentist_sql import Decision
from actors.dentist_memory import DentistMemory
from actors.messages import ChangeAppointment, SetSchedule
from actors.rules import NOTIFICATION_TITLES, TRANSITIONS, Rules, notifications
from actors.schedule import Schedule, ScheduleError
from hub import db, errors, events, metrics, rows
from hub.catalog import Catalog
from hub.errors import HubError

log = logging.getLogger("hub.actors")
UTC = timezone.utc


class Changes(DentistMemory):
    """`DentistActor`'s status, reschedule and schedule changes, and waitlist offers."""

    _rules: Rules
    _catalog: Catalog
    _pool: asyncpg.Pool
    _commit: Callable[..., Awaitable[Any]]  # DentistActor's one write path

    async def _change(self, msg: ChangeAppointment) -> dict[str, Any]:
        unchanged: dict[str, Any] | None = None  # the row as read, when the change changes nothing

        async def decide(con: asyncpg.Connection | None) -> Decision:
            nonlocal unchanged
            # Read as it is now; a decision made again under the row lock reads it locked.
            row = await (self._pool.fetchrow(sql.APPOINTMENT, msg.appointment_id) if con is None
                         else con.fetchrow(sql.APPOINTMENT_FOR_UPDATE, msg.appointment_id))
            if row is None or row["dentist_id"] != self.dentist_id:
                raise errors.not_found("appointment", msg.appointment_id)
            current = dict(row)
            args = self._decide_change(msg, current)
            if not args:
                unchanged = current
                return None
            unchanged = None
            return "change", {"id": msg.appointment_id, "claims": msg.claims, **args}

        changed = await self._commit(decide, rows.Appointment, taken="That time is already booked")
        return unchanged if changed is None else changed

    def _decide_change(self, msg: ChangeAppointment, current: dict[str, Any]) -> dict[str, Any]:
        """The 'change' op's args but id and claims ({} for no change): the
        columns to set, the holds to consume, the caps and the notifications."""
        sets: dict[str, Any] = {}
        kinds: list[str] = []
        out: dict[str, Any] = {}
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
                    raise self._rules.cancellation_too_late()
                sets.update(cancelled_at=datetime.now(UTC), cancelled_by=msg.by, cancellation_reason=msg.reason)
            sets["status"] = status
            kinds.append(status if status in NOTIFICATION_TITLES else "")
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
                # A patient's own move counts against their caps, checked in the write (as a booking's).
                caps = None if msg.staff else self._rules.caps()
                if caps:
                    out.update(caps=caps, patient_id=current["patient_id"])
                out["consume"] = own  # the patient's own holds on the new time go with the move
                kinds.append("rescheduled")
            sets.update(appointment_date=start, appointment_type=kind.name,
                        duration_minutes=kind.duration_minutes, buffer_minutes=kind.buffer_minutes)
        if msg.notes_set:
            sets["notes"] = msg.notes
        if not sets:
            return {}
        after = {**current, **sets}
        out.update(set=sets, notices=[
            n for kind_name in filter(None, kinds)
            for n in notifications(self.dentist_id, current["patient_id"], msg.by, kind_name, msg.appointment_id,
                                   after["appointment_date"].astimezone(UTC), after["appointment_type"],
                                   after["status"])])
        return out

    async def _set(self, msg: SetSchedule) -> dict[str, Any]:
        conflicts: list[dict[str, Any]] = []

        def decide(con: asyncpg.Connection | None) -> Decision:
            try:
                schedule = Schedule.from_json(msg.available_times, timezone=msg.timezone,
                                              slot_minutes=msg.slot_minutes, overrides=msg.overrides,
                                              closures=self._closures)
            except ScheduleError as exc:
                raise errors.invalid(str(exc), field=exc.field) from None
            now = datetime.now(UTC)
            outside = [{"id": str(key), "appointment_date": start.isoformat(), "duration_minutes": minutes}
                       for key, (start, minutes) in sorted(self._appts.items(), key=lambda kv: kv[1][0])
                       if start >= now and not within_hours(schedule, start, minutes)]
            if outside and not msg.force:
                raise errors.conflict("The new hours would leave booked appointments outside working hours; "
                                      "pass force=true to keep them anyway", appointments=outside)
            conflicts[:] = outside
            return "schedule", {"available_times": msg.available_times, "overrides": msg.overrides,
                                "timezone": msg.timezone, "slot_minutes": msg.slot_minutes, "claims": msg.claims}

        await self._commit(decide)
        return {"conflicts": conflicts}

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

            def decide(con: asyncpg.Connection | None) -> Decision:
                if self.schedule is None:
                    return None
                found = offers.candidates(self.schedule, self._catalog, spans, waiting, self._taken, now)
                return ("offer", {"candidates": found, "offer_minutes": self._rules.waitlist_offer_minutes}) \
                    if found else None

            done = await self._commit(decide, dict[str, Any])
        except (HubError, *db.ERRORS):
            log.warning("waitlist offer pass failed for dentist %s", self.dentist_id, exc_info=True)
            return
        if done is not None:
            metrics.count_offers(done)

    def _taken(self, start: datetime, end: datetime) -> bool:
        return self.booked.overlaps(start, end) or bool(self._blocking_holds(start, end, None, datetime.now(UTC)))


def within_hours(schedule: Schedule, start: datetime, minutes: int) -> bool:
    """Inside one working interval (of its local day, or one crossing midnight)."""
    end = start + timedelta(minutes=minutes)
    day = start.astimezone(ZoneInfo(schedule.timezone)).date()
    return any(ws <= start and end <= we for d in (day - timedelta(days=1), day)
               for ws, we in schedule.working_intervals(d))
