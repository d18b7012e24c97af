"""SQL of the dentist actor. Every write runs under the dentist's row lock."""

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

INSERT_HOLD = f"""
INSERT INTO public.slot_reservations (dentist_id, patient_id, slot_time, duration_minutes, appointment_type,
                                      expires_at, created_by)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7)
RETURNING {HOLD_COLUMNS}
"""

EXTEND_HOLD = f"""
UPDATE public.slot_reservations
SET expires_at = least(now() + make_interval(secs => $2), created_at + make_interval(secs => $3))
WHERE id = $1 RETURNING {HOLD_COLUMNS}
"""

DELETE_HOLD = "DELETE FROM public.slot_reservations WHERE id = $1"

# Past-due holds of this dentist, including any left behind by a process that died.
EXPIRE_HOLDS = f"""
DELETE FROM public.slot_reservations WHERE dentist_id = $1 AND expires_at <= now()
RETURNING {HOLD_COLUMNS}
"""

INSERT_APPOINTMENT = f"""
INSERT INTO public.appointments (patient_id, dentist_id, appointment_date, duration_minutes, buffer_minutes,
                                 appointment_type, notes, patient_notes, medical_history, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING {APPOINTMENT_COLUMNS}
"""

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

IDEMPOTENT_PUT = """
INSERT INTO public.idempotency_keys (user_key, key, request_hash, status, response) VALUES ($1, $2, $3, $4, $5)
"""
