DROP POLICY IF EXISTS slot_reservations_insert ON public.slot_reservations;
DROP POLICY IF EXISTS slot_reservations_update ON public.slot_reservations;
DROP POLICY IF EXISTS slot_reservations_staff_select ON public.slot_reservations;
DROP POLICY IF EXISTS slot_reservations_staff_delete ON public.slot_reservations;
DROP POLICY IF EXISTS clinic_closures_admin ON public.clinic_closures;
DROP POLICY IF EXISTS appointment_types_admin ON public.appointment_types;
DROP POLICY IF EXISTS dentists_insert ON public.dentists;
DROP POLICY IF EXISTS user_roles_admin ON public.user_roles;
DROP POLICY IF EXISTS appointment_documents_insert ON public.appointment_documents;

-- The grants stay on an adopted database: Supabase's defaults had given them before.
DO $$
BEGIN
  IF to_regclass('public.schema_adoption') IS NULL THEN
    REVOKE INSERT, UPDATE ON public.slot_reservations FROM authenticated;
    REVOKE INSERT, UPDATE, DELETE ON public.clinic_closures FROM authenticated;
    REVOKE INSERT, UPDATE ON public.appointment_types FROM authenticated;
    REVOKE INSERT ON public.dentists FROM authenticated;
    REVOKE INSERT, DELETE ON public.user_roles FROM authenticated;
    REVOKE INSERT ON public.appointment_documents FROM authenticated;
  END IF;
END $$;

-- hub_book as 0008 made it (which is what a database that ran 0008 had).
CREATE OR REPLACE FUNCTION public.hub_book(_dentist uuid, _a jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _row public.appointments;
  _claims text := _a ->> 'claims';
  _refused text;
BEGIN
  IF _a ? 'caps' THEN
    _refused := public.hub_appointment_cap((_a ->> 'patient_id')::uuid, _dentist, (_a ->> 'start')::timestamptz,
                                           NULL, _a -> 'caps');
    IF _refused IS NOT NULL THEN
      RETURN jsonb_build_object('refused', _refused);
    END IF;
  END IF;
  IF _claims IS NOT NULL THEN
    PERFORM set_config('request.jwt.claims', _claims, true), set_config('role', 'authenticated', true);
  END IF;
  DELETE FROM public.slot_reservations
  WHERE dentist_id = _dentist AND id IN (SELECT value::uuid FROM jsonb_array_elements_text(_a -> 'consume'));
  INSERT INTO public.appointments (id, patient_id, dentist_id, appointment_date, duration_minutes, buffer_minutes,
                                   appointment_type, notes, patient_notes, medical_history, created_by)
  VALUES ((_a ->> 'id')::uuid, (_a ->> 'patient_id')::uuid, _dentist, (_a ->> 'start')::timestamptz,
          (_a ->> 'duration')::int, (_a ->> 'buffer')::int, _a ->> 'type', _a ->> 'notes', _a ->> 'patient_notes',
          _a ->> 'medical_history', (_a ->> 'created_by')::uuid)
  RETURNING * INTO _row;
  IF _claims IS NOT NULL THEN
    PERFORM set_config('role', 'none', true), set_config('request.jwt.claims', '', true);
  END IF;
  RETURN to_jsonb(_row);
END $$;

-- hub_hold as 0006 made it.
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
  INSERT INTO public.slot_reservations (dentist_id, patient_id, slot_time, duration_minutes, appointment_type,
                                        expires_at, created_by)
  VALUES (_dentist, _patient, _start, (_a ->> 'minutes')::int, _a ->> 'type',
          now() + make_interval(secs => (_a ->> 'ttl')::float8), (_a ->> 'created_by')::uuid)
  RETURNING * INTO _row;
  RETURN to_jsonb(_row) - 'created_by';
END $$;

-- hub_extend_hold as 0004 made it.
CREATE OR REPLACE FUNCTION public.hub_extend_hold(_dentist uuid, _a jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _id uuid := (_a ->> 'hold_id')::uuid;
  _row public.slot_reservations;
BEGIN
  UPDATE public.slot_reservations
  SET expires_at = least(now() + make_interval(secs => (_a ->> 'ttl')::float8),
                         created_at + make_interval(secs => (_a ->> 'max_age')::float8))
  WHERE id = _id AND dentist_id = _dentist AND expires_at > now()
    AND least(now() + make_interval(secs => (_a ->> 'ttl')::float8),
              created_at + make_interval(secs => (_a ->> 'max_age')::float8)) > expires_at
  RETURNING * INTO _row;
  IF FOUND THEN
    RETURN to_jsonb(_row) - 'created_by';
  END IF;
  IF EXISTS (SELECT 1 FROM public.slot_reservations WHERE id = _id AND dentist_id = _dentist AND expires_at > now()) THEN
    RETURN '{"refused": "max_age"}';
  END IF;
  RETURN '{"refused": "not_found"}';
END $$;

-- hub_write as 0004 made it.
CREATE OR REPLACE FUNCTION public.hub_write(_dentist uuid, _expected bigint, _op text, _args jsonb, _idem jsonb)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _version bigint;
  _result jsonb;
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
      DELETE FROM public.slot_reservations WHERE id = (_args ->> 'hold_id')::uuid AND dentist_id = _dentist;
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

DROP FUNCTION IF EXISTS public.hub_as_caller(text);
