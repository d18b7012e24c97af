"""SQL of the dentist actor, and the shapes of the rows its writes answer with.

Every write runs under the dentist's row lock.
"""

import uuid
from datetime import datetime

import msgspec

APPOINTMENT_COLUMNS = (
    "id, patient_id, dentist_id, appointment_date, duration_minutes, buffer_minutes, ends_at, appointment_type, "
    "status, notes, patient_notes, medical_history, created_by, cancelled_at, cancelled_by, cancellation_reason, "
    "created_at, updated_at")

HOLD_COLUMNS = "id, dentist_id, patient_id, slot_time, duration_minutes, appointment_type, expires_at, created_at"

DENTIST = """
SELECT id, timezone, available_times, date_overrides, slot_minutes, min_notice_minutes, horizon_days, version
FROM public.dentists WHERE id = $1
"""

CLOSURES = "SELECT day FROM public.clinic_closures WHERE day >= $1::date - 1"

# Blocking appointments from yesterday on: anything earlier can't collide with a bookable slot.
BOOKED = """
SELECT id, patient_id, appointment_date, duration_minutes, buffer_minutes, status
FROM public.appointments
WHERE dentist_id = $1 AND status <> 'cancelled' AND ends_at > $2
"""

HOLDS = f"SELECT {HOLD_COLUMNS} FROM public.slot_reservations WHERE dentist_id = $1 AND expires_at > now()"

# Taken first in every write: serializes all writers of this dentist on every
# hub process, and tells the actor whether its memory is current.
LOCK = "SELECT version FROM public.dentists WHERE id = $1 FOR UPDATE"

DELETE_HOLD = "DELETE FROM public.slot_reservations WHERE id = $1"

APPOINTMENT_FOR_UPDATE = f"SELECT {APPOINTMENT_COLUMNS} FROM public.appointments WHERE id = $1 FOR UPDATE"

SET_SCHEDULE = """
UPDATE public.dentists
SET available_times = $2, date_overrides = $3, timezone = $4, slot_minutes = $5
WHERE id = $1
"""

NOTIFY_PATIENT = """
INSERT INTO public.notifications (user_id, kind, title, body, data) VALUES ($1, $2, $3, $4, $5)
"""

IDEMPOTENT_GET = "SELECT request_hash, status, response FROM public.idempotency_keys WHERE user_key = $1 AND key = $2"

# Hold, extend, release and book: one call each (sql/0004_write_calls.up.sql),
# answering JSON that the actor decodes into the structs below.
WRITE = "SELECT public.hub_write($1, $2, $3, $4, $5)::text"


class SlotReservation(msgspec.Struct):
    """A hold as writes answer it (the seed's SlotReservation)."""
    id: uuid.UUID
    dentist_id: uuid.UUID
    patient_id: uuid.UUID
    slot_time: datetime
    duration_minutes: int
    appointment_type: str | None
    expires_at: datetime
    created_at: datetime


class Appointment(msgspec.Struct):
    """An appointment row as writes answer it."""
    id: uuid.UUID
    patient_id: uuid.UUID
    dentist_id: uuid.UUID
    appointment_date: datetime
    duration_minutes: int
    buffer_minutes: int
    ends_at: datetime
    appointment_type: str
    status: str
    notes: str | None
    patient_notes: str | None
    medical_history: str | None
    created_by: uuid.UUID | None
    cancelled_at: datetime | None
    cancelled_by: uuid.UUID | None
    cancellation_reason: str | None
    created_at: datetime
    updated_at: datetime


# Why the patient may not have this appointment (sql/0007), or NULL.
CAPS = "SELECT public.hub_appointment_cap($1, $2, $3, $4, $5)"
