"""The dentist actor's changes made in a Python transaction under the row
lock (`DentistActor._write` runs them): an appointment's status, time, type
or notes, and the dentist's hours. A part of `DentistActor`, kept apart."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from actors import dentist_sql as sql
from actors.dentist_memory import DentistMemory
from actors.messages import ChangeAppointment, SetSchedule
from actors.rules import NOTICES, TRANSITIONS, Rules, notice, slot_unavailable
from actors.schedule import Schedule, ScheduleError
from hub import db, errors
from hub.catalog import Catalog

UTC = timezone.utc


class Changes(DentistMemory):
    """`DentistActor`'s status, reschedule and schedule changes."""

    _rules: Rules
    _catalog: Catalog

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
                    raise self._rules.cancellation_too_late()
                sets.update(cancelled_at=datetime.now(UTC), cancelled_by=msg.by, cancellation_reason=msg.reason)
            sets["status"] = status
            kinds.append(status if status in NOTICES else "")
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
                    raise self._rules.refusal(refused, {})
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
            for n in notice(self.dentist_id, current["patient_id"], msg.by, kind_name, updated["id"],
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
                   if start >= now and not within_hours(schedule, start, minutes)]
        if outside and not msg.force:
            raise errors.conflict("The new hours would leave booked appointments outside working hours; "
                                  "pass force=true to keep them anyway", appointments=outside)
        async with db.claims_scope(con, msg.claims):  # the caller's policies bound the change (RLS)
            if await con.fetchval(sql.SET_SCHEDULE, self.dentist_id, msg.available_times, msg.overrides,
                                  msg.timezone, msg.slot_minutes) is None:
                raise db.policy_refusal(f"UPDATE of dentist {self.dentist_id}'s hours")
        return {"conflicts": outside}



def within_hours(schedule: Schedule, start: datetime, minutes: int) -> bool:
    """Inside one working interval (of its local day, or one crossing midnight)."""
    end = start + timedelta(minutes=minutes)
    day = start.astimezone(ZoneInfo(schedule.timezone)).date()
    return any(ws <= start and end <= we for d in (day - timedelta(days=1), day)
               for ws, we in schedule.working_intervals(d))
