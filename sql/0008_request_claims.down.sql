-- The membership 0008 may have granted stays: it is harmless without the hub,
-- and may have existed before (Supabase grants it to `postgres`).
DROP POLICY IF EXISTS slot_reservations_delete ON public.slot_reservations;
REVOKE DELETE ON public.slot_reservations FROM authenticated;
-- hub_book as 0007 defined it.
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
