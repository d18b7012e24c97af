-- What the slot list says is what a hold gets. The actors treat a hold past
-- its expiry as gone, but its row stays until the dentist's actor (or, for a
-- process that died, the sweeper) deletes it, and until then the exclusion
-- constraint refused a new hold on that time. Now a hold first releases the
-- expired holds it overlaps, as expire_holds does (with the patient told),
-- under the dentist's row lock that hub_write has already taken.

CREATE FUNCTION public.expire_holds_overlapping(_dentist uuid, _from timestamptz, _to timestamptz)
RETURNS SETOF public.slot_reservations
LANGUAGE sql AS $$
  WITH gone AS (
    DELETE FROM public.slot_reservations
    WHERE dentist_id = _dentist AND expires_at <= now()
      AND tstzrange(slot_time, public.add_minutes(slot_time, duration_minutes)) && tstzrange(_from, _to)
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

REVOKE EXECUTE ON FUNCTION public.expire_holds_overlapping(uuid, timestamptz, timestamptz) FROM PUBLIC;
