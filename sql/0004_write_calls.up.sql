-- The dentist actor's frequent writes (hold, extend, release, book) as one call
-- each: one round trip and one commit instead of BEGIN, lock, write, read the
-- events back, COMMIT, because a booking's cost to the hub is its round trips
-- more than the SQL they carry (docs/BENCHMARKS.md).
--
-- The actor decides from memory, then calls hub_write with the version its
-- memory is at. Under the dentist's row lock (taken first, as by every writer)
-- the call writes only if that version is still current; otherwise it answers
-- {"stale": version} and the actor catches up and decides again. The
-- constraints still guard everything, whatever the actor believed.

-- A booking: consume the patient's own holds it covers, insert the appointment.
CREATE FUNCTION public.hub_book(_dentist uuid, _a jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _row public.appointments;
BEGIN
  DELETE FROM public.slot_reservations
  WHERE dentist_id = _dentist AND id IN (SELECT value::uuid FROM jsonb_array_elements_text(_a -> 'consume'));
  INSERT INTO public.appointments (id, patient_id, dentist_id, appointment_date, duration_minutes, buffer_minutes,
                                   appointment_type, notes, patient_notes, medical_history, created_by)
  VALUES ((_a ->> 'id')::uuid, (_a ->> 'patient_id')::uuid, _dentist, (_a ->> 'start')::timestamptz,
          (_a ->> 'duration')::int, (_a ->> 'buffer')::int, _a ->> 'type', _a ->> 'notes', _a ->> 'patient_notes',
          _a ->> 'medical_history', (_a ->> 'created_by')::uuid)
  RETURNING * INTO _row;
  RETURN to_jsonb(_row);
END $$;

-- A hold. Holds per patient count across all dentists and processes, so the
-- count is taken under a lock on the patient.
CREATE FUNCTION public.hub_hold(_dentist uuid, _a jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _patient uuid := (_a ->> 'patient_id')::uuid;
  _row public.slot_reservations;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(_patient::text, 0));
  IF (SELECT count(*) FROM public.slot_reservations WHERE patient_id = _patient AND expires_at > now())
     >= (_a ->> 'max_holds')::int THEN
    RETURN '{"refused": "hold_limit"}';
  END IF;
  INSERT INTO public.slot_reservations (dentist_id, patient_id, slot_time, duration_minutes, appointment_type,
                                        expires_at, created_by)
  VALUES (_dentist, _patient, (_a ->> 'start')::timestamptz, (_a ->> 'minutes')::int, _a ->> 'type',
          now() + make_interval(secs => (_a ->> 'ttl')::float8), (_a ->> 'created_by')::uuid)
  RETURNING * INTO _row;
  RETURN to_jsonb(_row) - 'created_by';
END $$;

-- Renew a live hold for another TTL, never past its maximum age.
CREATE FUNCTION public.hub_extend_hold(_dentist uuid, _a jsonb) RETURNS jsonb
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

CREATE FUNCTION public.hub_write(_dentist uuid, _expected bigint, _op text, _args jsonb, _idem jsonb)
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

-- Several actors' writes in one transaction (actors/batch.py): one commit for
-- all. The caller orders them by dentist, so batches lock rows in one order.
CREATE FUNCTION public.hub_write_many(_writes jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _w jsonb;
  _answers jsonb := '[]';
BEGIN
  FOR _w IN SELECT value FROM jsonb_array_elements(_writes) LOOP
    _answers := _answers || jsonb_build_array(public.hub_write(
      (_w ->> 'dentist')::uuid, (_w ->> 'version')::bigint, _w ->> 'op', _w -> 'args', nullif(_w -> 'idem', 'null')));
  END LOOP;
  RETURN _answers;
END $$;

-- Only the hub (the owner) writes through these.
REVOKE EXECUTE ON FUNCTION public.hub_book(uuid, jsonb), public.hub_hold(uuid, jsonb),
  public.hub_extend_hold(uuid, jsonb), public.hub_write(uuid, bigint, text, jsonb, jsonb),
  public.hub_write_many(jsonb) FROM PUBLIC;
