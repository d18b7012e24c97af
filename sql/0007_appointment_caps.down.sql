-- Back to 0004's booking and group commit.
CREATE OR REPLACE FUNCTION public.hub_book(_dentist uuid, _a jsonb) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION public.hub_write_many(_writes jsonb) RETURNS jsonb
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

DROP FUNCTION public.hub_appointment_cap(uuid, uuid, timestamptz, uuid, jsonb);
