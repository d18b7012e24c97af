-- A hold covers what its booking will block: the type's duration plus its
-- buffer, up to 480 + 120 minutes (the limits of appointment_types). 0001
-- capped holds at 480, so holding a 480-minute type with a buffer failed.
ALTER TABLE public.slot_reservations
  DROP CONSTRAINT IF EXISTS slot_reservations_duration_minutes_check,
  ADD CONSTRAINT slot_reservations_duration_minutes_check CHECK (duration_minutes BETWEEN 5 AND 600);
