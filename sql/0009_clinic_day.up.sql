-- The clinic's day: outgoing webhooks (a durable outbox filled in the
-- changing transaction), appointment reminders, and calendar feeds.

-- ---- webhooks -------------------------------------------------------------

CREATE TABLE public.webhook_endpoints (
  id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  url                  text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
  events               text[] NOT NULL CHECK (cardinality(events) > 0),
  description          text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
  secret               text NOT NULL,            -- whsec_<base64>; shown to the admin once
  enabled              boolean NOT NULL DEFAULT true,
  disabled_reason      text,
  consecutive_failures integer NOT NULL DEFAULT 0,  -- deliveries given up on in a row
  failing_since        timestamptz,               -- first failed attempt since the last success
  -- One hub process delivers to an endpoint at a time (per-endpoint order).
  lease_owner          text,
  lease_until          timestamptz NOT NULL DEFAULT '-infinity',
  created_by           uuid,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);

-- One row per webhook event; `id` is the Standard Webhooks `webhook-id`.
CREATE TABLE public.webhook_messages (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  type       text NOT NULL,
  data       jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The outbox: one row per (endpoint, message), delivered in id order per endpoint.
CREATE TABLE public.webhook_deliveries (
  id                bigserial PRIMARY KEY,
  endpoint_id       uuid NOT NULL REFERENCES public.webhook_endpoints(id) ON DELETE CASCADE,
  message_id        uuid NOT NULL REFERENCES public.webhook_messages(id) ON DELETE CASCADE,
  status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
  attempts          integer NOT NULL DEFAULT 0,
  next_attempt_at   timestamptz NOT NULL DEFAULT now(),
  last_status_code  integer,
  last_latency_ms   integer,
  last_error        text,
  replay_of         bigint,
  created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
  finished_at       timestamptz
);
CREATE INDEX webhook_deliveries_pending ON public.webhook_deliveries (endpoint_id, id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON public.webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_message ON public.webhook_deliveries (message_id);

CREATE TABLE public.webhook_attempts (
  id           bigserial PRIMARY KEY,
  delivery_id  bigint NOT NULL REFERENCES public.webhook_deliveries(id) ON DELETE CASCADE,
  attempted_at timestamptz NOT NULL DEFAULT now(),
  status_code  integer,
  latency_ms   integer NOT NULL,
  error        text
);
CREATE INDEX webhook_attempts_delivery ON public.webhook_attempts (delivery_id, id);

-- The one way to raise a webhook event, inside the transaction that makes the
-- change: queued for every enabled endpoint subscribed to its type, or not at
-- all. Any module adds an event type with one call:
--   PERFORM public.webhook_emit('waitlist.offered', jsonb_build_object(...));
CREATE FUNCTION public.webhook_emit(_type text, _data jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  _message uuid;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM public.webhook_endpoints WHERE enabled AND _type = ANY (events)) THEN
    RETURN;
  END IF;
  INSERT INTO public.webhook_messages (type, data) VALUES (_type, _data) RETURNING id INTO _message;
  INSERT INTO public.webhook_deliveries (endpoint_id, message_id)
  SELECT id, _message FROM public.webhook_endpoints WHERE enabled AND _type = ANY (events) ORDER BY id;
  PERFORM pg_notify('hub_webhooks', '');
END $$;

-- Every change already logged in realtime_events (appointments, holds,
-- schedules, closures; by the hub or by hand) becomes a webhook event in
-- the same transaction.
CREATE FUNCTION public.on_realtime_event_webhook() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  _new jsonb := NEW.payload -> 'new';
  _old jsonb := NEW.payload -> 'old';
  _type text;
  _data jsonb;
BEGIN
  IF jsonb_typeof(_new) = 'null' THEN _new := NULL; END IF;
  IF jsonb_typeof(_old) = 'null' THEN _old := NULL; END IF;
  IF NEW.table_name = 'appointments' THEN
    _data := coalesce(_new, _old);
    _type := CASE
      WHEN _old IS NULL THEN 'appointment.created'
      WHEN _new IS NULL THEN 'appointment.cancelled'
      WHEN _new ->> 'status' = 'cancelled' AND _old ->> 'status' IS DISTINCT FROM 'cancelled'
        THEN 'appointment.cancelled'
      ELSE 'appointment.updated' END;
    IF _old IS NOT NULL AND _new IS NOT NULL THEN
      _data := _data || jsonb_build_object('previous', jsonb_build_object(
        'status', _old -> 'status', 'appointment_date', _old -> 'appointment_date',
        'duration_minutes', _old -> 'duration_minutes', 'appointment_type', _old -> 'appointment_type'));
    END IF;
  ELSIF NEW.table_name = 'slot_reservations' THEN
    _data := coalesce(_new, _old) - 'created_by';
    _type := CASE
      WHEN _old IS NULL THEN 'hold.created'
      WHEN _new IS NULL AND (_old ->> 'expires_at')::timestamptz <= NEW.created_at THEN 'hold.expired'
      WHEN _new IS NULL THEN 'hold.released'
      END;  -- an extended hold (UPDATE) is no new event for integrators
  ELSIF NEW.table_name IN ('dentists', 'clinic_closures') THEN
    _type := 'availability.updated';
    _data := jsonb_build_object('dentist_id', NEW.dentist_id, 'reason', NEW.table_name);
    IF _new IS NOT NULL THEN
      _data := _data || jsonb_build_object(
        'timezone', _new -> 'timezone', 'slot_minutes', _new -> 'slot_minutes',
        'available_times', _new -> 'available_times', 'date_overrides', _new -> 'date_overrides',
        'min_notice_minutes', _new -> 'min_notice_minutes', 'horizon_days', _new -> 'horizon_days');
    END IF;
  END IF;
  IF _type IS NOT NULL THEN
    PERFORM public.webhook_emit(_type, _data);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER realtime_events_webhooks
  AFTER INSERT ON public.realtime_events
  FOR EACH ROW EXECUTE FUNCTION public.on_realtime_event_webhook();

-- ---- reminders ------------------------------------------------------------

-- The offsets in force, written by the hub from REMINDER_OFFSETS at start.
-- `days` counts calendar days back at the same local time in the dentist's
-- time zone (DST-correct); `minutes` is an exact duration before.
CREATE TABLE public.reminder_offsets (
  label   text PRIMARY KEY CHECK (label ~ '^[0-9]{1,4}[dhm]$'),
  days    integer NOT NULL DEFAULT 0 CHECK (days BETWEEN 0 AND 365),
  minutes integer NOT NULL DEFAULT 0 CHECK (minutes BETWEEN 0 AND 525600)
);
INSERT INTO public.reminder_offsets (label, days, minutes) VALUES ('1d', 1, 0), ('2h', 0, 120);

CREATE TABLE public.appointment_reminders (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  appointment_id uuid NOT NULL REFERENCES public.appointments(id) ON DELETE CASCADE,
  label          text NOT NULL,
  due_at         timestamptz NOT NULL,
  status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'missed')),
  sent_at        timestamptz,
  created_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (appointment_id, label, due_at)
);
CREATE INDEX appointment_reminders_due ON public.appointment_reminders (due_at) WHERE status = 'pending';

-- Plan (or re-plan) one appointment's reminders: pending ones are replaced,
-- sent ones stay as history; a cancelled or finished appointment gets none.
-- When each reminder of an appointment starting at _start falls due: `Nd` is
-- the same local time N days before, in the dentist's zone (so 23 or 25 hours
-- across a clock change), then minus the offset's minutes.
CREATE FUNCTION public.reminder_times(_start timestamptz, _tz text) RETURNS TABLE (label text, due_at timestamptz)
LANGUAGE sql STABLE SET search_path = public AS $$
  SELECT o.label, ((_start AT TIME ZONE _tz) - make_interval(days => o.days)) AT TIME ZONE _tz
                  - make_interval(mins => o.minutes)
  FROM public.reminder_offsets o
$$;

-- Re-plan an existing appointment (a reschedule, a status change, new offsets).
CREATE FUNCTION public.plan_reminders(_appointment_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  DELETE FROM public.appointment_reminders WHERE appointment_id = _appointment_id AND status = 'pending';
  INSERT INTO public.appointment_reminders (appointment_id, label, due_at)
  SELECT a.id, t.label, t.due_at
  FROM public.appointments a
  JOIN public.dentists d ON d.id = a.dentist_id
  CROSS JOIN LATERAL public.reminder_times(a.appointment_date, d.timezone) t
  WHERE a.id = _appointment_id AND a.status IN ('pending', 'confirmed') AND t.due_at > now()
  ON CONFLICT (appointment_id, label, due_at) DO NOTHING;
END $$;

-- Calendar feeds' SEQUENCE: how often an appointment's time, length, type or
-- status changed (RFC 5545 wants it to grow with each such change).
CREATE TABLE public.appointment_revisions (
  appointment_id uuid PRIMARY KEY REFERENCES public.appointments(id) ON DELETE CASCADE,
  sequence       integer NOT NULL DEFAULT 0
);

-- A new appointment is planned from its own row: nothing to delete or re-read
-- (this runs inside every booking's transaction).
CREATE FUNCTION public.on_appointment_planned() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.status IN ('pending', 'confirmed') THEN
      INSERT INTO public.appointment_reminders (appointment_id, label, due_at)
      SELECT NEW.id, t.label, t.due_at
      FROM public.dentists d CROSS JOIN LATERAL public.reminder_times(NEW.appointment_date, d.timezone) t
      WHERE d.id = NEW.dentist_id AND t.due_at > now();
    END IF;
    RETURN NULL;
  END IF;
  IF (OLD.appointment_date, OLD.duration_minutes, OLD.status, OLD.appointment_type)
       IS DISTINCT FROM (NEW.appointment_date, NEW.duration_minutes, NEW.status, NEW.appointment_type) THEN
    INSERT INTO public.appointment_revisions (appointment_id, sequence) VALUES (NEW.id, 1)
    ON CONFLICT (appointment_id) DO UPDATE SET sequence = appointment_revisions.sequence + 1;
  END IF;
  IF (OLD.appointment_date, OLD.status) IS DISTINCT FROM (NEW.appointment_date, NEW.status) THEN
    PERFORM public.plan_reminders(NEW.id);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER appointments_planned
  AFTER INSERT OR UPDATE OF appointment_date, duration_minutes, status, appointment_type ON public.appointments
  FOR EACH ROW
  EXECUTE FUNCTION public.on_appointment_planned();

-- Send what is due, each reminder once across every process: claimed with
-- SKIP LOCKED, the notification, the webhook event and the `sent` mark
-- commit together. One later than `_max_late`, or whose appointment has
-- started, is marked `missed` instead: a reminder after the fact helps no one.
CREATE FUNCTION public.send_due_reminders(_limit integer, _max_late interval)
RETURNS TABLE (id uuid, status text, late_seconds double precision)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  _r record;
BEGIN
  FOR _r IN
    SELECT r.id AS reminder_id, r.label, r.due_at, a.id AS appointment_id, a.patient_id, a.dentist_id,
           a.appointment_date, a.duration_minutes, a.appointment_type, a.status AS appointment_status,
           d.name AS dentist_name, d.timezone
    FROM public.appointment_reminders r
    JOIN public.appointments a ON a.id = r.appointment_id
    JOIN public.dentists d ON d.id = a.dentist_id
    WHERE r.status = 'pending' AND r.due_at <= now()
    ORDER BY r.due_at
    LIMIT _limit
    FOR UPDATE OF r SKIP LOCKED
  LOOP
    IF now() > _r.due_at + _max_late OR now() >= _r.appointment_date THEN
      UPDATE public.appointment_reminders SET status = 'missed' WHERE appointment_reminders.id = _r.reminder_id;
      id := _r.reminder_id; status := 'missed'; late_seconds := extract(epoch FROM now() - _r.due_at);
      RETURN NEXT;
      CONTINUE;
    END IF;
    INSERT INTO public.notifications (user_id, kind, title, body, data)
    VALUES (_r.patient_id, 'appointment_reminder', 'Appointment reminder',
            format('Your %s with %s is on %s (%s).', replace(_r.appointment_type, '_', ' '), _r.dentist_name,
                   to_char(_r.appointment_date AT TIME ZONE _r.timezone, 'Dy DD Mon YYYY HH24:MI'), _r.timezone),
            jsonb_build_object('appointment_id', _r.appointment_id, 'dentist_id', _r.dentist_id,
                               'appointment_date', _r.appointment_date, 'reminder_id', _r.reminder_id,
                               'offset', _r.label));
    PERFORM public.webhook_emit('reminder.due', jsonb_build_object(
      'reminder_id', _r.reminder_id, 'offset', _r.label, 'due_at', _r.due_at,
      'appointment', jsonb_build_object('id', _r.appointment_id, 'patient_id', _r.patient_id,
        'dentist_id', _r.dentist_id, 'appointment_date', _r.appointment_date,
        'duration_minutes', _r.duration_minutes, 'appointment_type', _r.appointment_type,
        'status', _r.appointment_status)));
    UPDATE public.appointment_reminders SET status = 'sent', sent_at = now()
    WHERE appointment_reminders.id = _r.reminder_id;
    id := _r.reminder_id; status := 'sent'; late_seconds := extract(epoch FROM now() - _r.due_at);
    RETURN NEXT;
  END LOOP;
END $$;

-- ---- calendar feeds -------------------------------------------------------

-- A subscription URL's token is the credential; only its SHA-256 is kept.
-- A patient feed has no dentist_id (the owner's own appointments); a dentist
-- feed names the dentist, and works only while its owner may see that dentist.
CREATE TABLE public.calendar_feeds (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id     uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
  dentist_id   uuid REFERENCES public.dentists(id) ON DELETE CASCADE,
  token_hash   bytea NOT NULL UNIQUE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz
);
CREATE INDEX calendar_feeds_owner ON public.calendar_feeds (owner_id);

-- The hub reads and writes these as the owner; nobody else may.
ALTER TABLE public.webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.webhook_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.reminder_offsets ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.appointment_reminders ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.appointment_revisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.calendar_feeds ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.webhook_endpoints, public.webhook_messages, public.webhook_deliveries,
  public.webhook_attempts, public.calendar_feeds FROM anon, authenticated, service_role;
CREATE POLICY appointment_reminders_select ON public.appointment_reminders FOR SELECT
  USING (EXISTS (SELECT 1 FROM public.appointments a WHERE a.id = appointment_id));
-- The hub's functions are the hub's alone (Supabase's default privileges grant
-- EXECUTE on new functions to the API roles directly, not only to PUBLIC).
REVOKE EXECUTE ON FUNCTION public.webhook_emit(text, jsonb), public.plan_reminders(uuid), public.reminder_times(timestamptz, text),
  public.send_due_reminders(integer, interval) FROM PUBLIC, anon, authenticated, service_role;
