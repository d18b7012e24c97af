"""SQL of the dentist actor: what it loads its memory from, and its one
write call. Every write takes the dentist's row lock first; the rows it
answers with are hub/rows.py's."""

from typing import Any

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

# The dentist's row lock, which every write takes first (hub_write does):
# it serializes all writers of this dentist on every hub process, and its
# version tells the actor whether its memory is current. Taken here by
# `_commit`'s fallback, to decide again under it.
LOCK = "SELECT version FROM public.dentists WHERE id = $1 FOR UPDATE"

# The row an appointment change is decided on; locked when decided under the row lock.
APPOINTMENT = f"SELECT {APPOINTMENT_COLUMNS} FROM public.appointments WHERE id = $1"
APPOINTMENT_FOR_UPDATE = APPOINTMENT + " FOR UPDATE"

IDEMPOTENT_GET = "SELECT request_hash, status, response FROM public.idempotency_keys WHERE user_key = $1 AND key = $2"

# Every write: one call (sql/0004; its ops as of sql/0015), answering JSON
# that the actor decodes into hub/rows.py's structs.
WRITE = "SELECT public.hub_write($1, $2, $3, $4, $5)::text"

# What the actor decided to write: a hub_write op and its args; None: nothing.
Decision = tuple[str, dict[str, Any]] | None
