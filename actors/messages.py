"""What the dentist actor is asked to do. Internal messages, built by the
controllers after validation and authorization, never decoded from clients."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime

_frozen = dataclasses.dataclass(frozen=True, slots=True, kw_only=True)


@_frozen
class Idempotency:
    user_key: str       # the caller: a retry counts only from the same caller
    key: str
    request_hash: str   # the same key with another body is a conflict


@_frozen
class GetSlots:
    day_from: date
    day_to: date
    duration: int | None = None          # minutes; the dentist's slot length by default
    buffer: int = 0
    viewer: uuid.UUID | None = None       # whose own holds count as free


@_frozen
class Hold:
    patient_id: uuid.UUID
    start: datetime
    appointment_type: str | None = None
    created_by: uuid.UUID | None = None
    idempotency: Idempotency | None = None
    claims: str | None = None             # the caller's JWT claims: the write runs under them (RLS)


@_frozen
class ExtendHold:
    hold_id: uuid.UUID
    patient_id: uuid.UUID | None          # None: staff, who may touch any hold
    claims: str | None = None             # the caller's JWT claims: the write runs under them (RLS)


@_frozen
class ReleaseHold:
    hold_id: uuid.UUID
    patient_id: uuid.UUID | None
    claims: str | None = None             # the caller's JWT claims: the write runs under them (RLS)


@_frozen
class Book:
    patient_id: uuid.UUID
    start: datetime
    appointment_type: str | None = None
    notes: str | None = None
    patient_notes: str | None = None
    medical_history: str | None = None
    reservation_id: uuid.UUID | None = None
    created_by: uuid.UUID | None = None
    idempotency: Idempotency | None = None
    claims: str | None = None             # the caller's JWT claims: the write runs under them (RLS)
    capped: bool = True  # the patient's own booking: the appointment caps apply (staff bookings are exempt)


@_frozen
class ChangeAppointment:
    appointment_id: uuid.UUID
    by: uuid.UUID | None
    staff: bool                           # admin or the appointment's dentist
    status: str | None = None
    start: datetime | None = None
    appointment_type: str | None = None
    notes: str | None = None
    notes_set: bool = False
    reason: str | None = None
    claims: str | None = None             # the caller's JWT claims: the write runs under them (RLS)


@_frozen
class SetSchedule:
    available_times: dict[str, str]
    overrides: dict[str, str]
    timezone: str
    slot_minutes: int
    force: bool = False
    claims: str | None = None             # the caller's JWT claims: the write runs under them (RLS)


@_frozen
class ExpireHolds:
    pass


@_frozen
class CatchUp:
    """Another process (or psql) committed up to `version`: apply what it wrote to memory."""
    version: int
