"""What a dentist actor holds in memory, and the reads and checks made from it.

Memory changes only by applying committed events (`_apply`), whoever made
them. A part of `DentistActor`, kept apart.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

from actors.messages import GetSlots
from actors.rules import slot_unavailable
from actors.schedule import IntervalSet, Schedule, ScheduleError
from hub import errors, events

UTC = timezone.utc


@dataclasses.dataclass(slots=True)
class Held:
    patient_id: uuid.UUID
    start: datetime
    end: datetime
    expires_at: datetime


def _ts(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


class DentistMemory:
    """Booked and held time of one dentist, and their schedule."""

    dentist_id: uuid.UUID
    version: int
    schedule: Schedule | None
    _closures: list[date]
    booked: IntervalSet                              # appointment id -> blocked range
    _appts: dict[uuid.UUID, tuple[datetime, int]]    # id -> (start, duration)
    held: IntervalSet                                # hold id -> blocked range
    _holds: dict[uuid.UUID, Held]

    def _set_schedule(self, row: Any) -> None:
        self.schedule = Schedule.from_json(
            row["available_times"], timezone=row["timezone"], slot_minutes=row["slot_minutes"],
            overrides=row["date_overrides"], closures=self._closures,
            min_notice_minutes=row["min_notice_minutes"], horizon_days=row["horizon_days"])

    def _add_appointment(self, key: uuid.UUID, start: datetime, duration: int, buffer: int) -> None:
        self.booked.add(key, start, start + timedelta(minutes=duration + buffer))
        self._appts[key] = (start, duration)

    def _add_hold(self, key: uuid.UUID, patient: uuid.UUID, start: datetime, minutes: int, expires: datetime) -> None:
        end = start + timedelta(minutes=minutes)
        self.held.add(key, start, end)
        self._holds[key] = Held(patient, start, end, expires)

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
