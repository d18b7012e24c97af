"""SQL of the dentist actor. Every write runs under the dentist's row lock;
the rows it answers with are hub/rows.py's."""

from hub import rows

APPOINTMENT_COLUMNS = rows.columns(rows.Appointment)
HOLD_COLUMNS = rows.columns(rows.SlotReservation)

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
RETURNING id
"""

NOTIFY_PATIENT = """
INSERT INTO public.notifications (user_id, kind, title, body, data) VALUES ($1, $2, $3, $4, $5)
"""

IDEMPOTENT_GET = "SELECT request_hash, status, response FROM public.idempotency_keys WHERE user_key = $1 AND key = $2"

# Hold, extend, release and book: one call each (sql/0004_write_calls.up.sql),
# answering JSON that the actor decodes into hub/rows.py's structs.
WRITE = "SELECT public.hub_write($1, $2, $3, $4, $5)::text"


# Why the patient may not have this appointment (sql/0007), or NULL.
CAPS = "SELECT public.hub_appointment_cap($1, $2, $3, $4, $5)"
