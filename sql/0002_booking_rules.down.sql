-- Reverses 0002_booking_rules.
DROP TABLE IF EXISTS public.idempotency_keys, public.clinic_closures, public.appointment_types;
DROP FUNCTION IF EXISTS public.expire_holds(uuid, interval), public.on_catalog_change(), public.on_closures_change();
DROP TRIGGER IF EXISTS dentists_schedule_changed ON public.dentists;
ALTER TABLE public.dentists DROP COLUMN IF EXISTS min_notice_minutes, DROP COLUMN IF EXISTS horizon_days;
CREATE TRIGGER dentists_schedule_changed
  AFTER UPDATE OF available_times, date_overrides, timezone, slot_minutes ON public.dentists
  FOR EACH ROW
  WHEN (OLD.available_times IS DISTINCT FROM NEW.available_times
     OR OLD.date_overrides IS DISTINCT FROM NEW.date_overrides
     OR OLD.timezone IS DISTINCT FROM NEW.timezone
     OR OLD.slot_minutes IS DISTINCT FROM NEW.slot_minutes)
  EXECUTE FUNCTION public.on_schedule_change();
