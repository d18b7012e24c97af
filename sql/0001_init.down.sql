-- Reverses 0001_init. Roles are cluster-wide and may serve other databases: kept.
DROP TABLE IF EXISTS public.realtime_events, public.notifications, public.slot_reservations,
  public.appointment_documents, public.appointments, public.dentists, public.user_roles,
  public.profiles CASCADE;
DROP FUNCTION IF EXISTS public.on_schedule_change(), public.on_row_change(),
  public.log_realtime_event(uuid, text, text, uuid, jsonb), public.touch_updated_at(),
  public.is_dentist_user(uuid, uuid), public.has_role(uuid, public.app_role),
  public.add_minutes(timestamptz, integer);
DROP TYPE IF EXISTS public.appointment_status, public.app_role;
DROP SCHEMA IF EXISTS auth CASCADE;
-- 0001 granted SELECT on every table of public, the migration record's included.
REVOKE SELECT ON public.schema_migrations FROM authenticated;
