-- Foundation schema: users, roles, dentists, appointments, holds, the event log
-- and the row-level security policies of the seed, with its defects fixed
-- (see DESIGN §7).

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Supabase's database roles, so the RLS policies can be exercised by a
-- non-owner role exactly as PostgREST would. Roles are cluster-wide: several
-- databases on one server share them, so creating one twice is not an error.
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
    BEGIN
      EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END LOOP;
END $$;

-- auth: what Supabase's GoTrue would own. The hub creates a user the first
-- time it sees a valid token for it.
CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE auth.users (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email      text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_email ON auth.users (lower(email));

-- The caller's JWT claims, set per transaction by whoever runs SQL on a
-- user's behalf: set_config('request.jwt.claims', '{"sub": ...}', true).
CREATE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;

CREATE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE AS $$
  SELECT nullif(auth.jwt() ->> 'sub', '')::uuid
$$;

CREATE FUNCTION auth.role() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT auth.jwt() ->> 'role'
$$;

CREATE TYPE public.app_role AS ENUM ('patient', 'dentist', 'admin');
CREATE TYPE public.appointment_status AS ENUM
  ('pending', 'confirmed', 'completed', 'cancelled', 'no_show');

CREATE TABLE public.profiles (
  id            uuid PRIMARY KEY REFERENCES auth.users(id) ON DELETE CASCADE,
  email         text,
  full_name     text,
  phone         text,
  date_of_birth date,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.user_roles (
  user_id    uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
  role       public.app_role NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, role)
);

-- Supabase's sign-up trigger: every new user gets a profile and the patient role.
CREATE FUNCTION auth.handle_new_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  INSERT INTO public.profiles (id, email) VALUES (NEW.id, NEW.email);
  INSERT INTO public.user_roles (user_id, role) VALUES (NEW.id, 'patient');
  RETURN NEW;
END $$;

CREATE TRIGGER on_auth_user_created
  AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION auth.handle_new_user();

-- SECURITY DEFINER so policies can call it without granting user_roles.
CREATE FUNCTION public.has_role(_user_id uuid, _role public.app_role) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT EXISTS (SELECT 1 FROM public.user_roles WHERE user_id = _user_id AND role = _role)
$$;

CREATE TABLE public.dentists (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id         uuid UNIQUE REFERENCES auth.users(id) ON DELETE SET NULL,
  name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  specialization  text,
  -- The seed's weekday format: {"monday": "09:00-17:00", ...}, local wall-clock time.
  available_times jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(available_times) = 'object'),
  -- {"2026-12-24": "09:00-12:00", "2026-12-31": ""}: special hours or closed ("") on a local date.
  date_overrides  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(date_overrides) = 'object'),
  timezone        text NOT NULL DEFAULT 'UTC',
  slot_minutes    integer NOT NULL DEFAULT 30 CHECK (slot_minutes BETWEEN 5 AND 240),
  -- Gapless per-dentist event counter; only the event triggers below bump it,
  -- which also takes the row lock that serializes every writer of this dentist.
  version         bigint NOT NULL DEFAULT 0,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- timestamptz + interval is only STABLE in general, but adding whole minutes
-- never depends on the session time zone, so this one is truly immutable and
-- may be used in a generated column and an exclusion constraint.
CREATE FUNCTION public.add_minutes(ts timestamptz, minutes integer) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT ts + make_interval(mins => minutes) $$;

CREATE TABLE public.appointments (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  patient_id          uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
  dentist_id          uuid NOT NULL REFERENCES public.dentists(id) ON DELETE CASCADE,
  appointment_date    timestamptz NOT NULL,
  duration_minutes    integer NOT NULL DEFAULT 30 CHECK (duration_minutes BETWEEN 5 AND 480),
  -- Time kept free after the appointment (cleaning the room); part of the blocked range.
  buffer_minutes      integer NOT NULL DEFAULT 0 CHECK (buffer_minutes BETWEEN 0 AND 120),
  ends_at             timestamptz GENERATED ALWAYS AS (public.add_minutes(appointment_date, duration_minutes)) STORED,
  appointment_type    text NOT NULL,
  status              public.appointment_status NOT NULL DEFAULT 'pending',
  notes               text,
  patient_notes       text,
  medical_history     text,
  created_by          uuid,
  cancelled_at        timestamptz,
  cancelled_by        uuid,
  cancellation_reason text,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  -- The last line of defence against double booking, whatever any process believes.
  CONSTRAINT appointments_no_overlap EXCLUDE USING gist (
    dentist_id WITH =,
    tstzrange(appointment_date, public.add_minutes(appointment_date, duration_minutes + buffer_minutes)) WITH &&
  ) WHERE (status <> 'cancelled')
);
CREATE INDEX appointments_dentist_date ON public.appointments (dentist_id, appointment_date);
CREATE INDEX appointments_patient_date ON public.appointments (patient_id, appointment_date);

CREATE TABLE public.appointment_documents (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  appointment_id uuid NOT NULL REFERENCES public.appointments(id) ON DELETE CASCADE,
  file_name      text NOT NULL,
  file_url       text NOT NULL,
  file_type      text NOT NULL,
  file_size      integer NOT NULL CHECK (file_size >= 0),
  uploaded_by    uuid NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX appointment_documents_appointment ON public.appointment_documents (appointment_id);

-- Temporary holds. A hold may span several grid slots (a 60-minute type),
-- so overlap is excluded rather than only equal start times.
CREATE TABLE public.slot_reservations (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  dentist_id       uuid NOT NULL REFERENCES public.dentists(id) ON DELETE CASCADE,
  patient_id       uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
  slot_time        timestamptz NOT NULL,
  duration_minutes integer NOT NULL DEFAULT 30 CHECK (duration_minutes BETWEEN 5 AND 480),
  appointment_type text,
  expires_at       timestamptz NOT NULL,
  created_by       uuid,
  created_at       timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT slot_reservations_no_overlap EXCLUDE USING gist (
    dentist_id WITH =,
    tstzrange(slot_time, public.add_minutes(slot_time, duration_minutes)) WITH &&
  )
);
CREATE INDEX slot_reservations_expires_at ON public.slot_reservations (expires_at);
CREATE INDEX slot_reservations_patient ON public.slot_reservations (patient_id);

CREATE TABLE public.notifications (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id    uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
  kind       text NOT NULL,
  title      text NOT NULL,
  body       text NOT NULL DEFAULT '',
  data       jsonb NOT NULL DEFAULT '{}',
  read_at    timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_user_unread ON public.notifications (user_id, (read_at IS NULL) DESC, created_at DESC);

-- The event log: one row per change, numbered per dentist without gaps.
-- A process that missed a NOTIFY, or a client that reconnects, reads from here.
CREATE TABLE public.realtime_events (
  id                   bigserial PRIMARY KEY,
  dentist_id           uuid NOT NULL,
  version              bigint NOT NULL,
  event_type           text NOT NULL,
  table_name           text NOT NULL,
  record_id            uuid NOT NULL,
  payload              jsonb NOT NULL,
  broadcast_latency_ms integer,
  created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (dentist_id, version)
);
CREATE INDEX realtime_events_created_at ON public.realtime_events (created_at DESC);

-- Record one change and tell every hub process about it. The dentist's row is
-- locked by the version bump until commit, so versions are gapless and in
-- commit order per dentist, even for SQL typed by hand. NOTIFY carries a small
-- reference only: a whole row may pass NOTIFY's 8000-byte limit.
CREATE FUNCTION public.log_realtime_event(
  _dentist_id uuid, _event_type text, _table text, _record_id uuid, _payload jsonb
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  _version bigint;
  _id bigint;
BEGIN
  UPDATE public.dentists SET version = version + 1 WHERE id = _dentist_id
  RETURNING version INTO _version;
  IF NOT FOUND THEN
    RETURN;  -- the dentist itself is being deleted: nobody is left to tell
  END IF;
  INSERT INTO public.realtime_events (dentist_id, version, event_type, table_name, record_id, payload)
  VALUES (_dentist_id, _version, _event_type, _table, _record_id, _payload)
  RETURNING id INTO _id;
  PERFORM pg_notify('hub_events', json_build_object('id', _id, 'dentist_id', _dentist_id, 'version', _version)::text);
END $$;

CREATE FUNCTION public.on_row_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  _new jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
  _old jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
  _row jsonb := coalesce(_new, _old);
BEGIN
  PERFORM public.log_realtime_event(
    (_row ->> 'dentist_id')::uuid, TG_OP, TG_TABLE_NAME, (_row ->> 'id')::uuid,
    jsonb_build_object('new', _new, 'old', _old));
  RETURN NULL;
END $$;

CREATE TRIGGER appointments_changed
  AFTER INSERT OR UPDATE OR DELETE ON public.appointments
  FOR EACH ROW EXECUTE FUNCTION public.on_row_change();

CREATE TRIGGER slot_reservations_changed
  AFTER INSERT OR UPDATE OR DELETE ON public.slot_reservations
  FOR EACH ROW EXECUTE FUNCTION public.on_row_change();

-- Availability: only the schedule columns make an event; the version bump of
-- log_realtime_event itself updates this row and must not recurse.
CREATE FUNCTION public.on_schedule_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  PERFORM public.log_realtime_event(NEW.id, 'UPDATE', 'dentists', NEW.id,
    jsonb_build_object('new', to_jsonb(NEW) - 'version', 'old', to_jsonb(OLD) - 'version'));
  RETURN NULL;
END $$;

CREATE TRIGGER dentists_schedule_changed
  AFTER UPDATE OF available_times, date_overrides, timezone, slot_minutes ON public.dentists
  FOR EACH ROW
  WHEN (OLD.available_times IS DISTINCT FROM NEW.available_times
     OR OLD.date_overrides IS DISTINCT FROM NEW.date_overrides
     OR OLD.timezone IS DISTINCT FROM NEW.timezone
     OR OLD.slot_minutes IS DISTINCT FROM NEW.slot_minutes)
  EXECUTE FUNCTION public.on_schedule_change();

CREATE FUNCTION public.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

CREATE TRIGGER profiles_touch BEFORE UPDATE ON public.profiles
  FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
CREATE TRIGGER appointments_touch BEFORE UPDATE ON public.appointments
  FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
CREATE TRIGGER dentists_touch BEFORE UPDATE OF name, specialization, available_times, date_overrides, timezone, slot_minutes, user_id
  ON public.dentists FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();

-- Row-level security. The hub connects as the owner and authorizes in code;
-- these policies guard anyone connecting as `authenticated` with a user's claims.
-- The seed's permissive `realtime_appointments_policy` is dropped: permissive
-- policies OR together, so it let anyone whose id matched dentist_id in without
-- the dentist role check.
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.dentists ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.appointments ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.appointment_documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.slot_reservations ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.realtime_events ENABLE ROW LEVEL SECURITY;

-- A dentist is identified by dentists.id in appointments; their login is dentists.user_id.
CREATE FUNCTION public.is_dentist_user(_dentist_id uuid, _user_id uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT EXISTS (SELECT 1 FROM public.dentists WHERE id = _dentist_id AND user_id = _user_id)
     AND public.has_role(_user_id, 'dentist')
$$;

CREATE POLICY profiles_select ON public.profiles FOR SELECT
  USING (id = auth.uid() OR public.has_role(auth.uid(), 'admin')
         OR EXISTS (SELECT 1 FROM public.dentists d WHERE d.user_id = profiles.id));
CREATE POLICY profiles_update ON public.profiles FOR UPDATE
  USING (id = auth.uid()) WITH CHECK (id = auth.uid());

CREATE POLICY user_roles_select ON public.user_roles FOR SELECT
  USING (user_id = auth.uid() OR public.has_role(auth.uid(), 'admin'));

CREATE POLICY dentists_select ON public.dentists FOR SELECT USING (auth.uid() IS NOT NULL);
CREATE POLICY dentists_update ON public.dentists FOR UPDATE
  USING (public.has_role(auth.uid(), 'admin') OR public.is_dentist_user(id, auth.uid()));

CREATE POLICY appointments_select ON public.appointments FOR SELECT
  USING (patient_id = auth.uid()
         OR public.is_dentist_user(dentist_id, auth.uid())
         OR public.has_role(auth.uid(), 'admin'));
CREATE POLICY appointments_insert ON public.appointments FOR INSERT
  WITH CHECK (patient_id = auth.uid() OR public.has_role(auth.uid(), 'admin'));
CREATE POLICY appointments_update ON public.appointments FOR UPDATE
  USING (patient_id = auth.uid()
         OR public.is_dentist_user(dentist_id, auth.uid())
         OR public.has_role(auth.uid(), 'admin'));

CREATE POLICY appointment_documents_select ON public.appointment_documents FOR SELECT
  USING (EXISTS (SELECT 1 FROM public.appointments a WHERE a.id = appointment_id));

CREATE POLICY slot_reservations_select ON public.slot_reservations FOR SELECT
  USING (patient_id = auth.uid() OR public.has_role(auth.uid(), 'admin'));

CREATE POLICY notifications_select ON public.notifications FOR SELECT
  USING (user_id = auth.uid());
CREATE POLICY notifications_update ON public.notifications FOR UPDATE
  USING (user_id = auth.uid()) WITH CHECK (user_id = auth.uid());

CREATE POLICY realtime_events_select ON public.realtime_events FOR SELECT
  USING (public.has_role(auth.uid(), 'admin'));

GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION auth.jwt(), auth.uid(), auth.role() TO anon, authenticated, service_role;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO authenticated;
GRANT INSERT, UPDATE ON public.appointments, public.profiles, public.notifications TO authenticated;
GRANT UPDATE ON public.dentists TO authenticated;
