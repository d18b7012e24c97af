-- A database shaped like a clinic's Supabase project, before the hub: what
-- Supabase's own init creates (the API roles, the auth schema with its users
-- table and the claim functions PostgREST's requests rely on), then a clinic
-- schema in the seed's shapes as a supabase-js app would have made it, with
-- policies, grants, a sign-up trigger and data. The tests adopt it.

-- Supabase's API roles. Roles are cluster-wide: another test database on the
-- same server may have made them already.
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
    BEGIN
      EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END LOOP;
END $$;

CREATE SCHEMA auth;

-- auth.users as Supabase Auth's migrations leave it: many columns, only id
-- (and two flags with defaults) NOT NULL, email unique for non-SSO users.
CREATE TABLE auth.users (
  instance_id                 uuid,
  id                          uuid NOT NULL PRIMARY KEY,
  aud                         varchar(255),
  role                        varchar(255),
  email                       varchar(255),
  encrypted_password          varchar(255),
  email_confirmed_at          timestamptz,
  invited_at                  timestamptz,
  confirmation_token          varchar(255),
  confirmation_sent_at        timestamptz,
  recovery_token              varchar(255),
  recovery_sent_at            timestamptz,
  email_change_token_new      varchar(255),
  email_change                varchar(255),
  email_change_sent_at        timestamptz,
  last_sign_in_at             timestamptz,
  raw_app_meta_data           jsonb,
  raw_user_meta_data          jsonb,
  is_super_admin              boolean,
  created_at                  timestamptz,
  updated_at                  timestamptz,
  phone                       text UNIQUE DEFAULT NULL,
  phone_confirmed_at          timestamptz,
  phone_change                text DEFAULT '',
  phone_change_token          varchar(255) DEFAULT '',
  phone_change_sent_at        timestamptz,
  confirmed_at                timestamptz GENERATED ALWAYS AS (least(email_confirmed_at, phone_confirmed_at)) STORED,
  email_change_token_current  varchar(255) DEFAULT '',
  email_change_confirm_status smallint DEFAULT 0 CHECK (email_change_confirm_status >= 0 AND email_change_confirm_status <= 2),
  banned_until                timestamptz,
  reauthentication_token      varchar(255) DEFAULT '',
  reauthentication_sent_at    timestamptz,
  is_sso_user                 boolean NOT NULL DEFAULT false,
  deleted_at                  timestamptz,
  is_anonymous                boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX users_email_partial_key ON auth.users (email) WHERE (is_sso_user = false);

-- Supabase's claim functions: the legacy per-claim settings first, then request.jwt.claims.
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT nullif(coalesce(current_setting('request.jwt.claim.sub', true),
                         (current_setting('request.jwt.claims', true)::jsonb ->> 'sub')), '')::uuid
$$;
CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(current_setting('request.jwt.claim.role', true),
                  (current_setting('request.jwt.claims', true)::jsonb ->> 'role'))::text
$$;
CREATE FUNCTION auth.email() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(current_setting('request.jwt.claim.email', true),
                  (current_setting('request.jwt.claims', true)::jsonb ->> 'email'))::text
$$;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                  nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

-- The clinic's schema, as its app made it.
CREATE TYPE public.app_role AS ENUM ('admin', 'dentist', 'patient');

CREATE TABLE public.profiles (
  id         uuid PRIMARY KEY REFERENCES auth.users(id) ON DELETE CASCADE,
  full_name  text,
  email      text,
  phone      text,
  avatar_url text,
  created_at timestamptz DEFAULT now(),
  updated_at timestamptz DEFAULT now()
);

CREATE TABLE public.user_roles (
  id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
  role    public.app_role NOT NULL,
  UNIQUE (user_id, role)
);

CREATE FUNCTION public.has_role(_user_id uuid, _role public.app_role) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT EXISTS (SELECT 1 FROM public.user_roles WHERE user_id = _user_id AND role = _role)
$$;

CREATE TABLE public.dentists (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name            text NOT NULL,
  specialization  text,
  available_times jsonb DEFAULT '{}'::jsonb,
  bio             text,
  created_at      timestamptz DEFAULT now(),
  updated_at      timestamptz DEFAULT now()
);

CREATE TABLE public.appointments (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  patient_id       uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
  dentist_id       uuid NOT NULL REFERENCES public.dentists(id) ON DELETE CASCADE,
  appointment_date timestamptz NOT NULL,
  appointment_type text NOT NULL,
  status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'confirmed', 'completed', 'cancelled')),
  notes            text,
  patient_notes    text,
  medical_history  text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.appointment_documents (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  appointment_id uuid NOT NULL REFERENCES public.appointments(id) ON DELETE CASCADE,
  file_name      text NOT NULL,
  file_url       text NOT NULL,
  file_type      text NOT NULL,
  file_size      integer NOT NULL,
  uploaded_by    uuid NOT NULL REFERENCES auth.users(id),
  created_at     timestamptz DEFAULT now()
);

CREATE FUNCTION public.update_updated_at_column() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at = now();
  RETURN NEW;
END $$;
CREATE TRIGGER update_profiles_updated_at BEFORE UPDATE ON public.profiles
  FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();
CREATE TRIGGER update_appointments_updated_at BEFORE UPDATE ON public.appointments
  FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();

-- The clinic's sign-up trigger: a profile and the patient role for every new user.
CREATE FUNCTION public.handle_new_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  INSERT INTO public.profiles (id, full_name, email)
  VALUES (NEW.id, NEW.raw_user_meta_data ->> 'full_name', NEW.email);
  INSERT INTO public.user_roles (user_id, role) VALUES (NEW.id, 'patient');
  RETURN NEW;
END $$;
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_new_user();

ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.dentists ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.appointments ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.appointment_documents ENABLE ROW LEVEL SECURITY;

CREATE POLICY "Users can view their own profile" ON public.profiles FOR SELECT
  USING (auth.uid() = id OR public.has_role(auth.uid(), 'admin'));
CREATE POLICY "Users can update their own profile" ON public.profiles FOR UPDATE USING (auth.uid() = id);
CREATE POLICY "Users can view their own roles" ON public.user_roles FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "Signed-in users can view dentists" ON public.dentists FOR SELECT TO authenticated USING (true);
CREATE POLICY "Admins manage dentists" ON public.dentists FOR ALL USING (public.has_role(auth.uid(), 'admin'));
CREATE POLICY "Patients view their own appointments" ON public.appointments FOR SELECT
  USING (auth.uid() = patient_id OR public.has_role(auth.uid(), 'admin'));
CREATE POLICY "Patients create their own appointments" ON public.appointments FOR INSERT
  WITH CHECK (auth.uid() = patient_id);
CREATE POLICY "Documents of visible appointments" ON public.appointment_documents FOR SELECT
  USING (EXISTS (SELECT 1 FROM public.appointments a WHERE a.id = appointment_id));

-- Supabase's default grants on the public schema, for what exists and what is made later.
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT ALL ON ALL TABLES IN SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;

-- Data: users signed up through Supabase Auth (so through the trigger).
INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, created_at, updated_at) VALUES
  ('a11ce000-0000-4000-8000-000000000001', 'authenticated', 'authenticated', 'alice@clinic.test', '{"full_name": "Alice Patient"}', now(), now()),
  ('b0b00000-0000-4000-8000-000000000002', 'authenticated', 'authenticated', 'bob@clinic.test', '{"full_name": "Bob Patient"}', now(), now()),
  ('ad000000-0000-4000-8000-000000000003', 'authenticated', 'authenticated', 'admin@clinic.test', '{"full_name": "Ada Admin"}', now(), now()),
  ('d0c00000-0000-4000-8000-000000000004', 'authenticated', 'authenticated', 'dan@clinic.test', '{"full_name": "Dan Dentist"}', now(), now());
INSERT INTO public.user_roles (user_id, role) VALUES
  ('ad000000-0000-4000-8000-000000000003', 'admin'), ('d0c00000-0000-4000-8000-000000000004', 'dentist');

INSERT INTO public.dentists (id, name, specialization, available_times) VALUES
  ('de000000-0000-4000-8000-000000000001', 'Dr Dan', 'General',
   '{"monday": "00:00-24:00", "tuesday": "00:00-24:00", "wednesday": "00:00-24:00", "thursday": "00:00-24:00",
     "friday": "00:00-24:00", "saturday": "00:00-24:00", "sunday": "00:00-24:00"}'),
  ('de000000-0000-4000-8000-000000000002', 'Dr Eve', 'Orthodontics', NULL);

INSERT INTO public.appointments (id, patient_id, dentist_id, appointment_date, appointment_type, status, patient_notes) VALUES
  ('a0000000-0000-4000-8000-000000000001', 'a11ce000-0000-4000-8000-000000000001', 'de000000-0000-4000-8000-000000000001',
   date_trunc('hour', now()) + interval '10 days', 'checkup', 'confirmed', 'left molar'),
  ('a0000000-0000-4000-8000-000000000002', 'b0b00000-0000-4000-8000-000000000002', 'de000000-0000-4000-8000-000000000001',
   date_trunc('hour', now()) + interval '10 days 2 hours', 'cleaning', 'pending', NULL),
  ('a0000000-0000-4000-8000-000000000003', 'a11ce000-0000-4000-8000-000000000001', 'de000000-0000-4000-8000-000000000001',
   date_trunc('hour', now()) - interval '20 days', 'filling', 'completed', NULL),
  ('a0000000-0000-4000-8000-000000000004', 'b0b00000-0000-4000-8000-000000000002', 'de000000-0000-4000-8000-000000000001',
   date_trunc('hour', now()) + interval '10 days', 'checkup', 'cancelled', NULL);

INSERT INTO public.appointment_documents (appointment_id, file_name, file_url, file_type, file_size, uploaded_by) VALUES
  ('a0000000-0000-4000-8000-000000000001', 'xray.png', 'https://storage.clinic.test/xray.png', 'image/png', 1024,
   'a11ce000-0000-4000-8000-000000000001');
