-- The hub reads for a user as that user, the way PostgREST does: inside the
-- transaction it switches to the role `authenticated` (or `anon`) with the
-- user's claims in `request.jwt.claims` (hub/db.py as_caller), so the
-- policies bound what it returns. Its login must be allowed to switch to
-- those roles: a superuser is, and so is Supabase's `postgres`; any other
-- login that can grant them gets the membership here. A login that can
-- neither switch nor grant stops the migration with what to run instead.
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
    BEGIN
      EXECUTE format('SET LOCAL ROLE %I', r);
      RESET ROLE;
    EXCEPTION WHEN insufficient_privilege THEN
      BEGIN
        EXECUTE format('GRANT %I TO %I', r, current_user);
      EXCEPTION WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'the hub''s database user % cannot switch to the role %', current_user, r
          USING HINT = format('as a superuser run: GRANT %I TO %I; then migrate again', r, current_user);
      END;
    END;
  END LOOP;
END $$;

-- A booking runs under the caller's claims too (actors pass them in `claims`;
-- the service role passes none and keeps its bypass): the insert, and the
-- holds it consumes, are checked by the policies, so a patient cannot book
-- for someone else even if the application let them. The role is switched
-- for these statements only, inside the batch's transaction, and back to the
-- hub's own ('none' = the session's user) before anything else runs.
-- Otherwise as in 0007 (the caps are counted as the hub, over every patient's rows).
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

-- What that needs beyond 0001: consuming one's own holds.
GRANT DELETE ON public.slot_reservations TO authenticated;
CREATE POLICY slot_reservations_delete ON public.slot_reservations FOR DELETE
  USING (patient_id = auth.uid() OR public.has_role(auth.uid(), 'admin'));
