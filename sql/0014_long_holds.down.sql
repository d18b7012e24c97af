-- Holds longer than 480 minutes must be released (or expire) before this runs.
ALTER TABLE public.slot_reservations
  DROP CONSTRAINT IF EXISTS slot_reservations_duration_minutes_check,
  ADD CONSTRAINT slot_reservations_duration_minutes_check CHECK (duration_minutes BETWEEN 5 AND 480);
