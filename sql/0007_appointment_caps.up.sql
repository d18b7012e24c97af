-- Caps on a patient's own bookings: future appointments with one
-- dentist, and appointments on one day across dentists. The actor passes the
-- caps with each booking it makes for a patient (bookings staff make on a
-- patient's behalf carry none). The per-dentist count is taken under the
-- dentist's row lock, which every write for that dentist holds; the per-day
-- count spans dentists, so it is taken under the patient's advisory lock, the
-- one hub_hold uses.

-- Why the patient may not have one more appointment at _start with _dentist
-- ('dentist_cap' or 'day_cap'), or NULL. _ignore is an appointment being moved.
CREATE FUNCTION public.hub_appointment_cap(_patient uuid, _dentist uuid, _start timestamptz, _ignore uuid,
                                           _caps jsonb) RETURNS text
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _per_dentist int := coalesce((_caps ->> 'per_dentist')::int, 0);
  _per_day int := coalesce((_caps ->> 'per_day')::int, 0);
  _tz text;
  _day date;
BEGIN
  IF _per_dentist > 0 AND (
      SELECT count(*) FROM public.appointments
      WHERE patient_id = _patient AND dentist_id = _dentist AND status IN ('pending', 'confirmed')
        AND appointment_date > now() AND id IS DISTINCT FROM _ignore) >= _per_dentist THEN
    RETURN 'dentist_cap';
  END IF;
  IF _per_day > 0 THEN
    PERFORM pg_advisory_xact_lock(hashtextextended(_patient::text, 0));
    SELECT timezone INTO _tz FROM public.dentists WHERE id = _dentist;
    _day := (_start AT TIME ZONE _tz)::date;  -- the day as the dentist's clinic counts it
    IF (SELECT count(*) FROM public.appointments
        WHERE patient_id = _patient AND status IN ('pending', 'confirmed') AND id IS DISTINCT FROM _ignore
          AND appointment_date >= (_day::timestamp AT TIME ZONE _tz)
          AND appointment_date < ((_day + 1)::timestamp AT TIME ZONE _tz)) >= _per_day THEN
      RETURN 'day_cap';
    END IF;
  END IF;
  RETURN NULL;
END $$;

-- 0004's booking, refused (with nothing written) past the caps it is given.
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

-- 0004's group commit, now locking every dentist row (in id order) and then
-- every patient of a booking or hold (in lock-key order) before any write: a
-- write takes its dentist and then its patient, so without this two batches
-- (or a batch and a lone hold) could each hold what the other waits for.
CREATE OR REPLACE FUNCTION public.hub_write_many(_writes jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _w jsonb;
  _answers jsonb := '[]';
BEGIN
  PERFORM 1 FROM public.dentists
  WHERE id IN (SELECT (value ->> 'dentist')::uuid FROM jsonb_array_elements(_writes)) ORDER BY id FOR UPDATE;
  PERFORM pg_advisory_xact_lock(k) FROM (
    SELECT DISTINCT hashtextextended(value -> 'args' ->> 'patient_id', 0) AS k FROM jsonb_array_elements(_writes)
    WHERE value ->> 'op' IN ('book', 'hold') AND value -> 'args' ? 'patient_id') keys ORDER BY k;
  FOR _w IN SELECT value FROM jsonb_array_elements(_writes) LOOP
    _answers := _answers || jsonb_build_array(public.hub_write(
      (_w ->> 'dentist')::uuid, (_w ->> 'version')::bigint, _w ->> 'op', _w -> 'args', nullif(_w -> 'idem', 'null')));
  END LOOP;
  RETURN _answers;
END $$;

-- Only the hub calls it (on Supabase, PostgREST would otherwise offer it to the API roles).
REVOKE EXECUTE ON FUNCTION public.hub_appointment_cap(uuid, uuid, timestamptz, uuid, jsonb) FROM PUBLIC, anon, authenticated;
