-- Booking rules: appointment types, clinic-wide closures, per-dentist notice
-- and horizon, and idempotency keys for retried POSTs.

ALTER TABLE public.dentists
  ADD COLUMN min_notice_minutes integer NOT NULL DEFAULT 120 CHECK (min_notice_minutes BETWEEN 0 AND 43200),
  ADD COLUMN horizon_days integer NOT NULL DEFAULT 90 CHECK (horizon_days BETWEEN 1 AND 730);

-- The schedule event fires for the new rule columns too.
DROP TRIGGER dentists_schedule_changed ON public.dentists;
CREATE TRIGGER dentists_schedule_changed
  AFTER UPDATE OF available_times, date_overrides, timezone, slot_minutes, min_notice_minutes, horizon_days
  ON public.dentists
  FOR EACH ROW
  WHEN (OLD.available_times IS DISTINCT FROM NEW.available_times
     OR OLD.date_overrides IS DISTINCT FROM NEW.date_overrides
     OR OLD.timezone IS DISTINCT FROM NEW.timezone
     OR OLD.slot_minutes IS DISTINCT FROM NEW.slot_minutes
     OR OLD.min_notice_minutes IS DISTINCT FROM NEW.min_notice_minutes
     OR OLD.horizon_days IS DISTINCT FROM NEW.horizon_days)
  EXECUTE FUNCTION public.on_schedule_change();

CREATE TABLE public.appointment_types (
  name             text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
  duration_minutes integer NOT NULL CHECK (duration_minutes BETWEEN 5 AND 480),
  buffer_minutes   integer NOT NULL DEFAULT 0 CHECK (buffer_minutes BETWEEN 0 AND 120),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.appointment_types (name, duration_minutes) VALUES
  ('checkup', 30), ('cleaning', 30), ('consultation', 30), ('filling', 60), ('root_canal', 90);

CREATE TABLE public.clinic_closures (
  day        date PRIMARY KEY,
  reason     text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now()
);

-- A closure changes every dentist's schedule: one schedule event per dentist,
-- so every actor and every availability subscriber hears of it.
CREATE FUNCTION public.on_closures_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE _d uuid;
BEGIN
  FOR _d IN SELECT id FROM public.dentists ORDER BY id LOOP
    PERFORM public.log_realtime_event(_d, 'UPDATE', 'clinic_closures', _d,
      jsonb_build_object('new', NULL, 'old', NULL));
  END LOOP;
  RETURN NULL;
END $$;

CREATE TRIGGER clinic_closures_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.clinic_closures
  FOR EACH STATEMENT EXECUTE FUNCTION public.on_closures_change();

-- Other processes reload appointment types when they change.
CREATE FUNCTION public.on_catalog_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('hub_catalog', TG_TABLE_NAME);
  RETURN NULL;
END $$;

CREATE TRIGGER appointment_types_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.appointment_types
  FOR EACH STATEMENT EXECUTE FUNCTION public.on_catalog_change();

-- A retried POST with the same key returns the first answer instead of acting twice.
CREATE TABLE public.idempotency_keys (
  user_key     text NOT NULL,           -- the caller (user id, or the service role)
  key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
  request_hash text NOT NULL,
  status       integer NOT NULL,
  response     jsonb NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_key, key)
);
CREATE INDEX idempotency_keys_created_at ON public.idempotency_keys (created_at);

ALTER TABLE public.appointment_types ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.clinic_closures ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.idempotency_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY appointment_types_select ON public.appointment_types FOR SELECT USING (true);
CREATE POLICY clinic_closures_select ON public.clinic_closures FOR SELECT USING (true);
GRANT SELECT ON public.appointment_types, public.clinic_closures TO authenticated, anon;

-- Release past-due holds (of one dentist, or all with NULL) and tell their
-- patients. The caller holds the dentist's row lock first, as every writer does.
CREATE FUNCTION public.expire_holds(_dentist_id uuid, _grace interval DEFAULT '0 seconds')
RETURNS SETOF public.slot_reservations
LANGUAGE sql AS $$
  WITH gone AS (
    DELETE FROM public.slot_reservations
    WHERE (_dentist_id IS NULL OR dentist_id = _dentist_id) AND expires_at <= now() - _grace
    RETURNING *
  ), told AS (
    INSERT INTO public.notifications (user_id, kind, title, body, data)
    SELECT patient_id, 'hold_expired', 'Your held slot was released',
           'The slot you held was not booked in time and is free again.',
           jsonb_build_object('reservation_id', id, 'dentist_id', dentist_id, 'slot_time', slot_time)
    FROM gone
  )
  SELECT * FROM gone
$$;
