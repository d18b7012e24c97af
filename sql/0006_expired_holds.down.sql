-- hub_hold as 0004 made it.
CREATE OR REPLACE FUNCTION public.hub_hold(_dentist uuid, _a jsonb) RETURNS jsonb
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

DROP FUNCTION IF EXISTS public.expire_holds_overlapping(uuid, timestamptz, timestamptz);
