-- Every write made for a user runs under that user's claims (as 0008 began
-- for bookings): holds, extending and releasing them, appointment changes,
-- schedules, clinic settings, dentists, roles and document rows. The hub
-- passes the verified token's claims; the service role passes none and keeps
-- its bypass. The role is switched for the user's own statements only, and
-- back to the hub's ('none' = the session's user) before the hub's
-- bookkeeping (notifications, idempotency keys, the event log) runs.

-- The statements after this run as the caller: role `authenticated` (`anon`
-- for an anonymous token) with the claims in `request.jwt.claims`, until the
-- caller sets role 'none' again. No claims: nothing changes (the service
-- role). Not SECURITY DEFINER: a function that switches role cannot be.
CREATE FUNCTION public.hub_as_caller(_claims text) RETURNS void
LANGUAGE sql AS $$
  SELECT set_config('request.jwt.claims', _claims, true),
         set_config('role', CASE WHEN _claims::jsonb ->> 'role' = 'anon' THEN 'anon' ELSE 'authenticated' END, true)
  WHERE _claims IS NOT NULL
$$;

-- A booking: 0007's (refused, with nothing written, past the patient's caps)
-- and 0008's (the insert and the holds it consumes under the caller's claims)
-- together. 0008 restated 0004's, so on a fresh database it replaced 0007's
-- and the caps were never checked. The caps are counted as the hub (other
-- dentists' appointments are not the caller's to see under every policy).
CREATE OR REPLACE FUNCTION public.hub_book(_dentist uuid, _a jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _row public.appointments;
  _refused text;
BEGIN
  IF _a ? 'caps' THEN
    _refused := public.hub_appointment_cap((_a ->> 'patient_id')::uuid, _dentist, (_a ->> 'start')::timestamptz,
                                           NULL, _a -> 'caps');
    IF _refused IS NOT NULL THEN
      RETURN jsonb_build_object('refused', _refused);
    END IF;
  END IF;
  PERFORM public.hub_as_caller(_a ->> 'claims');
  DELETE FROM public.slot_reservations
  WHERE dentist_id = _dentist AND id IN (SELECT value::uuid FROM jsonb_array_elements_text(_a -> 'consume'));
  INSERT INTO public.appointments (id, patient_id, dentist_id, appointment_date, duration_minutes, buffer_minutes,
                                   appointment_type, notes, patient_notes, medical_history, created_by)
  VALUES ((_a ->> 'id')::uuid, (_a ->> 'patient_id')::uuid, _dentist, (_a ->> 'start')::timestamptz,
          (_a ->> 'duration')::int, (_a ->> 'buffer')::int, _a ->> 'type', _a ->> 'notes', _a ->> 'patient_notes',
          _a ->> 'medical_history', (_a ->> 'created_by')::uuid)
  RETURNING * INTO _row;
  PERFORM set_config('role', 'none', true), set_config('request.jwt.claims', '', true);
  RETURN to_jsonb(_row);
END $$;

-- A hold: the patient's hold count and the release of expired holds it
-- overlaps are the hub's bookkeeping (they touch other patients' rows); the
-- insert is the caller's. Otherwise as in 0006.
CREATE OR REPLACE FUNCTION public.hub_hold(_dentist uuid, _a jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _patient uuid := (_a ->> 'patient_id')::uuid;
  _start timestamptz := (_a ->> 'start')::timestamptz;
  _row public.slot_reservations;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(_patient::text, 0));
  IF (SELECT count(*) FROM public.slot_reservations WHERE patient_id = _patient AND expires_at > now())
     >= (_a ->> 'max_holds')::int THEN
    RETURN '{"refused": "hold_limit"}';
  END IF;
  PERFORM public.expire_holds_overlapping(_dentist, _start, public.add_minutes(_start, (_a ->> 'minutes')::int));
  PERFORM public.hub_as_caller(_a ->> 'claims');
  INSERT INTO public.slot_reservations (dentist_id, patient_id, slot_time, duration_minutes, appointment_type,
                                        expires_at, created_by)
  VALUES (_dentist, _patient, _start, (_a ->> 'minutes')::int, _a ->> 'type',
          now() + make_interval(secs => (_a ->> 'ttl')::float8), (_a ->> 'created_by')::uuid)
  RETURNING * INTO _row;
  PERFORM set_config('role', 'none', true), set_config('request.jwt.claims', '', true);
  RETURN to_jsonb(_row) - 'created_by';
END $$;

-- Renew a live hold for another TTL, never past its maximum age. Whether it
-- is live and young enough is read as the hub; the renewal is the caller's,
-- and a row their policies hide from the UPDATE is a refusal (42501), not a
-- silent no-op. Otherwise as in 0004.
CREATE OR REPLACE FUNCTION public.hub_extend_hold(_dentist uuid, _a jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _id uuid := (_a ->> 'hold_id')::uuid;
  _row public.slot_reservations;
  _until timestamptz;
BEGIN
  SELECT * INTO _row FROM public.slot_reservations WHERE id = _id AND dentist_id = _dentist AND expires_at > now();
  IF NOT FOUND THEN
    RETURN '{"refused": "not_found"}';
  END IF;
  _until := least(now() + make_interval(secs => (_a ->> 'ttl')::float8),
                  _row.created_at + make_interval(secs => (_a ->> 'max_age')::float8));
  IF _until <= _row.expires_at THEN
    RETURN '{"refused": "max_age"}';
  END IF;
  PERFORM public.hub_as_caller(_a ->> 'claims');
  UPDATE public.slot_reservations SET expires_at = _until WHERE id = _id RETURNING * INTO _row;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'row-level security: the caller may not extend reservation %', _id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM set_config('role', 'none', true), set_config('request.jwt.claims', '', true);
  RETURN to_jsonb(_row) - 'created_by';
END $$;

-- 0004's write call; a release now deletes under the caller's claims.
CREATE OR REPLACE FUNCTION public.hub_write(_dentist uuid, _expected bigint, _op text, _args jsonb, _idem jsonb)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _version bigint;
  _result jsonb;
  _gone int;
BEGIN
  SELECT version INTO _version FROM public.dentists WHERE id = _dentist FOR UPDATE;
  IF NOT FOUND THEN
    RETURN '{"missing": true}';
  END IF;
  IF _version <> _expected THEN
    RETURN jsonb_build_object('stale', _version);
  END IF;
  CASE _op
    WHEN 'book' THEN _result := public.hub_book(_dentist, _args);
    WHEN 'hold' THEN _result := public.hub_hold(_dentist, _args);
    WHEN 'extend' THEN _result := public.hub_extend_hold(_dentist, _args);
    WHEN 'release' THEN
      PERFORM public.hub_as_caller(_args ->> 'claims');
      DELETE FROM public.slot_reservations WHERE id = (_args ->> 'hold_id')::uuid AND dentist_id = _dentist;
      GET DIAGNOSTICS _gone = ROW_COUNT;
      PERFORM set_config('role', 'none', true), set_config('request.jwt.claims', '', true);
      IF _gone = 0 AND EXISTS (SELECT 1 FROM public.slot_reservations
                               WHERE id = (_args ->> 'hold_id')::uuid AND dentist_id = _dentist) THEN
        RAISE EXCEPTION 'row-level security: the caller may not release reservation %', _args ->> 'hold_id'
          USING ERRCODE = 'insufficient_privilege';  -- their policies hid it from the DELETE
      END IF;
  END CASE;
  IF _result ? 'refused' THEN
    RETURN _result;  -- nothing was written
  END IF;
  -- The patient hears of what someone else did to their appointment.
  INSERT INTO public.notifications (user_id, kind, title, body, data)
  SELECT (n ->> 'user_id')::uuid, n ->> 'kind', n ->> 'title', n ->> 'body', n -> 'data'
  FROM jsonb_array_elements(coalesce(_args -> 'notices', '[]')) n;
  -- The first answer to an Idempotency-Key, committed with the write itself.
  IF _idem IS NOT NULL THEN
    INSERT INTO public.idempotency_keys (user_key, key, request_hash, status, response)
    VALUES (_idem ->> 'user_key', _idem ->> 'key', _idem ->> 'request_hash', 201, _result);
  END IF;
  RETURN jsonb_build_object('result', _result, 'events', coalesce(
    (SELECT jsonb_agg(to_jsonb(e) - 'broadcast_latency_ms' ORDER BY e.version) FROM public.realtime_events e
     WHERE e.dentist_id = _dentist AND e.version > _expected), '[]'));
END $$;

REVOKE EXECUTE ON FUNCTION public.hub_as_caller(text) FROM PUBLIC, anon, authenticated;
REVOKE EXECUTE ON FUNCTION public.hub_book(uuid, jsonb), public.hub_hold(uuid, jsonb),
  public.hub_extend_hold(uuid, jsonb), public.hub_write(uuid, bigint, text, jsonb, jsonb)
  FROM PUBLIC, anon, authenticated;

-- What those writes need beyond 0001, 0002 and 0008. The API roles already
-- have these rights on Supabase (its default grants); GRANT is a no-op there.
GRANT INSERT, UPDATE ON public.slot_reservations TO authenticated;
GRANT INSERT, UPDATE, DELETE ON public.clinic_closures TO authenticated;
GRANT INSERT, UPDATE ON public.appointment_types TO authenticated;
GRANT INSERT ON public.dentists TO authenticated;
GRANT INSERT, DELETE ON public.user_roles TO authenticated;
GRANT INSERT ON public.appointment_documents TO authenticated;

-- The policies, added only to a table whose policies are all the hub's own
-- (by name: 0001's, 0002's, 0008's and these). On an adopted database a table
-- that came with the clinic's policies keeps exactly those, as adoption does
-- (hub/adopt.py): permissive policies OR together, so the hub's would widen
-- what the clinic allows. There the clinic's policies decide what its users
-- may write through the hub, as they decide it for its supabase-js apps.
DO $$
DECLARE
  _p record;
  _hub text[] := ARRAY['slot_reservations_select', 'slot_reservations_delete', 'clinic_closures_select',
                       'appointment_types_select', 'dentists_select', 'dentists_update', 'user_roles_select',
                       'appointment_documents_select', 'slot_reservations_insert', 'slot_reservations_update',
                       'slot_reservations_staff_select', 'slot_reservations_staff_delete', 'clinic_closures_admin',
                       'appointment_types_admin', 'dentists_insert', 'user_roles_admin',
                       'appointment_documents_insert'];
BEGIN
  FOR _p IN SELECT * FROM (VALUES
    -- Holds: one's own (admins: anyone's), made by oneself; the dentist sees,
    -- renews and releases holds on their schedule, as staff do over the API.
    ('slot_reservations', 'slot_reservations_insert', 'FOR INSERT WITH CHECK ('
       '(patient_id = auth.uid() OR public.has_role(auth.uid(), ''admin'')) AND created_by = auth.uid())'),
    ('slot_reservations', 'slot_reservations_update', 'FOR UPDATE USING (patient_id = auth.uid() '
       'OR public.is_dentist_user(dentist_id, auth.uid()) OR public.has_role(auth.uid(), ''admin''))'),
    ('slot_reservations', 'slot_reservations_staff_select', 'FOR SELECT USING '
       '(public.is_dentist_user(dentist_id, auth.uid()))'),
    ('slot_reservations', 'slot_reservations_staff_delete', 'FOR DELETE USING '
       '(public.is_dentist_user(dentist_id, auth.uid()))'),
    -- Clinic-wide settings, dentists and roles: admins.
    ('clinic_closures', 'clinic_closures_admin', 'FOR ALL USING (public.has_role(auth.uid(), ''admin''))'),
    ('appointment_types', 'appointment_types_admin', 'FOR ALL USING (public.has_role(auth.uid(), ''admin''))'),
    ('dentists', 'dentists_insert', 'FOR INSERT WITH CHECK (public.has_role(auth.uid(), ''admin''))'),
    ('user_roles', 'user_roles_admin', 'FOR ALL USING (public.has_role(auth.uid(), ''admin''))'),
    -- A document on an appointment the uploader may see, uploaded as themselves.
    ('appointment_documents', 'appointment_documents_insert', 'FOR INSERT WITH CHECK (uploaded_by = auth.uid() '
       'AND EXISTS (SELECT 1 FROM public.appointments a WHERE a.id = appointment_id))')
  ) AS p(tab, name, body) LOOP
    IF EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = format('public.%I', _p.tab)::regclass
               AND polname <> ALL (_hub)) THEN
      RAISE NOTICE 'keeping the clinic''s own policies on %: the hub''s % is not added', _p.tab, _p.name;
    ELSIF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = format('public.%I', _p.tab)::regclass
                      AND polname = _p.name) THEN
      EXECUTE format('CREATE POLICY %I ON public.%I %s', _p.name, _p.tab, _p.body);
    END IF;
  END LOOP;
END $$;
