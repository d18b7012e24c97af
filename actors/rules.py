"""The dentist's booking rules that are not about time: limits, status
transitions, the patient's notifications, and how a refusal reads."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from hub import errors
from hub.config import Settings
from hub.errors import ErrorCode, HubError

# Status changes staff may make; patients may only cancel (DESIGN: one explicit table).
TRANSITIONS = {
    ("pending", "confirmed"), ("confirmed", "completed"),
    ("pending", "cancelled"), ("confirmed", "cancelled"), ("confirmed", "no_show"),
}
NOTIFICATION_TITLES = {"booked": "Your appointment was booked", "confirmed": "Your appointment was confirmed",
           "rescheduled": "Your appointment was rescheduled", "cancelled": "Your appointment was cancelled"}


_SETTINGS = {f.name: f.default for f in dataclasses.fields(Settings)}


@dataclasses.dataclass(frozen=True, slots=True)
class Rules:
    """The booking rules of settings that an actor needs; defaults are Settings'."""

    hold_ttl_seconds: int = _SETTINGS["hold_ttl_seconds"]
    hold_max_age_seconds: int = _SETTINGS["hold_max_age_seconds"]
    max_holds_per_patient: int = _SETTINGS["max_holds_per_patient"]
    cancellation_window_hours: int = _SETTINGS["cancellation_window_hours"]
    max_future_appointments_per_dentist: int = _SETTINGS["max_future_appointments_per_dentist"]  # 0: no cap
    max_appointments_per_day: int = _SETTINGS["max_appointments_per_day"]
    waitlist_offer_minutes: int = _SETTINGS["waitlist_offer_minutes"]

    @classmethod
    def of(cls, settings: Settings) -> Rules:
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})

    def caps(self) -> dict[str, int] | None:
        """The appointment caps for a patient's own booking (sql/0007), None when off."""
        if not (self.max_future_appointments_per_dentist or self.max_appointments_per_day):
            return None
        return {"per_dentist": self.max_future_appointments_per_dentist, "per_day": self.max_appointments_per_day}

    def refusal(self, code: str, args: dict[str, Any]) -> HubError:
        """The error for a rule the database refused a write by (sql/0004, sql/0007, sql/0015)."""
        if code == "hold_limit":
            return errors.conflict(f"A patient may hold at most {self.max_holds_per_patient} slots at once",
                                   limit=self.max_holds_per_patient)
        if code == "dentist_cap":
            limit = self.max_future_appointments_per_dentist
            return errors.conflict(f"A patient may have at most {limit} upcoming appointments with one dentist",
                                   limit=limit, rule="max_future_appointments_per_dentist")
        if code == "day_cap":
            limit = self.max_appointments_per_day
            return errors.conflict(f"A patient may have at most {limit} appointments on one day",
                                   limit=limit, rule="max_appointments_per_day")
        if code == "appointment_gone":  # moved to another dentist since the actor read it
            return errors.not_found("appointment", args["id"])
        if code == "max_age":
            return errors.conflict("The reservation has reached its maximum age; book it or let it go",
                                   max_age_seconds=self.hold_max_age_seconds)
        return errors.not_found("reservation", args["hold_id"])

    def cancellation_too_late(self) -> HubError:
        return HubError(ErrorCode.CANCELLATION_WINDOW_EXPIRED,
                        f"Appointments can only be cancelled more than {self.cancellation_window_hours} hours "
                        f"ahead; please call the clinic", {"cancellation_window_hours": self.cancellation_window_hours})


def slot_unavailable(message: str, **details: Any) -> HubError:
    return HubError(ErrorCode.SLOT_UNAVAILABLE, message, details or None)


def notifications(dentist_id: uuid.UUID, patient: uuid.UUID, by: uuid.UUID | None, kind: str,
           appointment_id: uuid.UUID, start: datetime, appointment_type: str, status: str) -> list[dict[str, Any]]:
    """The patient's notification of a change someone else made to their appointment
    (none when they made it themselves): rows for `public.notifications`."""
    if by == patient:
        return []
    when = start.isoformat()
    return [{"user_id": patient, "kind": f"appointment_{kind}", "title": NOTIFICATION_TITLES[kind],
             "body": f"{appointment_type} on {when}",
             "data": {"appointment_id": str(appointment_id), "dentist_id": str(dentist_id),
                      "appointment_date": when, "status": status}}]
