-- hub_write as 0013 made it.
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

DROP FUNCTION IF EXISTS public.hub_change(uuid, jsonb), public.hub_set_schedule(uuid, jsonb);
