-- Every write of the dentist actor is one hub_write call (actors/dentist.py
-- `_commit`): besides hold, extend, release and book, an appointment's
-- change, new hours, hold expiry and waitlist offers. The actor decides from
-- memory; these ops apply its decision under the dentist's row lock, if its
-- version is still current, as the others do.

-- An appointment's change as the actor decided it: _a -> 'set' holds the
-- columns that change and their new values (status, cancellation, time,
-- type, notes); only those are assigned. Refused, with nothing written, if
-- the appointment is no longer this dentist's, or if a patient's move would
-- pass their caps (counted as the hub, as for a booking: 0007, 0013). The
-- patient's own holds on the new time go with the move. The deletes and the
-- update are the caller's, and a row their policies hide from the UPDATE is
-- a refusal (42501), not a silent no-op. The patient's notifications are
-- hub_write's (_a -> 'notices'), as for a booking.
CREATE FUNCTION public.hub_change(_dentist uuid, _a jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _id uuid := (_a ->> 'id')::uuid;
  _set jsonb := _a -> 'set';
  _row public.appointments;
  _refused text;
BEGIN
  PERFORM 1 FROM public.appointments WHERE id = _id AND dentist_id = _dentist FOR UPDATE;
  IF NOT FOUND THEN
    RETURN '{"refused": "appointment_gone"}';
  END IF;
  IF _a ? 'caps' THEN  -- a move: 'set' has its new time
    _refused := public.hub_appointment_cap((_a ->> 'patient_id')::uuid, _dentist,
                                           (_set ->> 'appointment_date')::timestamptz, _id, _a -> 'caps');
    IF _refused IS NOT NULL THEN
      RETURN jsonb_build_object('refused', _refused);
    END IF;
  END IF;
  PERFORM public.hub_as_caller(_a ->> 'claims');
  DELETE FROM public.slot_reservations
  WHERE dentist_id = _dentist AND id IN (SELECT value::uuid FROM jsonb_array_elements_text(_a -> 'consume'));
  -- Each value converted to its column's type by jsonb_populate_record.
  EXECUTE format('UPDATE public.appointments a SET %s FROM jsonb_populate_record(NULL::public.appointments, $1) n '
                 'WHERE a.id = $2 RETURNING a.*',
                 (SELECT string_agg(format('%I = n.%I', k, k), ', ') FROM jsonb_object_keys(_set) k))
  INTO _row USING _set, _id;
  IF _row.id IS NULL THEN
    RAISE EXCEPTION 'row-level security: the caller may not change appointment %', _id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM set_config('role', 'none', true), set_config('request.jwt.claims', '', true);
  RETURN to_jsonb(_row);
END $$;

-- A dentist's new hours, as the caller; a row their policies hide from the
-- UPDATE is a refusal (42501). Which appointments the hours leave outside
-- (and whether that is allowed) the actor decided.
CREATE FUNCTION public.hub_set_schedule(_dentist uuid, _a jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
  PERFORM public.hub_as_caller(_a ->> 'claims');
  UPDATE public.dentists
  SET available_times = _a -> 'available_times', date_overrides = _a -> 'overrides', timezone = _a ->> 'timezone',
      slot_minutes = (_a ->> 'slot_minutes')::int
  WHERE id = _dentist;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'row-level security: the caller may not change the hours of dentist %', _dentist
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM set_config('role', 'none', true), set_config('request.jwt.claims', '', true);
  RETURN NULL;
END $$;

-- 0013's write call with the new ops: 'change' and 'schedule' above,
-- 'expire' (the dentist's past-due holds released, answering how many: 0002's
-- expire_holds) and 'offer' (freed slots offered to the waitlist: 0010's
-- waitlist_offer, with the slots the actor found free).
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
    WHEN 'change' THEN _result := public.hub_change(_dentist, _args);
    WHEN 'schedule' THEN _result := public.hub_set_schedule(_dentist, _args);
    WHEN 'expire' THEN _result := to_jsonb((SELECT count(*) FROM public.expire_holds(_dentist)));
    WHEN 'offer' THEN
      _result := public.waitlist_offer(_dentist, _args -> 'candidates', (_args ->> 'offer_minutes')::int);
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

REVOKE EXECUTE ON FUNCTION public.hub_change(uuid, jsonb), public.hub_set_schedule(uuid, jsonb)
  FROM PUBLIC, anon, authenticated;
