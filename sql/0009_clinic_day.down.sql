DROP TRIGGER IF EXISTS realtime_events_webhooks ON public.realtime_events;
DROP TRIGGER IF EXISTS appointments_planned ON public.appointments;
DROP FUNCTION IF EXISTS public.on_realtime_event_webhook();
DROP FUNCTION IF EXISTS public.on_appointment_planned();
DROP FUNCTION IF EXISTS public.send_due_reminders(integer, interval);
DROP FUNCTION IF EXISTS public.plan_reminders(uuid);
DROP FUNCTION IF EXISTS public.reminder_times(timestamptz, text);
DROP FUNCTION IF EXISTS public.webhook_emit(text, jsonb);
DROP TABLE IF EXISTS public.calendar_feeds, public.appointment_revisions, public.appointment_reminders, public.reminder_offsets,
  public.webhook_attempts, public.webhook_deliveries, public.webhook_messages, public.webhook_endpoints;
